/**
 * Parity of `linear` (core/ops.h av_linear_params: y = res + gate * act(x W^T + bias), batched,
 * shared or per-item weights in f32/f16/bf16) on every available backend against a float64
 * reference written from the ops.h contract; invariant rejections; and the CPU's portable
 * (AV_SIMD=scalar) and AVX2 kernels, which a machine with AVX-512 never picks by itself, run in
 * child processes.
 *
 * Tolerance: relative L2 error < 1e-5 for every weight dtype. f16/bf16 cases build the
 * reference from the rounded weights (toF16/toBf16), so what remains is the f32 accumulation
 * order (~1e-7 at K of a few thousand) and the kernels' exp (~1 ulp); a wrong row, column,
 * group or a missed K block gives errors of order 1.
 *
 * The shapes straddle the CPU kernels' boundaries: M <= 16 takes the unpacked dot path and
 * M >= 17 the packed GEMM; K above the block depth (1536 AVX-512, 768 AVX2, 256 scalar)
 * splits K into blocks with partial sums in y; odd M/N leave partial register tiles (12x32
 * AVX-512, 6x16 AVX2, 4x8 scalar).
 */
import { describe, expect, it } from 'vitest';

import type { OpParams } from '../../src/binding/types.js';
import { addon, availableBackends, gemmTol, poisoned, randArray, relErr, rng, toBf16, toF16 } from '../helpers/index.js';
import { runOpsAtSimdLevel } from '../helpers/simd.js';
import { refAct } from './ref.js';

const backends = availableBackends();
const TOL = 1e-5;


type WDtype = 'f32' | 'f16' | 'bf16';
const ACTS = { none: 0, gelu_tanh: 1, silu: 2, sigmoid: 3 } as const;
type Act = keyof typeof ACTS;

/** Random weights and the f32 values the kernel will see after the dtype rounding. */
function makeWeights(
  n: number,
  r: () => number,
  dtype: WDtype,
): { data: Float32Array | Uint16Array; values: Float32Array } {
  const w = randArray(n, r);
  if (dtype === 'f32') return { data: w, values: w };
  const rounded = dtype === 'f16' ? toF16(w) : toBf16(w);
  return { data: rounded.bits, values: rounded.values };
}

interface LinearRefArgs {
  x: Float32Array;
  w: Float32Array;
  batch: number;
  batchW: number;
  M: number;
  K: number;
  N: number;
  bias?: Float32Array;
  gate?: Float32Array;
  rowsPerGroup: number;
  res?: Float32Array;
  act: number;
}

/** y[b,m,n] = res + gate[m / rpg, n] * act(sum_k x[b,m,k] w[b or 0,n,k] + bias[n]), in float64. */
function refLinear(a: LinearRefArgs): Float64Array {
  const { batch, M, K, N } = a;
  const y = new Float64Array(batch * M * N);
  for (let b = 0; b < batch; b++) {
    const wOff = (a.batchW === 1 ? 0 : b) * N * K;
    for (let m = 0; m < M; m++) {
      const xOff = (b * M + m) * K;
      const g = Math.floor(m / a.rowsPerGroup);
      for (let n = 0; n < N; n++) {
        let s = 0;
        const wr = wOff + n * K;
        for (let k = 0; k < K; k++) s += a.x[xOff + k]! * a.w[wr + k]!;
        if (a.bias) s += a.bias[n]!;
        s = refAct(s, a.act);
        if (a.gate) s *= a.gate[g * N + n]!;
        const i = (b * M + m) * N + n;
        if (a.res) s += a.res[i]!;
        y[i] = s;
      }
    }
  }
  return y;
}

interface LinearCase {
  name: string;
  M: number;
  K: number;
  N: number;
  batch?: number;
  /** One weight matrix per batch item (w [batch, N, K]) instead of a shared one. */
  perBatchW?: boolean;
  dtype?: WDtype;
  bias?: boolean;
  act?: Act;
  /** rows_per_group of the gate; absent = no gate. */
  gate?: number;
  /** 'alias': res is the y array itself (allowed by ops.h). */
  res?: boolean | 'alias';
}

/** Inputs, the output array and the float64 expectation of one case. */
function build(c: LinearCase, seed: number): { params: OpParams; y: Float32Array; want: Float64Array } {
  const batch = c.batch ?? 1;
  const batchW = c.perBatchW ? batch : 1;
  const { M, K, N } = c;
  const dtype = c.dtype ?? 'f32';
  const r = rng(seed);
  const x = randArray(batch * M * K, r);
  const w = makeWeights(batchW * N * K, r, dtype);
  const bias = c.bias ? randArray(N, r) : undefined;
  const G = c.gate ? Math.ceil(M / c.gate) : 0;
  const gate = c.gate ? randArray(G * N, r) : undefined;
  const res = c.res ? randArray(batch * M * N, r) : undefined;
  const act = ACTS[c.act ?? 'none'];
  // Computed before the run: with res aliasing y the kernel overwrites res.
  const want = refLinear({ x, w: w.values, batch, batchW, M, K, N, bias, gate, rowsPerGroup: c.gate ?? 1, res, act });
  const y = c.res === 'alias' ? res! : poisoned(batch * M * N);
  const params: OpParams = {
    x: { data: x, shape: [batch, M, K] },
    w: { data: w.data, shape: [batchW, N, K], dtype },
    bias: bias && { data: bias, shape: [N] },
    gate: gate && { data: gate, shape: [G, N] },
    res: res && { data: res, shape: [batch, M, N] },
    y: { data: y, shape: [batch, M, N] },
    act,
    rows_per_group: c.gate ?? 1,
  };
  return { params, y, want };
}

