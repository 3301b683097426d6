/**
 * Parity of `conv2d` (core/ops.h av_conv2d_params: y = res + act(conv(x, w) + bias), zero
 * padding pad_t/l/b/r, stride, dilation, f32/f16/bf16 weights) on every available backend
 * against a float64 direct convolution written from the ops.h contract; invariant rejections;
 * and the CPU's portable (AV_SIMD=scalar) and AVX2 kernels in child processes.
 *
 * Tolerance: relative L2 error < 1e-5 for every weight dtype (f16/bf16 references use the
 * rounded weights, see linear.test.ts). A tap read from the wrong pixel, a missing zero pad
 * or a wrong output size gives errors of order 1.
 *
 * The shapes cover the spec's convs (7: 3x3 p1, 1x1, Down2x = pad right/bottom by 1 then
 * 3x3 s2) at odd sizes, plus what the CPU implicit im2col must get right: output rows wider
 * (row loads, stride-2 gathers) and narrower (pixel by pixel) than a register tile, taps
 * crossing the left/right border, K above one K block (Cin*kh*kw > 1536 AVX-512, > 768 AVX2),
 * the 1x1 fast path, a 3-channel output, non-square kernels.
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

interface ConvCase {
  name: string;
  B?: number;
  Cin: number;
  H: number;
  W: number;
  Cout: number;
  kh: number;
  kw?: number;
  stride?: number;
  /** [top, left, bottom, right]; default 0. */
  pad?: [number, number, number, number];
  dilation?: number;
  dtype?: WDtype;
  bias?: boolean;
  act?: Act;
  /** 'alias': res is the y array itself (allowed by ops.h). */
  res?: boolean | 'alias';
}

/** Output size per ops.h: (H + pad_t + pad_b - dil*(kh-1) - 1) / stride + 1. */
function outSize(c: ConvCase): { Ho: number; Wo: number } {
  const [pt, pl, pb, pr] = c.pad ?? [0, 0, 0, 0];
  const s = c.stride ?? 1;
  const d = c.dilation ?? 1;
  const kw = c.kw ?? c.kh;
  return {
    Ho: Math.floor((c.H + pt + pb - d * (c.kh - 1) - 1) / s) + 1,
    Wo: Math.floor((c.W + pl + pr - d * (kw - 1) - 1) / s) + 1,
  };
}

/** Direct convolution in float64: y[b,co,oy,ox] = res + act(bias + sum x[b,ci,iy,ix] w[co,ci,ky,kx]). */
function refConv(c: ConvCase, x: Float32Array, w: Float32Array, bias?: Float32Array, res?: Float32Array): Float64Array {
  const B = c.B ?? 1;
  const kw = c.kw ?? c.kh;
  const [pt, pl] = c.pad ?? [0, 0, 0, 0];
  const s = c.stride ?? 1;
  const d = c.dilation ?? 1;
  const act = ACTS[c.act ?? 'none'];
  const { Ho, Wo } = outSize(c);
  const y = new Float64Array(B * c.Cout * Ho * Wo);
  for (let b = 0; b < B; b++)
    for (let co = 0; co < c.Cout; co++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          let sum = bias ? bias[co]! : 0;
          for (let ci = 0; ci < c.Cin; ci++)
            for (let ky = 0; ky < c.kh; ky++) {
              const iy = oy * s - pt + ky * d;
              if (iy < 0 || iy >= c.H) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * s - pl + kx * d;
                if (ix < 0 || ix >= c.W) continue;
                sum += x[((b * c.Cin + ci) * c.H + iy) * c.W + ix]! * w[((co * c.Cin + ci) * c.kh + ky) * kw + kx]!;
              }
            }
          const i = ((b * c.Cout + co) * Ho + oy) * Wo + ox;
          y[i] = refAct(sum, act) + (res ? res[i]! : 0);
        }
  return y;
}

