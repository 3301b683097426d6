/**
 * Parity of `resample` (spec 2.1, 5.5) and `upsample_accum` (spec 5.4) on every available
 * backend against the float64 references of ref-resample.ts, at odd sizes.
 */
import { describe, expect, it } from 'vitest';

import type { NativeTensor } from '../../src/binding/types.js';
import { addon, availableBackends, maxAbs, poisoned, randArray, rng, toBf16, toF16 } from '../helpers/index.js';
import {
  areaTaps,
  bicubicTaps,
  nearestTaps,
  pilBicubicTaps,
  resampleRef,
  type Taps1d,
  upsampleAccumRef,
} from './ref-resample.js';

const backends = availableBackends();

const MODE = { bicubic: 0, area: 1, nearest: 2, pil_bicubic: 3 } as const;
type Mode = keyof typeof MODE;
const TAPS: Record<Mode, Taps1d> = {
  bicubic: bicubicTaps,
  area: areaTaps,
  nearest: nearestTaps,
  pil_bicubic: pilBicubicTaps,
};

const f32 = (data: Float32Array, shape: number[]): NativeTensor => ({ data, shape, dtype: 'f32' });

async function resample(backend: string, mode: Mode, x: Float32Array, P: number, H: number, W: number, Ho: number, Wo: number) {
  const y = poisoned(P * Ho * Wo);
  await addon._ops(backend, 'resample', { x: f32(x, [P, H, W]), y: f32(y, [P, Ho, Wo]), mode: MODE[mode] });
  return y;
}

// [mode, planes, H, W, Ho, Wo]
const CASES: [Mode, number, number, number, number, number][] = [
  ...[1, 2, 3, 7, 13].map((pn): [Mode, number, number, number, number, number] => ['bicubic', 3, pn, pn, 32, 32]),
  ['bicubic', 2, 5, 5, 17, 17],
  ['bicubic', 2, 4, 9, 17, 13], // rectangular, different factor per axis
  ['bicubic', 2, 32, 32, 13, 9], // downsampling sizes (no antialias)
  ...[24, 18, 13, 9, 6, 3].map((o): [Mode, number, number, number, number, number] => ['area', 3, 32, 32, o, o]),
  ['area', 2, 20, 30, 7, 11],
  ['area', 2, 5, 6, 8, 9], // more outputs than inputs: overlapping 1-2 wide windows
  ['nearest', 2, 7, 7, 32, 32],
  ['nearest', 2, 32, 32, 13, 13],
  ['nearest', 2, 13, 9, 5, 20],
  ['pil_bicubic', 2, 29, 37, 116, 148],
  ['pil_bicubic', 3, 128, 128, 512, 512],
  ['pil_bicubic', 2, 60, 100, 23, 37], // downsampling: antialiased, support scaled by in/out
];

