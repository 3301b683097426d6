/**
 * CUDA per-op benchmarks at the model's real d24 shapes (STYLE rule 14; spec 9.2), on a GPU
 * machine:
 *
 *   ALIGNVAR_ADDON=<build>/Release/alignvar.node npx tsx bench/cuda.bench.ts [--filter regex] [--time s]
 *
 * Method. `_ops('cuda', op, params, repeat)` uploads the operands, runs the op `repeat` times
 * on the stream, synchronises and downloads the outputs. benchmark.js (defer: true) times
 * whole calls at two repeat counts, 1 and R (R chosen so the kernels alone take ~40 ms), and
 * the per-op time is (T(R) - T(1)) / (R - 1): transfers and allocation cancel, launch
 * overhead stays in (as it would in the model). Inputs are random, never zeros.
 *
 * Baselines measured on the same machine in the same run (python3 + PyTorch, when importable;
 * a small script timed with CUDA events, median of 20 after warm-up):
 *   - device-to-device copy bandwidth (1 GiB tensor.copy_, bytes read + written): the ceiling
 *     for the memory-bound ops (VQ lookup, upsample_accum, norms);
 *   - torch.matmul in bf16 for every GEMM shape (x [M, K] @ W^T) and an 8192^3 product;
 *   - F.scaled_dot_product_attention (f16) at the attention shapes, without the key bias.
 * Without PyTorch, the copy bandwidth comes from this backend's own `copy` op and the GEMM
 * and attention columns say "n/a".
 *
 * Writes bench/results/cuda-<gpu>.json and prints a table.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import Benchmark from 'benchmark';

import type { NativeTensor, OpName, OpParams } from '../src/binding/types.js';
import { addon, randArray, rng, toBf16 } from '../test/helpers/index.js';

const args = process.argv.slice(2);
const argOf = (flag: string): string | undefined => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
};
const FILTER = argOf('--filter');
const MAX_TIME = Number(argOf('--time') ?? 1);

// AV_BENCH_BACKEND=cpu dry-runs the harness on the CPU backend (no GPU needed; figures are
// then CPU figures and the file is named cpu-dryrun-*.json).
const BACKEND = process.env.AV_BENCH_BACKEND ?? 'cuda';
const cuda = addon.backendInfo().find((b) => b.name === BACKEND);
if (!cuda?.available) {
  console.log(`cuda.bench: CUDA backend unavailable (${cuda?.reason ?? 'not compiled'}); nothing to measure`);
  process.exit(0);
}
const device = cuda.devices[0] ?? { name: `${BACKEND}-dryrun`, totalMemory: 0, computeCapability: '-' };

// ---- baselines through PyTorch ----------------------------------------------------------------

interface TorchRef {
  ok: boolean;
  error?: string;
  torch?: string;
  copyGBs?: number;
  matmul8192Tflops?: number;
  gemm?: Record<string, number>; // "M,N,K" -> TFLOP/s
  sdpa?: Record<string, number>; // "R,H,Lq,Lk,D" -> TFLOP/s
}

const PY = String.raw`
import json, sys
spec = json.loads(sys.argv[1])
out = {"ok": False}
try:
    import torch
    import torch.nn.functional as F
    out["torch"] = torch.__version__
    dev = torch.device("cuda")
    def med(fn, n=20, warm=3):
        for _ in range(warm): fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(n):
            a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
            a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b) / 1e3)
        ts.sort(); return ts[len(ts) // 2]
    src = torch.randn(1 << 28, device=dev); dst = torch.empty_like(src)
    t = med(lambda: dst.copy_(src)); out["copyGBs"] = 2 * src.numel() * 4 / t / 1e9
    del src, dst
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16); b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    t = med(lambda: a @ b); out["matmul8192Tflops"] = 2 * 8192 ** 3 / t / 1e12
    del a, b
    out["gemm"] = {}
    for (M, N, K) in spec["gemm"]:
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16); w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
        t = med(lambda: x @ w.t(), n=50); out["gemm"]["%d,%d,%d" % (M, N, K)] = 2 * M * N * K / t / 1e12
    out["sdpa"] = {}
    for (R, H, Lq, Lk, D) in spec["sdpa"]:
        q = torch.randn(R, H, Lq, D, device=dev, dtype=torch.float16)
        k = torch.randn(R, H, Lk, D, device=dev, dtype=torch.float16); v = torch.randn_like(k)
        t = med(lambda: F.scaled_dot_product_attention(q, k, v), n=50)
        out["sdpa"]["%d,%d,%d,%d,%d" % (R, H, Lq, Lk, D)] = 4 * R * H * Lq * Lk * D / t / 1e12
    out["ok"] = True
except Exception as e:
    out["error"] = repr(e)
print(json.dumps(out))
`;

function torchRef(gemm: number[][], sdpa: number[][]): TorchRef {
  const r = spawnSync('python3', ['-c', PY, JSON.stringify({ gemm, sdpa })], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0 || !r.stdout)
    return { ok: false, error: (r.stderr || r.error?.message || 'python3 failed').slice(-300) };
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as TorchRef;
  } catch {
    return { ok: false, error: r.stdout.slice(-300) };
  }
}

// ---- harness --------------------------------------------------------------------------------

const f32 = (data: Float32Array, shape: number[]): NativeTensor => ({ data, shape, dtype: 'f32' });
const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);
const bf16 = (shape: number[], seed: number): NativeTensor => ({
  data: toBf16(randArray(prod(shape), rng(seed), -0.05, 0.05)).bits,
  shape,
  dtype: 'bf16',
});

interface Case {
  group: string;
  name: string;
  op: OpName;
  params: () => OpParams;
  /** FLOP per call (2 per multiply-add), 0 for memory-bound ops. */
  flops: number;
  /** Bytes one call must move at least (each input read once, each output written once). */
  bytes: number;
  /** Key into the PyTorch reference tables. */
  ref?: { kind: 'gemm' | 'sdpa'; key: string };
}

