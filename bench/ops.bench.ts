/**
 * Per-op benchmarks (STYLE rule 14): benchmark.js with `defer: true`, each case next to a
 * baseline measured in the same run where one exists, figures in GFLOP/s.
 *
 *   npx tsx bench/ops.bench.ts [--filter <substring>] [--time <seconds per benchmark>]
 *   ALIGNVAR_ADDON=/tmp/build/Release/alignvar.node npx tsx bench/ops.bench.ts   (a side build)
 *
 * Prints a table and writes bench/results/cpu-ops.json (machine info + one row per case).
 *
 * Adding an op: append a Suite to `suites` below. A suite returns cases; a case gives its FLOP
 * count per call and an async `ours` (usually `addon._ops(backend, op, params, repeat)`), and
 * optionally a `baseline` doing the same work another way. The harness warms both up, picks a
 * repeat count so one call lasts ~20 ms (so the async-call overhead of ~50 us is noise), and
 * lets benchmark.js time them.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import Benchmark from 'benchmark';

import { loadAddon } from '../src/binding/load.js';
import type { NativeAddon, OpParams } from '../src/binding/types.js';

const addon: NativeAddon = loadAddon();

// ---- shared harness ---------------------------------------------------------------------------

/** One timed operation: `run(repeat)` performs the work `repeat` times in one native call. */
interface Runner {
  name: string;
  run: (repeat: number) => Promise<void>;
}

interface BenchCase {
  /** Short label, unique within the suite. */
  name: string;
  /** Shape parameters recorded in the JSON (M, N, K, Cin, ...). */
  shape: Record<string, number | string>;
  /** Floating-point operations of one call (2 per multiply-add). */
  flops: number;
  ours: Runner;
  baseline?: Runner;
  /** What the baseline leaves out or adds, printed in the JSON. */
  note?: string;
}

interface Suite {
  name: string;
  /** Builds the cases lazily so filtered-out suites allocate nothing. */
  cases: () => BenchCase[];
}

interface Timing {
  name: string;
  repeat: number;
  msPerCall: number;
  gflops: number;
  /** GFLOP/s of the fastest benchmark.js sample (least disturbed by other processes). */
  gflopsBest: number;
  rmePct: number;
  samples: number;
}

interface CaseResult {
  suite: string;
  name: string;
  shape: Record<string, number | string>;
  gflopPerCall: number;
  ours: Timing;
  baseline?: Timing;
  /** ours / baseline throughput (mean), when there is a baseline. */
  ratio?: number;
  note?: string;
}

const args = process.argv.slice(2);
const argOf = (flag: string): string | undefined => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
};
const FILTER = argOf('--filter');
const MAX_TIME = Number(argOf('--time') ?? 2);

/** Repeat count so one call takes ~20 ms, from one timed call after a warm-up call. */
async function calibrate(r: Runner): Promise<number> {
  await r.run(1);
  const t0 = performance.now();
  await r.run(1);
  const ms = performance.now() - t0;
  return Math.max(1, Math.min(1000, Math.round(20 / Math.max(ms, 1e-3))));
}

async function time(r: Runner, flops: number): Promise<Timing> {
  const repeat = await calibrate(r);
  return new Promise((resolve, reject) => {
    const bench = new Benchmark(r.name, {
      defer: true,
      minSamples: 5,
      maxTime: MAX_TIME,
      fn: (d: Benchmark.Deferred) => {
        r.run(repeat).then(
          () => d.resolve(),
          (e: unknown) => reject(e),
        );
      },
      onComplete: () => {
        const s = bench.stats;
        const perRep = s.mean / repeat;
        const best = Math.min(...s.sample) / repeat;
        resolve({
          name: r.name,
          repeat,
          msPerCall: perRep * 1e3,
          gflops: flops / perRep / 1e9,
          gflopsBest: flops / best / 1e9,
          rmePct: s.rme,
          samples: s.sample.length,
        });
      },
      onError: (e: unknown) => reject(e),
    });
    bench.run({ async: true });
  });
}