describe.each(backends)('resample on %s', (backend) => {
  it.each(CASES)('%s %i x %ix%i -> %ix%i matches the float64 reference', async (mode, P, H, W, Ho, Wo) => {
    const r = rng(H * 1000 + W * 10 + Ho + MODE[mode]);
    const x = randArray(P * H * W, r);
    const y = await resample(backend, mode, x, P, H, W, Ho, Wo);
    const ref = resampleRef(x, P, H, W, Ho, Wo, TAPS[mode]);
    if (mode === 'nearest') expect(Array.from(y)).toEqual(Array.from(ref)); // pure gather
    else expect(maxAbs(y, ref)).toBeLessThan(1e-5); // fp32 source coordinates: t is off by ~ulp(in)
  });

  it.each(['bicubic', 'area', 'nearest', 'pil_bicubic'] as Mode[])('%s with in == out is an exact copy', async (mode) => {
    const x = randArray(2 * 19 * 23, rng(5));
    const y = await resample(backend, mode, x, 2, 19, 23, 19, 23);
    expect(y).toEqual(x);
  });

  it('bicubic 1x1 -> 32x32 gives a constant map', async () => {
    const x = new Float32Array([0.3125, -1.75]);
    const y = await resample(backend, 'bicubic', x, 2, 1, 1, 32, 32);
    expect(y.subarray(0, 1024).every((v) => v === 0.3125)).toBe(true);
    expect(y.subarray(1024).every((v) => v === -1.75)).toBe(true);
  });

  it('accepts [B, C, H, W] planes', async () => {
    const x = randArray(2 * 3 * 7 * 7, rng(11));
    const y = poisoned(2 * 3 * 32 * 32);
    await addon._ops(backend, 'resample', { x: f32(x, [2, 3, 7, 7]), y: f32(y, [2, 3, 32, 32]), mode: MODE.bicubic });
    expect(maxAbs(y, resampleRef(x, 6, 7, 7, 32, 32, bicubicTaps))).toBeLessThan(2e-6);
  });

  it('rejects mismatched plane counts and unknown modes, and keeps working', async () => {
    const x = randArray(2 * 4 * 4, rng(1));
    await expect(
      addon._ops(backend, 'resample', { x: f32(x, [2, 4, 4]), y: f32(poisoned(3 * 8 * 8), [3, 8, 8]), mode: 0 }),
    ).rejects.toThrow(/plane count/);
    await expect(
      addon._ops(backend, 'resample', { x: f32(x, [2, 4, 4]), y: f32(poisoned(2 * 8 * 8), [2, 8, 8]), mode: 9 }),
    ).rejects.toThrow(/unknown mode 9/);
    const y = await resample(backend, 'area', x, 2, 4, 4, 2, 2);
    expect(maxAbs(y, resampleRef(x, 2, 4, 4, 2, 2, areaTaps))).toBeLessThan(1e-6);
  });
});

/**
 * PyTorch's CPU bicubic evaluated in float32 with its exact order of operations (UpSample.h,
 * UpSampleKernel.cpp): scale = float(in)/out, x = scale*(i+0.5f)-0.5f, weights from t and
 * (1-t)+1, rows interpolated along W first and combined along H, sums left to right.
 */
function torchBicubicF32(x: Float32Array, P: number, H: number, W: number, Ho: number, Wo: number): Float32Array {
  const f = Math.fround;
  const A = -0.75;
  const conv1 = (v: number) => f(f(f(f(f(f(A + 2) * v) - f(A + 3)) * v) * v) + 1);
  const conv2 = (v: number) => f(f(f(f(f(f(A * v) - f(5 * A)) * v) + f(8 * A)) * v) - f(4 * A));
  const taps = (i: number, n: number, o: number) => {
    if (n === o) return { idx: [i, i, i, i], w: [0, 1, 0, 0] };
    const scale = f(n / o);
    const xs = f(f(scale * f(i + 0.5)) - 0.5);
    const x0 = Math.min(Math.floor(xs), n - 1);
    const t = Math.min(Math.max(f(xs - x0), 0), 1);
    const t1 = f(1 - t);
    return {
      idx: [-1, 0, 1, 2].map((k) => Math.min(Math.max(x0 + k, 0), n - 1)),
      w: [conv2(f(t + 1)), conv1(t), conv1(t1), conv2(f(t1 + 1))],
    };
  };
  const sum4 = (v: number[], w: number[]) =>
    f(f(f(f(v[0]! * w[0]!) + f(v[1]! * w[1]!)) + f(v[2]! * w[2]!)) + f(v[3]! * w[3]!));
  const y = new Float32Array(P * Ho * Wo);
  for (let p = 0; p < P; p++)
    for (let oy = 0; oy < Ho; oy++) {
      const ty = taps(oy, H, Ho);
      for (let ox = 0; ox < Wo; ox++) {
        const tx = taps(ox, W, Wo);
        const rows = ty.idx.map((iy) => sum4(tx.idx.map((ix) => x[(p * H + iy) * W + ix]!), tx.w));
        y[(p * Ho + oy) * Wo + ox] = sum4(rows, ty.w);
      }
    }
  return y;
}