async function timeCalls(run: () => Promise<void>): Promise<number> {
  return new Promise((resolve, reject) => {
    const bench = new Benchmark('call', {
      defer: true,
      minSamples: 5,
      maxTime: MAX_TIME,
      fn: (d: Benchmark.Deferred) => {
        run().then(
          () => d.resolve(),
          (e: unknown) => reject(e),
        );
      },
      onComplete: () => resolve(bench.stats.mean),
      onError: (e: unknown) => reject(e),
    });
    bench.run({ async: true });
  });
}

/** Seconds per op: (T(R) - T(1)) / (R - 1), R from a two-point calibration. */
async function timeOp(c: Case): Promise<{ sec: number; repeat: number }> {
  const p = c.params();
  const run = (rep: number) => addon._ops(BACKEND, c.op, p, rep);
  await run(2); // warm-up: module load, allocator pool, caches
  let t0 = performance.now();
  await run(1);
  const t1 = performance.now() - t0;
  t0 = performance.now();
  await run(21);
  const t21 = performance.now() - t0;
  const est = Math.max((t21 - t1) / 20, 1e-4) / 1e3; // seconds per op
  const repeat = Math.max(5, Math.min(5000, Math.round(0.04 / est)));
  const a = await timeCalls(() => run(1));
  const b = await timeCalls(() => run(repeat));
  return { sec: Math.max((b - a) / (repeat - 1), 1e-9), repeat };
}

// ---- cases ----------------------------------------------------------------------------------

const C = 1536,
  H = 24,
  D = 64,
  V = 4096,
  R = 2;
const cases: Case[] = [];
const gemmShapes: number[][] = [];
const sdpaShapes: number[][] = [];

function gemm(name: string, M: number, N: number, K: number): void {
  gemmShapes.push([M, N, K]);
  cases.push({
    group: 'linear',
    name: `${name} M=${M} N=${N} K=${K}`,
    op: 'linear',
    flops: 2 * M * N * K,
    bytes: M * K * 4 + N * K * 2 + M * N * 4,
    ref: { kind: 'gemm', key: `${M},${N},${K}` },
    params: () => ({
      x: f32(randArray(M * K, rng(M + K)), [M, K]),
      w: bf16([N, K], N + K),
      bias: f32(randArray(N, rng(N)), [N]),
      y: f32(new Float32Array(M * N), [M, N]),
    }),
  });
}
// Scale 9 (Lq = 1024 per row, R = 2) and the prefix (1025): the compute-bound bulk.
gemm('qkv si9', R * 1024, 3 * C, C);
gemm('proj si9', R * 1024, C, C);
gemm('fc1 si9', R * 1024, 4 * C, C);
gemm('fc2 si9', R * 1024, C, 4 * C);
gemm('head si9', R * 1024, V, C);
gemm('qkv prefix', R * 1025, 3 * C, C);
// Small scales: weight-bandwidth bound (bytes are mostly the bf16 weights).
gemm('fc1 si1', R * 4, 4 * C, C);
gemm('fc1 si3', R * 16, 4 * C, C);
gemm('fc1 si5', R * 81, 4 * C, C);
gemm('head si0', R, V, C);