function build(c: ConvCase, seed: number): { params: OpParams; y: Float32Array; want: Float64Array } {
  const B = c.B ?? 1;
  const kw = c.kw ?? c.kh;
  const dtype = c.dtype ?? 'f32';
  const { Ho, Wo } = outSize(c);
  const r = rng(seed);
  const x = randArray(B * c.Cin * c.H * c.W, r);
  const wf = randArray(c.Cout * c.Cin * c.kh * kw, r);
  const wr = dtype === 'f32' ? { bits: wf, values: wf } : dtype === 'f16' ? toF16(wf) : toBf16(wf);
  const bias = c.bias ? randArray(c.Cout, r) : undefined;
  const res = c.res ? randArray(B * c.Cout * Ho * Wo, r) : undefined;
  // Computed before the run: with res aliasing y the kernel overwrites res.
  const want = refConv(c, x, wr.values, bias, res);
  const y = c.res === 'alias' ? res! : poisoned(B * c.Cout * Ho * Wo);
  const [pt, pl, pb, pr] = c.pad ?? [0, 0, 0, 0];
  const params: OpParams = {
    x: { data: x, shape: [B, c.Cin, c.H, c.W] },
    w: { data: wr.bits, shape: [c.Cout, c.Cin, c.kh, kw], dtype },
    bias: bias && { data: bias, shape: [c.Cout] },
    res: res && { data: res, shape: [B, c.Cout, Ho, Wo] },
    y: { data: y, shape: [B, c.Cout, Ho, Wo] },
    stride: c.stride ?? 1,
    pad_t: pt,
    pad_l: pl,
    pad_b: pb,
    pad_r: pr,
    dilation: c.dilation ?? 1,
    act: ACTS[c.act ?? 'none'],
  };
  return { params, y, want };
}

function seedOf(c: ConvCase, i: number): number {
  return 4099 * i + c.Cin * 97 + c.Cout * 31 + c.H * 7 + c.W;
}

// k 1/3 x stride 1/2 x dilation 1/2 at 13x11 (odd, narrower than a tile), "same" padding,
// rotating dtypes and epilogues.
const gridCases: ConvCase[] = [];
for (const k of [1, 3])
  for (const stride of [1, 2])
    for (const dilation of [1, 2]) {
      const i = gridCases.length;
      const p = ((k - 1) / 2) * dilation;
      gridCases.push({
        name: `k${k} s${stride} d${dilation}`,
        B: 2,
        Cin: 5,
        H: 13,
        W: 11,
        Cout: 7,
        kh: k,
        stride,
        dilation,
        pad: [p, p, p, p],
        dtype: (['f32', 'f16', 'bf16'] as const)[i % 3],
        bias: i % 2 === 0,
        act: (['none', 'silu', 'gelu_tanh', 'sigmoid'] as const)[i % 4],
        res: i % 3 === 1,
      });
    }