describe('resample bicubic on cpu', () => {
  it.each([
    [1, 32],
    [3, 32],
    [7, 32],
    [13, 32],
    [5, 17],
    [32, 13],
  ])('%i -> %i equals PyTorch float32 bit for bit', async (n, o) => {
    const x = randArray(2 * n * n, rng(n * 31 + o));
    const y = await resample('cpu', 'bicubic', x, 2, n, n, o, o);
    expect(y).toEqual(torchBicubicF32(x, 2, n, n, o, o));
  });
});

type PhiDtype = 'f32' | 'f16' | 'bf16';

interface AccumCase {
  name: string;
  B: number;
  Cv: number;
  pn: number;
  G: number;
  phi?: PhiDtype;
  bias?: boolean;
  ratio?: number;
  pnNext?: number;
}

const ACCUM_CASES: AccumCase[] = [
  ...[1, 2, 3, 7, 13].map((pn, i): AccumCase => ({
    name: `pn ${pn} -> 32, phi f32, next ${[2, 3, 7, 13, 24][i]}`,
    B: 2,
    Cv: 4,
    pn,
    G: 32,
    phi: 'f32',
    bias: true,
    pnNext: [2, 3, 7, 13, 24][i],
  })),
  { name: 'pn 5 -> odd G 17, phi f16, next 6', B: 2, Cv: 5, pn: 5, G: 17, phi: 'f16', bias: true, pnNext: 6 },
  { name: 'Cv 32, pn 9 -> 32, phi bf16, next 13', B: 1, Cv: 32, pn: 9, G: 32, phi: 'bf16', bias: true, pnNext: 13 },
  { name: 'no phi, no next', B: 3, Cv: 3, pn: 6, G: 32 },
  { name: 'no phi, next 16', B: 2, Cv: 3, pn: 10, G: 32, pnNext: 16 },
  { name: 'phi without bias, ratio 0.3', B: 1, Cv: 4, pn: 3, G: 11, phi: 'f32', ratio: 0.3, pnNext: 5 },
  { name: 'last-scale shape: pn == G, no phi', B: 2, Cv: 4, pn: 32, G: 32 },
];

function phiWeights(dtype: PhiDtype, w: Float32Array): { tensor: Uint16Array | Float32Array; values: Float32Array } {
  if (dtype === 'f32') return { tensor: w, values: w };
  const r = dtype === 'f16' ? toF16(w) : toBf16(w);
  return { tensor: r.bits, values: r.values };
}

