/**
 * What the package split costs (issue 16): file sizes of the prebuilt CPU addon and the CUDA
 * side library, and the time a fresh process takes to load the addon and list its backends,
 * without and with libav_cuda.so (whose probe, on a machine without a driver, fails and records
 * the reason). Each figure is the median of N fresh child processes, next to a reference child
 * that only starts node (`node -e 0`), timed in the same run.
 *
 *   npx tsx bench/package.bench.ts [--runs 15] [--addon <.node>] [--cuda <libav_cuda.so>]
 *
 * Defaults: the prebuild npm pack makes (prebuilds/<platform>-<arch>/alignvar.napi.glibc.node)
 * and build-cuda/Release/libav_cuda.so (node scripts/release-cuda.cjs). Writes
 * bench/results/package.json.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { packageRoot } from '../src/binding/load.js';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '15' }, addon: { type: 'string' }, cuda: { type: 'string' } },
});
const runs = Number(values.runs);
const addon = resolve(
  values.addon ?? join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, 'alignvar.napi.glibc.node'),
);
const cuda = resolve(values.cuda ?? join(packageRoot, 'build-cuda', 'Release', 'libav_cuda.so'));
for (const f of [addon, cuda]) if (!existsSync(f)) throw new Error(`bench/package: ${f} does not exist`);

// One child: wall time from spawn to exit, in ms.
function child(js: string): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, ['-e', js], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench/package: child failed: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const cases = {
  'node -e 0 (reference)': '0',
  'require addon + backendInfo(), no CUDA library': `require(${JSON.stringify(addon)}).backendInfo()`,
  'require addon + setCudaLibrary + backendInfo()': `const a = require(${JSON.stringify(addon)}); a.setCudaLibrary(${JSON.stringify(cuda)}); const c = a.backendInfo()[1]; if (!c.compiled) throw new Error(c.reason)`,
};
const load0 = loadavg();
const times: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (let i = 0; i < runs + 1; i++)
  for (const [name, js] of Object.entries(cases)) {
    const ms = child(js);
    if (i > 0) times[name]!.push(ms); // the first round warms the page cache
  }
const ref = median(times['node -e 0 (reference)']!);
const rows = Object.entries(times).map(([name, xs]) => ({
  name,
  medianMs: Number(median(xs).toFixed(1)),
  overNodeMs: Number((median(xs) - ref).toFixed(1)),
  ratioToNode: Number((median(xs) / ref).toFixed(3)),
}));
const sizes = { addonBytes: statSync(addon).size, cudaLibraryBytes: statSync(cuda).size };
console.table(rows);
console.log(sizes);
const cudaInfo = spawnSync(
  process.execPath,
  [
    '-e',
    cases['require addon + setCudaLibrary + backendInfo()'].replace(
      'if (!c.compiled) throw new Error(c.reason)',
      'console.log(c.reason)',
    ),
  ],
  { encoding: 'utf8' },
).stdout.trim();
writeFileSync(
  join(packageRoot, 'bench', 'results', 'package.json'),
  `${JSON.stringify(
    {
      date: new Date().toISOString(),
      machine: {
        cpu: cpus()[0]?.model,
        cores: cpus().length,
        node: process.version,
        loadavgStart: load0,
        loadavgEnd: loadavg(),
      },
      method: `median of ${runs} fresh child processes per case (after one warm-up round), wall time spawn to exit`,
      addon: addon.replace(`${packageRoot}/`, ''),
      cudaLibrary: cuda.replace(`${packageRoot}/`, ''),
      cudaReasonHere: cudaInfo,
      sizes,
      rows,
    },
    null,
    2,
  )}\n`,
);