function seedOf(c: LinearCase, i: number): number {
  return 7919 * i + c.M * 131 + c.K * 17 + c.N;
}

// Every dtype at every odd size, with a bias: the dot path (M 1, 3) and the packed path (M 37).
const sizeCases: LinearCase[] = [];
for (const dtype of ['f32', 'f16', 'bf16'] as const)
  for (const M of [1, 3, 37])
    for (const K of [19, 130])
      for (const N of [5, 67]) sizeCases.push({ name: `${dtype} M ${M} K ${K} N ${N}`, M, K, N, dtype, bias: true });

// Every epilogue combination on a batch of 3, twice: once on the dot path (M 5) and once on
// the packed path (M 37), with shared weights on one and per-item weights on the other
// (swapped every other combination); the gate groups (4 rows) do not divide M.
const epilogueCases: LinearCase[] = [];
for (const act of Object.keys(ACTS) as Act[])
  for (const bias of [false, true])
    for (const gate of [undefined, 4])
      for (const res of [false, true]) {
        const combo = epilogueCases.length / 2;
        const terms = `act ${act}${bias ? ' + bias' : ''}${gate ? ' + gate' : ''}${res ? ' + res' : ''}`;
        for (const M of [5, 37]) {
          const perBatchW = (M === 5) === (combo % 2 === 0);
          epilogueCases.push({
            name: `${terms}, M ${M}, ${perBatchW ? 'per-item' : 'shared'} w`,
            batch: 3,
            M,
            K: 130,
            N: 67,
            perBatchW,
            dtype: (['f32', 'bf16', 'f16'] as const)[epilogueCases.length % 3],
            bias,
            act,
            gate,
            res,
          });
        }
      }

const edgeCases: LinearCase[] = [
  { name: 'last dot-path row count', M: 16, K: 130, N: 67, bias: true, act: 'silu' },
  { name: 'first packed-path row count', M: 17, K: 130, N: 67, bias: true, act: 'silu' },
  {
    name: 'several K blocks, partial tiles, f16',
    M: 50,
    K: 1700,
    N: 200,
    dtype: 'f16',
    bias: true,
    act: 'gelu_tanh',
    gate: 7,
    res: true,
  },
  {
    name: 'several K blocks, bf16, per-item weights',
    batch: 2,
    M: 40,
    K: 3100,
    N: 45,
    dtype: 'bf16',
    perBatchW: true,
    res: true,
  },
  { name: 'res aliasing y, one K block', M: 37, K: 130, N: 67, bias: true, act: 'gelu_tanh', res: 'alias' },
  { name: 'res aliasing y, several K blocks', M: 20, K: 1600, N: 40, gate: 5, res: 'alias' },
  { name: 'res aliasing y, dot path', M: 2, K: 600, N: 33, bias: true, res: 'alias' },
  { name: 'one gate row for all rows', batch: 2, M: 23, K: 64, N: 48, gate: 23, act: 'sigmoid' },
  { name: 'many rows, few columns (tasks split M)', M: 300, K: 64, N: 7, bias: true },
  { name: 'K = 1, N = 1', M: 19, K: 1, N: 1, bias: true },
  { name: 'shared weights over a batch, gate per item rows', batch: 3, M: 12, K: 96, N: 50, gate: 12, res: true },
];

describe.each(backends)('linear on %s', (backend) => {
  const run = async (c: LinearCase, i: number) => {
    const { params, y, want } = build(c, seedOf(c, i));
    await addon._ops(backend, 'linear', params);
    expect(relErr(y, want)).toBeLessThan(gemmTol(backend, c.dtype, TOL));
  };
  it.each(sizeCases.map((c, i) => ({ ...c, i })))('$name', (c) => run(c, c.i));
  it.each(epilogueCases.map((c, i) => ({ ...c, i: i + 100 })))('$name', (c) => run(c, c.i));
  it.each(edgeCases.map((c, i) => ({ ...c, i: i + 200 })))('$name', (c) => run(c, c.i));
});

