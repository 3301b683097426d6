#!/usr/bin/env node
// `npm test`: typecheck, lint, vitest (unit, parity, golden) and the Python reference's pytest,
// each run even when an earlier one failed, then one summary line `N passed, N failed`
// summed from the runners' machine-readable reports (test-results/).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const results = path.join(root, 'test-results');
fs.rmSync(results, { recursive: true, force: true });
fs.mkdirSync(results, { recursive: true });

const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const run = (label, cmd, args, opts = {}) => {
  console.log(`\n== ${label}: ${[cmd, ...args].join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  return r.status === 0;
};

let extraFailed = 0;
if (!run('typecheck', bin('tsc'), ['-p', 'tsconfig.test.json'])) {
  console.error('typecheck failed');
  extraFailed += 1;
}
if (!run('lint', bin('eslint'), ['.'])) {
  console.error('lint failed');
  extraFailed += 1;
}
const vitestArgs = ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${path.join(results, 'vitest.json')}`];
const extra = process.argv.slice(2);
run('vitest', bin('vitest'), [...vitestArgs, ...extra]);

const python = process.env.ALIGNVAR_PYTHON || '/usr/bin/python3';
const pyOk = spawnSync(python, ['-c', 'import torch, numpy, pytest'], { stdio: 'ignore' }).status === 0;
if (pyOk) {
  run('pytest', python, ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', `--junitxml=${path.join(results, 'pytest.xml')}`, 'tests'], {
    cwd: path.join(root, 'training'),
  });
  // The golden and .pth fixtures once more with PyTorch held at its portable kernels (no AVX, ~7 s): a
  // fixture or tolerance that holds only on the SIMD path of the machine that wrote it fails on
  // every machine, not only on another CPU generation (issue 10). Counted as one check.
  const portable = ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_golden.py', 'tests/test_pth_fixtures.py',
    '-k', 'matches_regeneration or test_regenerated'];
  const env = { ...process.env, ATEN_CPU_CAPABILITY: 'default' };
  if (!run('pytest (ATEN_CPU_CAPABILITY=default)', python, portable, { cwd: path.join(root, 'training'), env })) {
    console.error('pytest with ATEN_CPU_CAPABILITY=default failed');
    extraFailed += 1;
  }
} else {
  console.error(`pytest: ${python} lacks torch/numpy/pytest (Debian: apt-get install python3-torch python3-numpy python3-pil python3-pytest)`);
  extraFailed += 1;
}

const s = spawnSync(process.execPath, [path.join(__dirname, 'test-summary.cjs'), results, String(extraFailed)], {
  encoding: 'utf8',
});
process.stderr.write(s.stderr);
process.stdout.write(`\n${s.stdout}`);
process.exit(s.status ?? 1);
