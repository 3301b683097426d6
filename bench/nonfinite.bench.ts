/**
 * Cost of the load-time non-finite check (issue 10): `SafetensorsFile.read(name, { finite: true })`
 * against the plain `read(name)` of the same tensors, in the same process, on a d24-sized model.
 *
 *   (cd training && python3 -m avtrain.random_model --preset d24 --dtype bf16 --out /tmp/d24.safetensors)
 *   npx tsx bench/nonfinite.bench.ts /tmp/d24.safetensors [--samples 5]
 *
 * The model is a random-weight d24 export (every real key, shape and dtype: bf16 matmul/conv
 * weights, f32 for the rest; ~2.3 GB); it is a throwaway, never committed. One pass = every
 * tensor the engine loads (expectedTensors), read one at a time as Engine.create does, buffers
 * dropped after each. benchmark.js (`defer: true`) times three passes:
 * - `read`: the plain read;
 * - `read + finite`: the read with the check, what Engine.create does;
 * - `scan`: the check alone (firstNonFinite) over the same bytes, held in memory.
 * The file is read once before timing, so every read comes from the page cache: a load from disk
 * is slower, so the ratio below is an upper bound of what the check adds to a real load.
 *
 * Prints a table and writes bench/results/nonfinite-check.json (machine, file, per pass the mean
 * time and GB/s, and the ratios `read + finite` / `read` and `scan` / `read`).
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import Benchmark from 'benchmark';

import { detectConfig, expectedTensors } from '../src/model/config.js';
import { SafetensorsFile, firstNonFinite } from '../src/weights/safetensors.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const path = args.find((a) => !a.startsWith('--'));
const samplesArg = args.indexOf('--samples');
const samples = samplesArg >= 0 ? Number(args[samplesArg + 1]) : 5;
if (path === undefined || !Number.isInteger(samples) || samples < 1) {
  console.error('usage: npx tsx bench/nonfinite.bench.ts <model.safetensors> [--samples N]');
  process.exit(2);
}

const file = await SafetensorsFile.open(path);
const cfg = detectConfig(file, path);
const names = expectedTensors(cfg).map((e) => e.name);
let bytes = 0;
const dtypes: Record<string, number> = {};
for (const n of names) {
  const info = file.tensors.get(n)!;
  bytes += info.byteLength;
  dtypes[info.dtype] = (dtypes[info.dtype] ?? 0) + info.byteLength;
}
console.log(
  `${path}: depth ${cfg.depth}, width ${cfg.width}, ${names.length} tensors, ${(bytes / 1e9).toFixed(3)} GB read per pass`,
);

async function readPass(finite: boolean): Promise<void> {
  for (const n of names) await file.read(n, { finite });
}

// Warm the page cache, and keep the bytes for the scan-only pass.
const t0 = performance.now();
const held = new Map<string, Buffer>();
for (const n of names) held.set(n, await file.read(n));
console.log(`first read (page cache warm-up): ${((performance.now() - t0) / 1e3).toFixed(2)} s`);

async function scanPass(): Promise<void> {
  for (const n of names) {
    if ((await firstNonFinite(file.tensors.get(n)!.dtype, held.get(n)!)) >= 0) throw new Error(`${n} is not finite`);
  }
}

const load0 = loadavg();
const suite = new Benchmark.Suite();
const opts = { defer: true, minSamples: samples, maxTime: 1, initCount: 1 };
const add = (name: string, pass: () => Promise<void>) =>
  suite.add(name, {
    ...opts,
    fn: (d: { resolve(): void }) => {
      void pass().then(() => d.resolve());
    },
  });
add('read', () => readPass(false));
add('read + finite', () => readPass(true));
add('scan', scanPass);
// A second plain read after the others: the reference is taken on both sides of the checked pass.
add('read (again)', () => readPass(false));

interface Row {
  name: string;
  meanS: number;
  rme: number;
  samples: number;
  gbPerS: number;
}
const rows: Row[] = [];
suite.on('cycle', (e: { target: Benchmark }) => {
  const b = e.target;
  const row = {
    name: String(b.name),
    meanS: b.stats.mean,
    rme: b.stats.rme,
    samples: b.stats.sample.length,
    gbPerS: bytes / b.stats.mean / 1e9,
  };
  rows.push(row);
  console.log(
    `${row.name.padEnd(14)} ${row.meanS.toFixed(3)} s ±${row.rme.toFixed(1)}%  ${row.gbPerS.toFixed(2)} GB/s  (${row.samples} samples)`,
  );
});
await new Promise<void>((res) => {
  suite.on('complete', () => res());
  suite.run({ async: true });
});
await file.close();

const mean = (n: string) => rows.find((r) => r.name === n)!.meanS;
const readRef = (mean('read') + mean('read (again)')) / 2;
const result = {
  what: 'load-time non-finite check (SafetensorsFile.read finite: true) vs the plain read, same process, page cache warm',
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version },
  loadavg: { start: load0, end: loadavg() },
  model: { preset: `depth ${cfg.depth}, width ${cfg.width}`, tensors: names.length, bytes, bytesByDtype: dtypes },
  rows,
  ratio: {
    readPlusFiniteOverRead: mean('read + finite') / readRef,
    scanOverRead: mean('scan') / readRef,
  },
};
console.log(
  `read + finite / read = ${result.ratio.readPlusFiniteOverRead.toFixed(3)}; scan / read = ${result.ratio.scanOverRead.toFixed(3)} (read = mean of the two plain passes)`,
);
writeFileSync(join(ROOT, 'bench', 'results', 'nonfinite-check.json'), `${JSON.stringify(result, null, 2)}\n`);