describe.each(backends)('upsample_accum on %s', (backend) => {
  it.each(ACCUM_CASES)('$name', async (c) => {
    const r = rng(c.pn * 7919 + c.G * 31 + c.Cv);
    const ph = c.pn;
    const h = randArray(c.B * c.Cv * ph * ph, r);
    const f0 = randArray(c.B * c.Cv * c.G * c.G, r, -0.5, 0.5);
    const fHat = Float32Array.from(f0);
    const params: Record<string, NativeTensor | number> = {
      h: f32(h, [c.B, c.Cv, ph, ph]),
      f_hat: f32(fHat, [c.B, c.Cv, c.G, c.G]),
    };
    let phiW: Float32Array | undefined;
    let phiB: Float32Array | undefined;
    if (c.phi) {
      const w = phiWeights(c.phi, randArray(c.Cv * c.Cv * 9, r, -0.2, 0.2));
      phiW = w.values;
      params.phi_w = { data: w.tensor, shape: [c.Cv, c.Cv, 3, 3], dtype: c.phi };
      if (c.bias) {
        phiB = randArray(c.Cv, r, -0.1, 0.1);
        params.phi_b = f32(phiB, [c.Cv]);
      }
      if (c.ratio !== undefined) params.phi_ratio = c.ratio;
    }
    let next: Float32Array | undefined;
    if (c.pnNext) {
      next = poisoned(c.B * c.pnNext * c.pnNext * c.Cv);
      params.next = f32(next, [c.B, c.pnNext * c.pnNext, c.Cv]);
      params.pn_next = c.pnNext;
    }
    await addon._ops(backend, 'upsample_accum', params);
    const ref = upsampleAccumRef({
      h,
      fHat: f0,
      B: c.B,
      Cv: c.Cv,
      ph,
      pw: ph,
      G: c.G,
      phiW,
      phiB,
      ratio: c.ratio,
      pnNext: c.pnNext,
    });
    expect(maxAbs(fHat, ref.fHat)).toBeLessThan(1e-5);
    if (next) expect(maxAbs(next, ref.next!)).toBeLessThan(1e-5);
  });

  it('pn_next == G is the identity: next is f_hat token-major, bit for bit', async () => {
    const B = 2, Cv = 3, pn = 13, G = 32;
    const r = rng(99);
    const h = randArray(B * Cv * pn * pn, r);
    const fHat = randArray(B * Cv * G * G, r);
    const w = randArray(Cv * Cv * 9, r, -0.2, 0.2);
    const b = randArray(Cv, r, -0.1, 0.1);
    const next = poisoned(B * G * G * Cv);
    await addon._ops(backend, 'upsample_accum', {
      h: f32(h, [B, Cv, pn, pn]),
      phi_w: f32(w, [Cv, Cv, 3, 3]),
      phi_b: f32(b, [Cv]),
      f_hat: f32(fHat, [B, Cv, G, G]),
      next: f32(next, [B, G * G, Cv]),
      pn_next: G,
    });
    const want = new Float32Array(B * G * G * Cv);
    for (let i = 0; i < B; i++)
      for (let c = 0; c < Cv; c++)
        for (let l = 0; l < G * G; l++) want[(i * G * G + l) * Cv + c] = fHat[(i * Cv + c) * G * G + l]!;
    expect(next).toEqual(want);
  });

  it('rejects bad shapes without touching f_hat, and keeps working', async () => {
    const B = 1, Cv = 4, pn = 3, G = 8;
    const r = rng(3);
    const h = randArray(B * Cv * pn * pn, r);
    const fHat = new Float32Array(B * Cv * G * G);
    const base = { h: f32(h, [B, Cv, pn, pn]), f_hat: f32(fHat, [B, Cv, G, G]) };
    await expect(
      addon._ops(backend, 'upsample_accum', { ...base, phi_w: f32(new Float32Array(Cv * 3 * 9), [Cv, 3, 3, 3]) }),
    ).rejects.toThrow(/phi_w .* must be \[Cv, Cv, 3, 3\]/);
    await expect(
      addon._ops(backend, 'upsample_accum', { ...base, h: f32(randArray(B * 5 * pn * pn, r), [B, 5, pn, pn]) }),
    ).rejects.toThrow(/does not match f_hat/);
    await expect(
      addon._ops(backend, 'upsample_accum', { ...base, next: f32(poisoned(B * 9 * Cv), [B, 9, Cv]), pn_next: 2 }),
    ).rejects.toThrow(/next .* must be \[B, pn_next\^2, Cv\]/);
    await expect(
      addon._ops(backend, 'upsample_accum', { ...base, phi_b: f32(new Float32Array(Cv), [Cv]) }),
    ).rejects.toThrow(/phi_b given without phi_w/);
    expect(fHat.every((v) => v === 0)).toBe(true);
    await addon._ops(backend, 'upsample_accum', base);
    const ref = upsampleAccumRef({ h, fHat: new Float32Array(B * Cv * G * G), B, Cv, ph: pn, pw: pn, G });
    expect(maxAbs(fHat, ref.fHat)).toBeLessThan(1e-5);
  });
});
