/**
 * Parity of the elementwise ops (`modulate`, `binary`, `unary`, `softmax`, `copy`) on every
 * available backend against the float64 references of ./ref.ts, with every broadcast shape,
 * in-place use, -inf handling, exact dtype conversions, and invariant rejections.
 *
 * Tolerances: modulate/binary do one or two f32 roundings per element: relErr < 1e-6.
 * unary and softmax use a polynomial exp (~1.4 ulp) plus a division: relErr < 1e-6, and
 * softmax rows must sum to 1 within 1e-5. copy is exact (bit-identical conversions).
 */
import { describe, expect, it } from 'vitest';

import { addon, availableBackends, maxAbs, poisoned, randArray, relErr, rng, toBf16, toF16 } from '../helpers/index.js';
import { runOpsAtSimdLevel } from '../helpers/simd.js';
import { refBinary, refModulate, refSoftmax, refUnary } from './ref.js';

const backends = availableBackends();

describe.each(backends)('modulate on %s', (backend) => {
  it.each([
    [5, 37, 5],
    [12, 64, 3],
    [7, 10, 1],
    [10, 17, 4],
  ])('M %i C %i rows_per_group %i', async (M, C, rpg) => {
    const G = Math.ceil(M / rpg);
    const x = randArray(M * C, rng(M * C));
    const scale = randArray(G * C, rng(G + 1), -0.5, 0.5);
    const shift = randArray(G * C, rng(G + 2));
    const y = poisoned(M * C);
    await addon._ops(backend, 'modulate', {
      x: { data: x, shape: [M, C] },
      scale: { data: scale, shape: [G, C] },
      shift: { data: shift, shape: [G, C] },
      y: { data: y, shape: [M, C] },
      rows_per_group: rpg,
    });
    expect(relErr(y, refModulate(x, M, C, scale, shift, rpg))).toBeLessThan(1e-6);
  });

  it('works in place and rejects a scale of the wrong group count', async () => {
    const M = 8;
    const C = 24;
    const x = randArray(M * C, rng(5));
    const scale = randArray(2 * C, rng(6));
    const shift = randArray(2 * C, rng(7));
    const want = refModulate(x, M, C, scale, shift, 4);
    await addon._ops(backend, 'modulate', {
      x: { data: x, shape: [M, C] },
      scale: { data: scale, shape: [2, C] },
      shift: { data: shift, shape: [2, C] },
      y: { data: x, shape: [M, C] },
      rows_per_group: 4,
    });
    expect(relErr(x, want)).toBeLessThan(1e-6);
    await expect(
      addon._ops(backend, 'modulate', {
        x: { data: x, shape: [M, C] },
        scale: { data: scale, shape: [2, C] },
        shift: { data: shift, shape: [2, C] },
        y: { data: poisoned(M * C), shape: [M, C] },
        rows_per_group: 3,
      }),
    ).rejects.toThrow(/modulate: scale must be \[3, 24\]/);
  });
});