const namedCases: ConvCase[] = [
  {
    name: 'VQVAE Down2x: pad right/bottom 1, 3x3 stride 2',
    Cin: 6,
    H: 13,
    W: 11,
    Cout: 6,
    kh: 3,
    stride: 2,
    pad: [0, 0, 1, 1],
    bias: true,
  },
  {
    name: 'Down2x at an even size, bf16',
    B: 2,
    Cin: 8,
    H: 16,
    W: 16,
    Cout: 8,
    kh: 3,
    stride: 2,
    pad: [0, 0, 1, 1],
    dtype: 'bf16',
    bias: true,
  },
  {
    name: 'Down2x on wide rows (stride-2 row gathers)',
    Cin: 5,
    H: 9,
    W: 75,
    Cout: 6,
    kh: 3,
    stride: 2,
    pad: [0, 0, 1, 1],
    dtype: 'f16',
    bias: true,
    act: 'silu',
  },
  {
    name: 'asymmetric padding top 2, right 1',
    Cin: 3,
    H: 13,
    W: 11,
    Cout: 4,
    kh: 3,
    pad: [2, 0, 0, 1],
    dtype: 'f16',
    act: 'silu',
  },
  {
    name: '3x3 p1 with bias, act and res (ResBlock conv)',
    B: 2,
    Cin: 9,
    H: 13,
    W: 11,
    Cout: 10,
    kh: 3,
    pad: [1, 1, 1, 1],
    bias: true,
    act: 'silu',
    res: true,
  },
  {
    name: '1x1 pointwise (shortcut / qkv conv), f16',
    B: 2,
    Cin: 16,
    H: 9,
    W: 7,
    Cout: 40,
    kh: 1,
    dtype: 'f16',
    bias: true,
    act: 'sigmoid',
    res: true,
  },
  { name: '1x1 stride 2', Cin: 5, H: 13, W: 11, Cout: 6, kh: 1, stride: 2, bias: true },
  {
    name: 'rows wider than a tile (fast im2col path)',
    Cin: 4,
    H: 10,
    W: 70,
    Cout: 13,
    kh: 3,
    pad: [1, 1, 1, 1],
    bias: true,
    act: 'gelu_tanh',
  },
  {
    name: 'several K blocks (Cin*9 = 1539), res aliasing y',
    Cin: 171,
    H: 12,
    W: 35,
    Cout: 17,
    kh: 3,
    pad: [1, 1, 1, 1],
    bias: true,
    res: 'alias',
  },
  {
    name: 'res aliasing y, one K block',
    Cin: 6,
    H: 13,
    W: 11,
    Cout: 5,
    kh: 3,
    pad: [1, 1, 1, 1],
    act: 'silu',
    res: 'alias',
  },
  {
    name: 'conv_out: 3 output channels, bf16',
    Cin: 16,
    H: 20,
    W: 37,
    Cout: 3,
    kh: 3,
    pad: [1, 1, 1, 1],
    dtype: 'bf16',
    bias: true,
  },
  { name: 'non-square kernel 1x3', Cin: 4, H: 13, W: 11, Cout: 5, kh: 1, kw: 3, pad: [0, 1, 0, 1], bias: true },
  {
    name: 'non-square kernel 2x4, stride 2, dilation 2',
    Cin: 3,
    H: 17,
    W: 19,
    Cout: 4,
    kh: 2,
    kw: 4,
    stride: 2,
    dilation: 2,
    pad: [1, 2, 0, 3],
  },
  {
    name: 'kernel as large as the padded input (1x1 output)',
    Cin: 3,
    H: 3,
    W: 3,
    Cout: 2,
    kh: 5,
    pad: [1, 1, 1, 1],
    bias: true,
  },
  {
    name: 'decoder-like block, 64x64, f16, threads',
    Cin: 24,
    H: 64,
    W: 64,
    Cout: 20,
    kh: 3,
    pad: [1, 1, 1, 1],
    dtype: 'f16',
    bias: true,
    res: true,
  },
];

describe.each(backends)('conv2d on %s', (backend) => {
  const run = async (c: ConvCase, i: number) => {
    const { params, y, want } = build(c, seedOf(c, i));
    await addon._ops(backend, 'conv2d', params);
    expect(relErr(y, want)).toBeLessThan(gemmTol(backend, c.dtype, TOL));
  };
  it.each(gridCases.map((c, i) => ({ ...c, i })))('$name', (c) => run(c, c.i));
  it.each(namedCases.map((c, i) => ({ ...c, i: i + 100 })))('$name', (c) => run(c, c.i));
});