describe('linear rejects invalid operands on cpu', () => {
  const M = 3;
  const K = 8;
  const N = 4;
  const base = (): OpParams => ({
    x: { data: randArray(M * K, rng(1)), shape: [M, K] },
    w: { data: randArray(N * K, rng(2)), shape: [N, K] },
    y: { data: poisoned(M * N), shape: [M, N] },
  });
  const bad: { name: string; patch: OpParams; message: RegExp }[] = [
    {
      name: 'K mismatch',
      patch: { w: { data: new Float32Array(N * 9), shape: [N, 9] } },
      message: /linear: w \[1,1,4,9\] does not match x \[1,1,3,8\] in K/,
    },
    {
      name: 'y of the wrong shape',
      patch: { y: { data: new Float32Array(M * 5), shape: [M, 5] } },
      message: /linear: y \[1,1,3,5\] must be \[batch, M, N\]/,
    },
    {
      name: 'weight batch neither 1 nor the x batch',
      patch: {
        x: { data: new Float32Array(3 * M * K), shape: [3, M, K] },
        w: { data: new Float32Array(2 * N * K), shape: [2, N, K] },
        y: { data: new Float32Array(3 * M * N), shape: [3, M, N] },
      },
      message: /linear: w batch must be 1 or equal to x batch/,
    },
    {
      name: 'bias of the wrong length',
      patch: { bias: { data: new Float32Array(N + 1), shape: [N + 1] } },
      message: /linear: bias must be \[N\]/,
    },
    {
      name: 'gate with too few rows',
      patch: { gate: { data: new Float32Array(N), shape: [1, N] }, rows_per_group: 2 },
      message: /linear: gate has 1 rows, M=3 with rows_per_group=2 needs more/,
    },
    {
      name: 'rows_per_group 0',
      patch: { gate: { data: new Float32Array(N), shape: [1, N] }, rows_per_group: 0 },
      message: /rows_per_group must be >= 1/,
    },
    {
      name: 'res of the wrong shape',
      patch: { res: { data: new Float32Array(N), shape: [1, N] } },
      message: /linear: res \[1,1,1,4\] must have the shape of y/,
    },
    {
      name: 'bf16 activations',
      patch: { x: { data: new Uint16Array(M * K), shape: [M, K], dtype: 'bf16' } },
      message: /linear: x and y must be f32/,
    },
    {
      name: 'i32 weights',
      patch: { w: { data: new Int32Array(N * K), shape: [N, K], dtype: 'i32' } },
      message: /linear: w must be f32, f16 or bf16/,
    },
    { name: 'unknown act', patch: { act: 7 }, message: /linear: unknown act 7/ },
  ];
  it.each(bad)('$name', async ({ patch, message }) => {
    await expect(addon._ops('cpu', 'linear', { ...base(), ...patch })).rejects.toThrow(message);
  });

  it('rejects y overlapping x and keeps working afterwards', async () => {
    const xy = randArray(M * K, rng(3));
    await expect(
      addon._ops('cpu', 'linear', {
        x: { data: xy, shape: [M, K] },
        w: { data: randArray(K * K, rng(4)), shape: [K, K] },
        y: { data: xy, shape: [M, K] },
      }),
    ).rejects.toThrow(/linear: y must not overlap x, w, bias or gate/);
    const c: LinearCase = { name: 'after errors', M: 5, K: 7, N: 3, bias: true };
    const { params, y, want } = build(c, 5);
    await addon._ops('cpu', 'linear', params);
    expect(relErr(y, want)).toBeLessThan(TOL);
  });
});

// ---- the other CPU SIMD levels, in child processes ------------------------------------------

describe('linear on the other CPU SIMD levels (child processes)', () => {
  const cases: LinearCase[] = [
    { name: 'dot path, f16', M: 3, K: 130, N: 67, dtype: 'f16', bias: true, act: 'gelu_tanh' },
    {
      name: 'dot path, bf16, per-item',
      batch: 2,
      M: 9,
      K: 19,
      N: 5,
      dtype: 'bf16',
      perBatchW: true,
      gate: 4,
      res: true,
    },
    {
      name: 'packed, f32, all epilogue terms',
      batch: 3,
      M: 37,
      K: 130,
      N: 67,
      bias: true,
      act: 'silu',
      gate: 10,
      res: true,
    },
    { name: 'packed, several K blocks, bf16', M: 50, K: 1000, N: 70, dtype: 'bf16', act: 'sigmoid', res: true },
    { name: 'packed, odd tiles, f16', M: 23, K: 77, N: 41, dtype: 'f16', bias: true },
  ];
  const built = cases.map((c, i) => build(c, seedOf(c, i + 300)));

  it.each(['scalar', 'avx2'])('AV_SIMD=%s matches the float64 reference', (level) => {
    const { detail, outputs } = runOpsAtSimdLevel(
      level,
      built.map((b) => ({ op: 'linear', params: b.params, out: 'y' })),
    );
    // AV_SIMD only caps the level: a machine without AVX2 runs the scalar kernels for 'avx2'.
    if (level === 'scalar') expect(detail).toMatch(/simd=scalar/);
    else expect(detail).toMatch(/simd=(avx2|scalar)/);
    outputs.forEach((y, i) => expect(relErr(y, built[i]!.want), cases[i]!.name).toBeLessThan(TOL));
  });
});