describe.each(backends)('binary on %s', (backend) => {
  // [kind, M, N, Mb, Nb, b_div, alpha, beta]
  it.each([
    [0, 6, 37, 1, 37, 1, 1, 1], // bias row over every row
    [0, 10, 13, 5, 13, 1, 0.5, 1], // position rows repeating every Mb rows (batch of 2)
    [0, 12, 8, 3, 8, 4, -1, 1], // one row per image (b_div = L = 4)
    [0, 9, 7, 9, 1, 1, 2, 1], // one scalar per row
    [0, 12, 5, 2, 1, 6, 1, 1], // one scalar per image
    [1, 6, 37, 1, 37, 1, 1, 1], // gate: y = a*(1 + b)
    [1, 10, 13, 2, 13, 5, 0.25, 0], // y = a*(alpha b)
    [1, 9, 7, 3, 1, 3, -1, 2], // scalar per image, y = a*(2 - b)
    [0, 1, 1, 1, 1, 1, 3, 1],
  ])('kind %i a [%i, %i] b [%i, %i] b_div %i alpha %f beta %f', async (kind, M, N, Mb, Nb, bDiv, alpha, beta) => {
    const a = randArray(M * N, rng(M * 31 + N));
    const b = randArray(Mb * Nb, rng(Mb * 17 + Nb));
    const y = poisoned(M * N);
    await addon._ops(backend, 'binary', {
      a: { data: a, shape: [M, N] },
      b: { data: b, shape: [Mb, Nb] },
      y: { data: y, shape: [M, N] },
      kind,
      alpha,
      beta,
      b_div: bDiv,
    });
    expect(relErr(y, refBinary(a, M, N, b, Mb, Nb, kind, alpha, beta, bDiv))).toBeLessThan(1e-6);
  });

  it('works in place on a 3-D a and rejects a bad b width', async () => {
    const a = randArray(2 * 3 * 5, rng(9));
    const b = randArray(5, rng(10));
    const want = refBinary(a, 6, 5, b, 1, 5, 1, 1, 1, 1);
    await addon._ops(backend, 'binary', {
      a: { data: a, shape: [2, 3, 5] },
      b: { data: b, shape: [5] },
      y: { data: a, shape: [2, 3, 5] },
      kind: 1,
    });
    expect(relErr(a, want)).toBeLessThan(1e-6);
    await expect(
      addon._ops(backend, 'binary', {
        a: { data: a, shape: [6, 5] },
        b: { data: new Float32Array(4), shape: [1, 4] },
        y: { data: poisoned(30), shape: [6, 5] },
      }),
    ).rejects.toThrow(/binary: b's last dimension must be 5 or 1, got 4/);
    await expect(
      addon._ops(backend, 'binary', {
        a: { data: a, shape: [6, 5] },
        b: { data: b, shape: [5] },
        y: { data: poisoned(30), shape: [6, 5] },
        kind: 2,
      }),
    ).rejects.toThrow(/kind must be 0 \(add\) or 1 \(mul\)/);
  });
});

describe.each(backends)('unary on %s', (backend) => {
  const special = [0, -0, 1e-8, -1e-8, 5, -5, 20, -20, 40, -40, 87, -87, 88.5, -88.5, 100, -100, 1e4, -1e4];
  it.each([
    [0, 'none'],
    [1, 'gelu_tanh'],
    [2, 'silu'],
    [3, 'sigmoid'],
  ])('act %i (%s) on 1001 values in [-12, 12] and the extremes', async (act) => {
    const x = new Float32Array([...randArray(1001, rng(act + 40), -12, 12), ...special]);
    const y = poisoned(x.length);
    await addon._ops(backend, 'unary', { x: { data: x, shape: [x.length] }, y: { data: y, shape: [x.length] }, act });
    const want = refUnary(x, act);
    expect(relErr(y, want)).toBeLessThan(1e-6);
    // Pointwise: 1e-6 relative plus 1e-9 absolute. The absolute part covers GELU's far
    // negative tail, where y ~ x*exp(-2u) is tiny and the f32 rounding of u = 0.798(x +
    // 0.0447x^3) (~1e-7 relative, 34 at x = -5) moves exp(-2u) by ~1e-5 of itself.
    for (let i = 0; i < x.length; i++) {
      const tol = 1e-6 * Math.abs(want[i]!) + 1e-9;
      if (!(Math.abs(y[i]! - want[i]!) <= tol)) throw new Error(`act ${act} x=${x[i]} got ${y[i]} want ${want[i]}`);
    }
  });

  it('works in place on a 4-D tensor and rejects an unknown act', async () => {
    const x = randArray(2 * 3 * 4 * 5, rng(50), -4, 4);
    const want = refUnary(x, 2);
    await addon._ops(backend, 'unary', {
      x: { data: x, shape: [2, 3, 4, 5] },
      y: { data: x, shape: [2, 3, 4, 5] },
      act: 2,
    });
    expect(relErr(x, want)).toBeLessThan(1e-6);
    await expect(
      addon._ops(backend, 'unary', { x: { data: x, shape: [120] }, y: { data: poisoned(120), shape: [120] }, act: 7 }),
    ).rejects.toThrow(/unary: act must be 0..3, got 7/);
    await expect(addon._ops(backend, 'unary', { x: { data: x, shape: [120] }, act: 1 })).rejects.toThrow(
      /unary: x and y must be present/,
    );
  });
});

describe.each(backends)('softmax on %s', (backend) => {
  it.each([
    [7, 37, 1],
    [3, 1, 1],
    [2, 1500, 0.125],
    [5, 2049, 1],
    [4, 16, 8],
  ])('M %i N %i scale %f with -inf entries and an all -inf row', async (M, N, scale) => {
    const x = randArray(M * N, rng(M * N), -6, 6);
    const r = rng(N);
    for (let i = 0; i < M * N; i++) if (r() < 0.2) x[i] = -Infinity;
    for (let n = 0; n < N; n++) x[n] = -Infinity; // row 0 fully masked
    if (M > 2) x[2 * N] = 1e4; // a dominant logit: exp must not overflow
    const y = poisoned(M * N);
    await addon._ops(backend, 'softmax', { x: { data: x, shape: [M, N] }, y: { data: y, shape: [M, N] }, scale });
    const want = refSoftmax(x, M, N, scale);
    expect(Array.from(y.subarray(0, N))).toEqual(new Array(N).fill(0));
    expect(relErr(y, want)).toBeLessThan(1e-6);
    for (let i = 0; i < M * N; i++) if (x[i] === -Infinity) expect(y[i]).toBe(0);
    for (let m = 1; m < M; m++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += y[m * N + n]!;
      if (want.subarray(m * N, (m + 1) * N).some((v) => v > 0)) expect(Math.abs(s - 1)).toBeLessThan(1e-5);
    }
  });

  it('keeps -inf at scale 0 (no 0 * -inf NaN) and works in place', async () => {
    const x = new Float32Array([1, -Infinity, 3, 2]);
    await addon._ops(backend, 'softmax', { x: { data: x, shape: [1, 4] }, y: { data: x, shape: [1, 4] }, scale: 0 });
    expect(maxAbs(x, [1 / 3, 0, 1 / 3, 1 / 3])).toBeLessThan(1e-7);
  });
});

describe.each(backends)('copy on %s', (backend) => {
  // Finite values of all magnitudes plus the specials every conversion must carry.
  function source(n: number): Float32Array {
    const x = randArray(n, rng(n), -3, 3);
    const specials = [0, -0, Infinity, -Infinity, NaN, 65504, 65520, 1e-7, 6e-8, 2e-8, -5.96e-8, 3e38, 1e-40];
    specials.forEach((v, i) => (x[i] = v));
    for (let i = specials.length; i < n; i += 7) x[i] = x[i]! * 10 ** Math.floor(6 * (x[i]! % 1));
    return x;
  }

  it.each([
    ['f32', 'f16'],
    ['f32', 'bf16'],
    ['f16', 'f32'],
    ['bf16', 'f32'],
    ['f16', 'bf16'],
    ['bf16', 'f16'],
    ['f32', 'f32'],
    ['f16', 'f16'],
  ] as const)('%s -> %s is exact on [3, 5, 67]', async (from, to) => {
    const shape = [3, 5, 67];
    const n = 3 * 5 * 67;
    const x32 = source(n);
    // The source tensor and the f32 values it holds.
    const src = from === 'f32' ? { bits: x32, values: x32 } : from === 'f16' ? toF16(x32) : toBf16(x32);
    const want = to === 'f32' ? src.values : to === 'f16' ? toF16(src.values).bits : toBf16(src.values).bits;
    const y = to === 'f32' ? poisoned(n) : new Uint16Array(n).fill(0xffff);
    await addon._ops(backend, 'copy', { x: { data: src.bits, shape, dtype: from }, y: { data: y, shape, dtype: to } });
    if (to === 'f32')
      expect(Array.from(y)).toEqual(Array.from(want)); // toEqual treats NaN as equal
    else expect(y).toEqual(want);
  });

  it('copies i32 exactly', async () => {
    const x = Int32Array.from({ length: 2 * 37 }, (_, i) => (i * 2654435761) | 0);
    const y = new Int32Array(2 * 37).fill(-1);
    await addon._ops(backend, 'copy', {
      x: { data: x, shape: [2, 37], dtype: 'i32' },
      y: { data: y, shape: [2, 37], dtype: 'i32' },
    });
    expect(y).toEqual(x);
  });

  it('rejects a float -> int conversion and a shape mismatch, and keeps working', async () => {
    await expect(
      addon._ops(backend, 'copy', {
        x: { data: new Float32Array(6), shape: [2, 3] },
        y: { data: new Int32Array(6), shape: [2, 3], dtype: 'i32' },
      }),
    ).rejects.toThrow(/copy: unsupported conversion f32 -> i32/);
    await expect(
      addon._ops(backend, 'copy', {
        x: { data: new Float32Array(6), shape: [2, 3] },
        y: { data: poisoned(6), shape: [3, 2] },
      }),
    ).rejects.toThrow(/copy: y must have the shape \(ne\) of x/);
    const y = poisoned(6);
    await addon._ops(backend, 'copy', {
      x: { data: new Float32Array([1, 2, 3, 4, 5, 6]), shape: [2, 3] },
      y: { data: y, shape: [2, 3] },
    });
    expect(Array.from(y)).toEqual([1, 2, 3, 4, 5, 6]);
  });
});

describe('unary, softmax, binary and modulate on the other CPU SIMD levels (child processes)', () => {
  const x = randArray(1037, rng(60), -12, 12);
  const M = 7;
  const N = 131;
  const xs = randArray(M * N, rng(61), -6, 6);
  xs.fill(-Infinity, 0, N);
  for (let i = N; i < M * N; i += 5) xs[i] = -Infinity;
  const a = randArray(12 * 37, rng(62));
  const b = randArray(3 * 37, rng(63));
  const sc = randArray(3 * 37, rng(64));

  it.each(['scalar', 'avx2'])('AV_SIMD=%s matches the float64 reference', (level) => {
    const acts = [1, 2, 3];
    const { detail, outputs } = runOpsAtSimdLevel(level, [
      ...acts.map((act) => ({
        op: 'unary' as const,
        out: 'y',
        params: { x: { data: x, shape: [x.length] }, y: { data: poisoned(x.length), shape: [x.length] }, act },
      })),
      {
        op: 'softmax',
        out: 'y',
        params: { x: { data: xs, shape: [M, N] }, y: { data: poisoned(M * N), shape: [M, N] }, scale: 0.5 },
      },
      {
        op: 'binary',
        out: 'y',
        params: {
          a: { data: a, shape: [12, 37] },
          b: { data: b, shape: [3, 37] },
          y: { data: poisoned(12 * 37), shape: [12, 37] },
          kind: 1,
          alpha: 0.5,
          beta: 1,
          b_div: 4,
        },
      },
      {
        op: 'modulate',
        out: 'y',
        params: {
          x: { data: a, shape: [12, 37] },
          scale: { data: sc, shape: [3, 37] },
          shift: { data: b, shape: [3, 37] },
          y: { data: poisoned(12 * 37), shape: [12, 37] },
          rows_per_group: 4,
        },
      },
    ]);
    expect(detail).toMatch(level === 'scalar' ? /simd=scalar/ : /simd=(avx2|scalar)/);
    acts.forEach((act, i) => expect(relErr(outputs[i]!, refUnary(x, act)), `act ${act}`).toBeLessThan(1e-6));
    expect(Array.from(outputs[3]!.subarray(0, N))).toEqual(new Array(N).fill(0));
    expect(relErr(outputs[3]!, refSoftmax(xs, M, N, 0.5))).toBeLessThan(1e-6);
    expect(relErr(outputs[4]!, refBinary(a, 12, 37, b, 3, 37, 1, 0.5, 1, 4))).toBeLessThan(1e-6);
    expect(relErr(outputs[5]!, refModulate(a, 12, 37, sc, b, 4))).toBeLessThan(1e-6);
  });
});