function machineInfo(): Record<string, string | number> {
  let model = cpus()[0]?.model ?? 'unknown';
  let family = '';
  let flags = '';
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const field = (k: string) => new RegExp(`^${k}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '';
    model = field('model name') || model;
    family = `family ${field('cpu family')} model ${field('model')}`;
    flags = field('flags')
      .split(' ')
      .filter((f) => /^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_bf16)$/.test(f))
      .join(' ');
  } catch {
    // Not Linux: the model name from os.cpus() is all there is.
  }
  const cpu = addon.backendInfo().find((b) => b.name === 'cpu');
  const detail = cpu?.detail ?? '';
  return {
    cpu: model,
    cpuFamily: family,
    cpuFlags: flags,
    logicalCores: cpus().length,
    threads: Number(/threads=(\d+)/.exec(detail)?.[1] ?? 0),
    simd: /simd=(\w+)/.exec(detail)?.[1] ?? 'unknown',
    node: process.version,
    openblasThreads: process.env.OPENBLAS_NUM_THREADS ?? 'default (all cores)',
  };
}

// ---- data -------------------------------------------------------------------------------------

/** Deterministic values in [-1, 1): benchmarks need realistic (non-denormal) data, not randomness. */
function filled(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2147483648 - 1;
  }
  return a;
}

/** bf16 bits of an f32 array (round to nearest even). */
function bf16Of(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16;
  return out;
}

// ---- suites -------------------------------------------------------------------------------------

/** The d24 transformer linears (spec 1.1, 4.5, 4.6): C = 1536. */
const D24_LINEARS = [
  { layer: 'qkv', K: 1536, N: 4608 },
  { layer: 'proj', K: 1536, N: 1536 },
  { layer: 'fc1', K: 1536, N: 6144 },
  { layer: 'fc2', K: 6144, N: 1536 },
];
/** Rows: one token (M 1), scale 4 with CFG (36 = 2 x 18 rows... any mid size), scale 7 tokens (324), and a large block (1024). */
const LINEAR_ROWS = [1, 36, 324, 1024];

const linearSuite: Suite = {
  name: 'linear',
  cases: () => {
    const out: BenchCase[] = [];
    for (const { layer, K, N } of D24_LINEARS) {
      const w = filled(N * K, K + N);
      const wBf16 = bf16Of(w);
      for (const M of LINEAR_ROWS) {
        const x = filled(M * K, M);
        const y = new Float32Array(M * N);
        const c = new Float32Array(M * N);
        const params: OpParams = {
          x: { data: x, shape: [M, K] },
          w: { data: w, shape: [N, K] },
          y: { data: y, shape: [M, N] },
        };
        out.push({
          name: `${layer} f32 M${M}`,
          shape: { layer, M, K, N, wdtype: 'f32' },
          flops: 2 * M * N * K,
          ours: { name: 'linear', run: (repeat) => addon._ops('cpu', 'linear', params, repeat) },
          baseline: {
            name: 'openblas sgemm',
            run: (repeat) =>
              addon._blasSgemm({
                a: { data: x, shape: [M, K] },
                b: { data: w, shape: [N, K] },
                c: { data: c, shape: [M, N] },
                M,
                N,
                K,
                repeat,
              }),
          },
        });
        if (M === 1 || M === 36) {
          // The model's weights are bf16: half the bytes, which is what bounds few-row calls.
          const pb: OpParams = { ...params, w: { data: wBf16, shape: [N, K], dtype: 'bf16' } };
          out.push({
            name: `${layer} bf16 M${M}`,
            shape: { layer, M, K, N, wdtype: 'bf16' },
            flops: 2 * M * N * K,
            ours: { name: 'linear', run: (repeat) => addon._ops('cpu', 'linear', pb, repeat) },
            note: 'bf16 weights; OpenBLAS has no bf16 sgemm',
          });
        }
      }
    }
    return out;
  },
};

/**
 * The VQVAE decoder's 512x512 convs (spec 7.1): up.0 ResBlock conv 3x3 160->160 p1 and conv_out
 * 3x3 160->3 p1, on a 128x128 crop (same channels) next to OpenBLAS sgemm of the equivalent GEMM
 * [Cout, Cin*9] x [Cin*9, H*W] on an already-built im2col matrix, i.e. without the im2col cost an
 * im2col + BLAS conv would pay; and our op alone at the full 512x512 (the im2col matrix would be
 * 1.5 GB).
 */
const convSuite: Suite = {
  name: 'conv2d',
  cases: () => {
    const out: BenchCase[] = [];
    for (const { layer, Cin, Cout, S } of [
      { layer: 'up.0 conv 160->160', Cin: 160, Cout: 160, S: 128 },
      { layer: 'conv_out 160->3', Cin: 160, Cout: 3, S: 128 },
      { layer: 'up.0 conv 160->160', Cin: 160, Cout: 160, S: 512 },
      { layer: 'conv_out 160->3', Cin: 160, Cout: 3, S: 512 },
    ]) {
      const K = Cin * 9;
      const P = S * S;
      const x = filled(Cin * P, Cin + S);
      const w = filled(Cout * K, Cout);
      const bias = filled(Cout, 3);
      const y = new Float32Array(Cout * P);
      const params: OpParams = {
        x: { data: x, shape: [1, Cin, S, S] },
        w: { data: w, shape: [Cout, Cin, 3, 3] },
        bias: { data: bias, shape: [Cout] },
        y: { data: y, shape: [1, Cout, S, S] },
        pad_t: 1,
        pad_l: 1,
        pad_b: 1,
        pad_r: 1,
      };
      const bc: BenchCase = {
        name: `${layer} ${S}x${S}`,
        shape: { layer, Cin, Cout, H: S, W: S, k: 3 },
        flops: 2 * Cout * K * P,
        ours: { name: 'conv2d', run: (repeat) => addon._ops('cpu', 'conv2d', params, repeat) },
      };
      if (S <= 128) {
        const cols = filled(P * K, 7);
        const c = new Float32Array(Cout * P);
        bc.baseline = {
          name: 'openblas sgemm (im2col not counted)',
          run: (repeat) =>
            addon._blasSgemm({
              a: { data: w, shape: [Cout, K] },
              b: { data: cols, shape: [P, K] },
              c: { data: c, shape: [Cout, P] },
              M: Cout,
              N: P,
              K,
              repeat,
            }),
        };
        bc.note = 'baseline: sgemm [Cout, Cin*9] x [Cin*9, H*W] on a prebuilt im2col matrix';
      } else {
        bc.note = 'full size, ours only (an im2col matrix for the baseline would need 1.5 GB)';
      }
      out.push(bc);
    }
    return out;
  },
};

const suites: Suite[] = [linearSuite, convSuite];

// ---- main -------------------------------------------------------------------------------------

function fmt(n: number | undefined, digits = 1): string {
  return n === undefined ? '-' : n.toFixed(digits);
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const loadStart = loadavg().map((v) => Number(v.toFixed(2)));
  console.log(
    `cpu: ${machine.cpu} (${machine.cpuFamily}), threads ${machine.threads}, simd ${machine.simd}, node ${machine.node}, load ${loadStart.join(' ')}`,
  );
  const results: CaseResult[] = [];
  for (const suite of suites) {
    for (const c of suite.cases()) {
      const label = `${suite.name}: ${c.name}`;
      if (FILTER && !label.includes(FILTER)) continue;
      const ours = await time(c.ours, c.flops);
      const baseline = c.baseline ? await time(c.baseline, c.flops) : undefined;
      const r: CaseResult = {
        suite: suite.name,
        name: c.name,
        shape: c.shape,
        gflopPerCall: c.flops / 1e9,
        ours,
        baseline,
        ratio: baseline ? ours.gflops / baseline.gflops : undefined,
        note: c.note,
      };
      results.push(r);
      console.log(
        `${label.padEnd(40)} ours ${fmt(ours.gflops).padStart(7)} GFLOP/s (${fmt(ours.msPerCall, 3)} ms ±${fmt(ours.rmePct)}%)` +
          (baseline ? `  ${baseline.name} ${fmt(baseline.gflops).padStart(7)} GFLOP/s  ratio ${fmt(r.ratio, 2)}` : ''),
      );
    }
  }

  console.log('\n| suite | case | ours GFLOP/s | ms/call | baseline GFLOP/s | ratio |');
  console.log('|---|---|---:|---:|---:|---:|');
  for (const r of results)
    console.log(
      `| ${r.suite} | ${r.name} | ${fmt(r.ours.gflops)} | ${fmt(r.ours.msPerCall, 3)} | ${fmt(r.baseline?.gflops)} | ${fmt(r.ratio, 2)} |`,
    );

  const file = join(dirname(fileURLToPath(import.meta.url)), 'results', 'cpu-ops.json');
  // The load average says how much else ran on the machine (other builds share its cores).
  const load = { start: loadStart, end: loadavg().map((v) => Number(v.toFixed(2))) };
  writeFileSync(
    file,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine,
        loadAverage1m5m15m: load,
        maxTimePerBenchmarkS: MAX_TIME,
        filter: FILTER ?? null,
        results,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`\nwrote ${file}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