function attn(name: string, Lq: number, Lk: number, bias: boolean, d = D, h = H, r = R): void {
  sdpaShapes.push([r, h, Lq, Lk, d]);
  cases.push({
    group: 'attn',
    name: `${name} R=${r} H=${h} Lq=${Lq} Lk=${Lk} D=${d}${bias ? ' +bias' : ''}`,
    op: 'attn',
    flops: 4 * r * h * Lq * Lk * d,
    bytes: 4 * (r * h * Lq * d * 2 + 2 * r * h * Lk * d),
    ref: { kind: 'sdpa', key: `${r},${h},${Lq},${Lk},${d}` },
    params: () => {
      const g = rng(Lq + Lk);
      const p: OpParams = {
        q: f32(randArray(r * h * Lq * d, g, -0.5, 0.5), [r, h, Lq, d]),
        k: f32(randArray(r * h * Lk * d, g, -0.15, 0.15), [r, h, Lk, d]),
        v: f32(randArray(r * h * Lk * d, g), [r, h, Lk, d]),
        o: f32(new Float32Array(r * Lq * h * d), [r, Lq, h, d]),
        n_kv: Lk,
        scale: 1,
      };
      if (bias) {
        p.key_bias = f32(
          new Float32Array((r / 2) * Lk).map(() => Math.log(g() + 1e-6)),
          [r / 2, Lk],
        );
        p.kb_beta = f32(new Float32Array(h).fill(0.05), [h]);
      }
      return p;
    },
  });
}
attn('si9', 1024, 3264, true);
attn('prefix', 1025, 1025, true);
attn('si5', 81, 1171, true);
attn('si1', 4, 1029, true);
attn('vqvae mid (generic D)', 1024, 1024, false, 640, 1, 1);

function conv(name: string, Cin: number, Cout: number, Hh: number, Ww: number, stride = 1): void {
  const Ho = Math.floor((Hh + 2 - 3) / stride) + 1,
    Wo = Math.floor((Ww + 2 - 3) / stride) + 1;
  cases.push({
    group: 'conv2d',
    name: `${name} ${Cin}->${Cout} ${Hh}x${Ww} s${stride}`,
    op: 'conv2d',
    flops: 2 * Cin * Cout * 9 * Ho * Wo,
    bytes: 4 * (Cin * Hh * Ww + Cout * Ho * Wo) + 2 * Cout * Cin * 9,
    params: () => ({
      x: f32(randArray(Cin * Hh * Ww, rng(Cin + Hh)), [1, Cin, Hh, Ww]),
      w: bf16([Cout, Cin, 3, 3], Cout),
      bias: f32(randArray(Cout, rng(Cout)), [Cout]),
      y: f32(new Float32Array(Cout * Ho * Wo), [1, Cout, Ho, Wo]),
      stride,
      pad_t: 1,
      pad_l: 1,
      pad_b: 1,
      pad_r: 1,
    }),
  });
}
conv('decoder up.0', 160, 160, 512, 512);
conv('decoder up.2', 320, 320, 128, 128);
conv('decoder mid', 640, 640, 32, 32);
conv('cond blocks.7', 512, 1536, 64, 64, 2);

for (const B of [1, 16])
  cases.push({
    group: 'memory',
    name: `vq_lookup B=${B} T=1024 Cv=32 bf16`,
    op: 'vq_lookup',
    flops: 0,
    bytes: B * 1024 * (4 + 32 * 2 + 32 * 4),
    params: () => ({
      idx: {
        data: new Int32Array(B * 1024).map((_, i) => ((i * 2654435761) % V) >>> 0),
        shape: [B, 1024],
        dtype: 'i32',
      },
      codebook: bf16([V, 32], 3),
      y: f32(new Float32Array(B * 32 * 1024), [B, 32, 1024]),
      channel_major: 1,
    }),
  });
for (const B of [2, 16])
  cases.push({
    group: 'memory',
    name: `upsample_accum B=${B} 24->32 +phi next 32`,
    op: 'upsample_accum',
    flops: 0,
    bytes: 4 * (B * 32 * 24 * 24 + 2 * B * 32 * 1024 + B * 1024 * 32) + 2 * 32 * 32 * 9,
    params: () => ({
      h: f32(randArray(B * 32 * 576, rng(B)), [B, 32, 24, 24]),
      phi_w: bf16([32, 32, 3, 3], 4),
      phi_b: f32(randArray(32, rng(5)), [32]),
      f_hat: f32(randArray(B * 32 * 1024, rng(6)), [B, 32, 32, 32]),
      next: f32(new Float32Array(B * 1024 * 32), [B, 1024, 32]),
      pn_next: 32,
      phi_ratio: 0.5,
    }),
  });
