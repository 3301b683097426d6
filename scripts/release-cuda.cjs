#!/usr/bin/env node
// Release script for the CUDA backend: builds libav_cuda.so (cuda/, static CUDA runtime) for
// sm_80, sm_86, sm_89 and sm_90 (+ PTX for sm_90) and packs the optional package
// @alignvar/linux-x64-cuda from packages/linux-x64-cuda/, at the root package's version.
// Never run at a user's install: it needs nvcc (CUDA 12+) and takes minutes per architecture.
//
//   node scripts/release-cuda.cjs [--no-pack]     (AV_CUDA_ARCHS overrides the architectures)
//
// The library loads without a GPU or driver (its probe then reports why CUDA is unusable), so
// this runs on any Linux x64 machine with the toolkit.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const out = path.join(root, 'build-cuda');
const archs = process.env.AV_CUDA_ARCHS || '80-real;86-real;89-real;90';
const pkgDir = path.join(root, 'packages', `${process.platform}-${process.arch}-cuda`);
const started = Date.now();

const run = (cmd, args, opts = {}) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.status !== 0) {
    console.error(`alignvar: ${cmd} ${args.join(' ')} failed`);
    process.exit(r.status ?? 1);
  }
};

console.error(`alignvar: building libav_cuda.so for ${archs} into build-cuda/ (minutes per architecture)`);
run(process.execPath, [
  require.resolve('cmake-js/bin/cmake-js'),
  'build',
  '--out',
  out,
  '--target',
  'av_cuda',
  '--CDCMAKE_BUILD_TYPE=Release',
  '--CDAV_CUDA=ON',
  '--CDAV_TEST_BINDINGS=OFF',
  `--CDAV_CUDA_ARCHS=${archs}`,
]);

const version = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;
const pkgJson = path.join(pkgDir, 'package.json');
const pkg = JSON.parse(fs.readFileSync(pkgJson, 'utf8'));
pkg.version = version;
fs.writeFileSync(pkgJson, `${JSON.stringify(pkg, null, 2)}\n`);
const lib = path.join(pkgDir, 'libav_cuda.so');
fs.copyFileSync(path.join(out, 'Release', 'libav_cuda.so'), lib);
run('strip', ['--strip-unneeded', lib]);
fs.copyFileSync(path.join(root, 'LICENSE'), path.join(pkgDir, 'LICENSE'));
console.error(
  `alignvar: ${path.relative(root, lib)} ${(fs.statSync(lib).size / 1048576).toFixed(1)} MiB ` +
    `(${Math.round((Date.now() - started) / 1000)} s)`,
);
if (!process.argv.includes('--no-pack')) run('npm', ['pack', '--pack-destination', root], { cwd: pkgDir });