describe('conv2d rejects invalid operands on cpu', () => {
  const base = (): OpParams => ({
    x: { data: randArray(2 * 4 * 5, rng(1)), shape: [1, 2, 4, 5] },
    w: { data: randArray(3 * 2 * 9, rng(2)), shape: [3, 2, 3, 3] },
    y: { data: poisoned(3 * 2 * 3), shape: [1, 3, 2, 3] },
  });
  const bad: { name: string; patch: OpParams; message: RegExp }[] = [
    {
      name: 'Cin mismatch',
      patch: { w: { data: new Float32Array(27), shape: [3, 1, 3, 3] } },
      message: /conv2d: w \[3,1,3,3\] does not match x \[1,2,4,5\] in Cin/,
    },
    {
      name: 'y of the wrong size',
      patch: { y: { data: new Float32Array(3 * 4 * 5), shape: [1, 3, 4, 5] } },
      message: /conv2d: y \[1,3,4,5\] must be \[1,3,2,3\]/,
    },
    {
      name: 'kernel larger than the input',
      patch: { w: { data: new Float32Array(3 * 2 * 25), shape: [3, 2, 5, 5] } },
      message: /the dilated kernel is larger than the padded input/,
    },
    { name: 'stride 0', patch: { stride: 0 }, message: /conv2d: stride and dilation must be >= 1/ },
    { name: 'negative padding', patch: { pad_l: -1 }, message: /conv2d: padding must be >= 0/ },
    {
      name: 'bias of the wrong length',
      patch: { bias: { data: new Float32Array(2), shape: [2] } },
      message: /conv2d: bias must be \[Cout\]/,
    },
    {
      name: 'res of the wrong shape',
      patch: { res: { data: new Float32Array(18), shape: [1, 3, 3, 2] } },
      message: /conv2d: res \[1,3,3,2\] must have the shape of y/,
    },
    {
      name: 'i32 weights',
      patch: { w: { data: new Int32Array(54), shape: [3, 2, 3, 3], dtype: 'i32' } },
      message: /conv2d: w must be f32, f16 or bf16/,
    },
    { name: 'unknown act', patch: { act: 9 }, message: /conv2d: unknown act 9/ },
  ];
  it.each(bad)('$name', async ({ patch, message }) => {
    await expect(addon._ops('cpu', 'conv2d', { ...base(), ...patch })).rejects.toThrow(message);
  });

  it('keeps working after a rejection', async () => {
    await expect(addon._ops('cpu', 'conv2d', { ...base(), dilation: 0 })).rejects.toThrow(/dilation/);
    const c: ConvCase = { name: 'after errors', Cin: 2, H: 4, W: 5, Cout: 3, kh: 3, bias: true };
    const { params, y, want } = build(c, 9);
    await addon._ops('cpu', 'conv2d', params);
    expect(relErr(y, want)).toBeLessThan(TOL);
  });
});

// ---- the other CPU SIMD levels, in child processes (test/helpers/simd.ts) ---------------------

describe('conv2d on the other CPU SIMD levels (child processes)', () => {
  const cases: ConvCase[] = [
    {
      name: 'Down2x, f16',
      B: 2,
      Cin: 6,
      H: 13,
      W: 11,
      Cout: 7,
      kh: 3,
      stride: 2,
      pad: [0, 0, 1, 1],
      dtype: 'f16',
      bias: true,
    },
    {
      name: '3x3 p1 dilation 2, act + res',
      Cin: 5,
      H: 13,
      W: 11,
      Cout: 9,
      kh: 3,
      dilation: 2,
      pad: [2, 2, 2, 2],
      act: 'gelu_tanh',
      res: true,
    },
    {
      name: 'wide rows, several K blocks, bf16',
      Cin: 90,
      H: 6,
      W: 40,
      Cout: 14,
      kh: 3,
      pad: [1, 1, 1, 1],
      dtype: 'bf16',
      bias: true,
      act: 'silu',
    },
    { name: '1x1 pointwise', Cin: 16, H: 9, W: 7, Cout: 21, kh: 1, bias: true, res: true },
    { name: 'stride 2 on wide rows', Cin: 4, H: 7, W: 71, Cout: 5, kh: 3, stride: 2, pad: [1, 1, 1, 1], bias: true },
  ];
  const built = cases.map((c, i) => build(c, seedOf(c, i + 300)));

  it.each(['scalar', 'avx2'])('AV_SIMD=%s matches the float64 reference', (level) => {
    const { detail, outputs } = runOpsAtSimdLevel(
      level,
      built.map((b) => ({ op: 'conv2d', params: b.params, out: 'y' })),
    );
    // AV_SIMD only caps the level: a machine without AVX2 runs the scalar kernels for 'avx2'.
    if (level === 'scalar') expect(detail).toMatch(/simd=scalar/);
    else expect(detail).toMatch(/simd=(avx2|scalar)/);
    outputs.forEach((y, i) => expect(relErr(y, built[i]!.want), cases[i]!.name).toBeLessThan(TOL));
  });
});