cases.push({
  group: 'memory',
  name: `layernorm+modulate M=${R * 1024} C=${C}`,
  op: 'layernorm',
  flops: 0,
  bytes: 4 * (2 * R * 1024 * C + 2 * R * C),
  params: () => ({
    x: f32(randArray(R * 1024 * C, rng(7)), [R * 1024, C]),
    scale: f32(randArray(R * C, rng(8)), [R, C]),
    shift: f32(randArray(R * C, rng(9)), [R, C]),
    y: f32(new Float32Array(R * 1024 * C), [R * 1024, C]),
    rows_per_group: 1024,
  }),
});
cases.push({
  group: 'memory',
  name: 'groupnorm+silu 160ch 512x512',
  op: 'groupnorm',
  flops: 0,
  bytes: 4 * 2 * 160 * 512 * 512,
  params: () => ({
    x: f32(randArray(160 * 512 * 512, rng(10)), [1, 160, 512 * 512]),
    weight: f32(randArray(160, rng(11)), [160]),
    bias: f32(randArray(160, rng(12)), [160]),
    y: f32(new Float32Array(160 * 512 * 512), [1, 160, 512 * 512]),
    groups: 32,
    silu: 1,
  }),
});
const COPY_N = 1 << 26;
cases.push({
  group: 'memory',
  name: 'copy f32 256 MiB (own kernel)',
  op: 'copy',
  flops: 0,
  bytes: 2 * 4 * COPY_N,
  params: () => ({ x: f32(randArray(COPY_N, rng(13)), [COPY_N]), y: f32(new Float32Array(COPY_N), [COPY_N]) }),
});

// ---- run --------------------------------------------------------------------------------------

const filterRe = FILTER ? new RegExp(FILTER) : undefined; // a regex over "group name"
const selected = cases.filter((c) => !filterRe || filterRe.test(`${c.group} ${c.name}`));
console.log(
  `device: ${device.name} (cc ${device.computeCapability}, ${(device.totalMemory / 2 ** 30).toFixed(1)} GiB)`,
);
const ref: TorchRef = BACKEND === 'cuda' ? torchRef(gemmShapes, sdpaShapes) : { ok: false, error: 'dry run' };
console.log(
  ref.ok
    ? `PyTorch ${ref.torch}: copy ${ref.copyGBs?.toFixed(0)} GB/s, bf16 8192^3 matmul ${ref.matmul8192Tflops?.toFixed(0)} TFLOP/s`
    : `PyTorch baseline unavailable: ${ref.error}`,
);

interface Row {
  group: string;
  name: string;
  repeat: number;
  usPerCall: number;
  tflops?: number;
  gbs: number;
  refTflops?: number;
  ratioToRef?: number;
}
const rows: Row[] = [];
for (const c of selected) {
  try {
    const { sec, repeat } = await timeOp(c);
    const row: Row = { group: c.group, name: c.name, repeat, usPerCall: sec * 1e6, gbs: c.bytes / sec / 1e9 };
    if (c.flops) row.tflops = c.flops / sec / 1e12;
    const rv = c.ref && ref.ok ? (c.ref.kind === 'gemm' ? ref.gemm : ref.sdpa)?.[c.ref.key] : undefined;
    if (rv !== undefined && row.tflops !== undefined) {
      row.refTflops = rv;
      row.ratioToRef = row.tflops / rv;
    }
    rows.push(row);
    const tf = row.tflops !== undefined ? `${row.tflops.toFixed(1).padStart(7)} TFLOP/s` : ''.padStart(15);
    const rf =
      row.refTflops !== undefined ? ` (torch ${row.refTflops.toFixed(1)}, x${row.ratioToRef!.toFixed(2)})` : '';
    console.log(
      `${c.group.padEnd(8)} ${c.name.padEnd(52)} ${row.usPerCall.toFixed(1).padStart(9)} us ${tf} ${row.gbs.toFixed(0).padStart(6)} GB/s${rf}`,
    );
  } catch (e) {
    console.log(`${c.group.padEnd(8)} ${c.name.padEnd(52)} failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}

const ownCopy = rows.find((r) => r.name.startsWith('copy f32'))?.gbs;
const copyRef = ref.ok ? ref.copyGBs : ownCopy;
if (copyRef)
  for (const r of rows.filter((x) => x.group === 'memory'))
    console.log(
      `  ${r.name}: ${((100 * r.gbs) / copyRef).toFixed(0)}% of the copy bandwidth (${copyRef.toFixed(0)} GB/s)`,
    );

const slug = device.name
  .toLowerCase()
  .replace(/[^a-z0-9]+/g, '-')
  .replace(/^-|-$/g, '');
const outDir = join(dirname(fileURLToPath(import.meta.url)), 'results');
mkdirSync(outDir, { recursive: true });
const file = join(outDir, BACKEND === 'cuda' ? `cuda-${slug}.json` : `${slug}.json`);
writeFileSync(
  file,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      device,
      backendDetail: cuda.detail,
      method: '(T(repeat) - T(1)) / (repeat - 1) over _ops calls timed by benchmark.js; random inputs',
      torch: ref,
      copyGBsReference: copyRef ?? null,
      copyReferenceSource: ref.ok ? 'torch copy_' : 'own copy kernel',
      rows,
    },
    null,
    1,
  ),
);
console.log(`wrote ${file}`);
