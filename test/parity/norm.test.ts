/**
 * Parity of `layernorm` (spec 0, 4.4, 4.7: no-affine LN, AdaLN modulation with one row per
 * image) and `groupnorm` (spec 7: 32 groups, affine, fused SiLU) on every available backend
 * against the float64 references of ./ref.ts, plus invariant rejections.
 *
 * Tolerance: relative L2 error < 1e-5. The kernels accumulate statistics in f32 lanes with
 * double block totals and normalise in f32, so the error is a few f32 ulps (~1e-7); 1e-5
 * leaves room for other backends' reduction orders while still catching a one-pass variance
 * or an fp32-only mean (~1e-3 on the offset cases below).
 */
import { describe, expect, it } from 'vitest';

import { addon, availableBackends, poisoned, randArray, relErr, rng } from '../helpers/index.js';
import { runOpsAtSimdLevel } from '../helpers/simd.js';
import { refGroupNorm, refLayerNorm } from './ref.js';

const backends = availableBackends();
const TOL = 1e-5;

/** Random data around `offset` with the given spread (tests |mean| >> std). */
function data(n: number, seed: number, offset = 0, spread = 1): Float32Array {
  const x = randArray(n, rng(seed), -spread, spread);
  if (offset !== 0) for (let i = 0; i < n; i++) x[i] = x[i]! + offset;
  return x;
}

describe.each(backends)('layernorm on %s', (backend) => {
  interface LnCase {
    name: string;
    M: number;
    C: number;
    affine?: 'both' | 'weight' | 'bias';
    /** Rows per AdaLN group; absent = no modulation. */
    rpg?: number;
    offset?: number;
    inPlace?: boolean;
  }
  const cases: LnCase[] = [
    { name: 'plain LN, odd width', M: 5, C: 37 },
    { name: 'plain LN, one row one column', M: 1, C: 1 },
    { name: 'plain LN, d24 width', M: 3, C: 1536 },
    { name: 'affine weight and bias', M: 7, C: 19, affine: 'both' },
    { name: 'affine weight only', M: 4, C: 33, affine: 'weight' },
    { name: 'affine bias only', M: 4, C: 33, affine: 'bias' },
    { name: 'AdaLN, one group for all rows', M: 9, C: 40, rpg: 9 },
    { name: 'AdaLN, one row per image (CFG, 2 images x 13 tokens)', M: 26, C: 64, rpg: 13 },
    { name: 'AdaLN, a group per row', M: 6, C: 24, rpg: 1 },
    { name: 'AdaLN, partial last group', M: 10, C: 17, rpg: 4 },
    { name: 'affine then AdaLN', M: 8, C: 48, affine: 'both', rpg: 4 },
    { name: 'in place with AdaLN', M: 12, C: 384, rpg: 6, inPlace: true },
    { name: 'mean 1000, spread 0.01', M: 6, C: 129, offset: 1000, rpg: 3 },
  ];

  it.each(cases)('$name: M $M C $C', async (c) => {
    const { M, C } = c;
    const seed = M * 1000 + C;
    const x = data(M * C, seed, c.offset ?? 0, c.offset ? 0.01 : 1);
    const weight = c.affine === 'both' || c.affine === 'weight' ? randArray(C, rng(seed + 1), 0.5, 1.5) : undefined;
    const bias = c.affine === 'both' || c.affine === 'bias' ? randArray(C, rng(seed + 2)) : undefined;
    const G = c.rpg ? Math.ceil(M / c.rpg) : 0;
    const scale = c.rpg ? randArray(G * C, rng(seed + 3), -0.5, 0.5) : undefined;
    const shift = c.rpg ? randArray(G * C, rng(seed + 4)) : undefined;
    const want = refLayerNorm(x, M, C, { weight, bias, scale, shift, eps: 1e-6, rowsPerGroup: c.rpg ?? 1 });
    const y = c.inPlace ? x : poisoned(M * C);
    await addon._ops(backend, 'layernorm', {
      x: { data: x, shape: [M, C] },
      weight: weight && { data: weight, shape: [C] },
      bias: bias && { data: bias, shape: [C] },
      scale: scale && { data: scale, shape: [G, C] },
      shift: shift && { data: shift, shape: [G, C] },
      y: { data: y, shape: [M, C] },
      eps: 1e-6,
      rows_per_group: c.rpg ?? 1,
    });
    if (C === 1) expect(Array.from(y)).toEqual(new Array(M).fill(0));
    else expect(relErr(y, want)).toBeLessThan(TOL);
  });

  it('uses eps: a constant row normalises to 0 and a tiny-variance row is damped', async () => {
    const C = 8;
    const x = new Float32Array([
      ...new Array(C).fill(3),
      ...Array.from({ length: C }, (_, i) => (i % 2 ? 1e-3 : -1e-3)),
    ]);
    const y = poisoned(2 * C);
    await addon._ops(backend, 'layernorm', { x: { data: x, shape: [2, C] }, y: { data: y, shape: [2, C] }, eps: 1e-6 });
    expect(Array.from(y.subarray(0, C))).toEqual(new Array(C).fill(0));
    // var = 1e-6, so y = +-1e-3 / sqrt(2e-6) = +-0.7071
    expect(relErr(y.subarray(C), refLayerNorm(x.subarray(C), 1, C, { eps: 1e-6 }))).toBeLessThan(TOL);
    expect(Math.abs(y[C + 1]! - Math.SQRT1_2)).toBeLessThan(1e-5);
  });

  it('rejects bad shapes with a message and keeps working', async () => {
    const x = data(6 * 8, 1);
    await expect(
      addon._ops(backend, 'layernorm', {
        x: { data: x, shape: [6, 8] },
        scale: { data: new Float32Array(2 * 8), shape: [2, 8] },
        shift: { data: new Float32Array(2 * 8), shape: [2, 8] },
        y: { data: poisoned(48), shape: [6, 8] },
        rows_per_group: 2,
      }),
    ).rejects.toThrow(/layernorm: scale and shift must be contiguous f32 \[3, 8\]/);
    await expect(
      addon._ops(backend, 'layernorm', {
        x: { data: x, shape: [6, 8] },
        scale: { data: new Float32Array(8), shape: [1, 8] },
        y: { data: poisoned(48), shape: [6, 8] },
        rows_per_group: 6,
      }),
    ).rejects.toThrow(/both present or both absent/);
    await expect(
      addon._ops(backend, 'layernorm', {
        x: { data: x, shape: [6, 8] },
        weight: { data: new Float32Array(7), shape: [7] },
        y: { data: poisoned(48), shape: [6, 8] },
      }),
    ).rejects.toThrow(/weight and bias must be contiguous f32 \[8\]/);
    await expect(
      addon._ops(backend, 'layernorm', { x: { data: x, shape: [6, 8] }, y: { data: poisoned(48), shape: [8, 6] } }),
    ).rejects.toThrow(/y must have the shape of x/);
    await expect(addon._ops(backend, 'layernorm', { x: { data: x, shape: [6, 8] } })).rejects.toThrow(
      /layernorm: x and y must be present, non-empty, contiguous f32/,
    );
    const y = poisoned(48);
    await addon._ops(backend, 'layernorm', { x: { data: x, shape: [6, 8] }, y: { data: y, shape: [6, 8] } });
    expect(relErr(y, refLayerNorm(x, 6, 8))).toBeLessThan(TOL);
  });
});

describe.each(backends)('groupnorm on %s', (backend) => {
  interface GnCase {
    name: string;
    B: number;
    C: number;
    S: number;
    groups: number;
    affine: boolean;
    silu: boolean;
    offset?: number;
    inPlace?: boolean;
  }
  const cases: GnCase[] = [
    { name: 'VQVAE GN 32 groups, affine', B: 2, C: 64, S: 37, groups: 32, affine: true, silu: false },
    { name: 'GN + SiLU', B: 1, C: 96, S: 49, groups: 32, affine: true, silu: true },
    { name: 'no affine, 3 channels per group', B: 3, C: 12, S: 5, groups: 4, affine: false, silu: false },
    { name: 'one group (LayerNorm over C*S)', B: 2, C: 7, S: 11, groups: 1, affine: true, silu: true },
    { name: 'S = 1', B: 2, C: 64, S: 1, groups: 32, affine: true, silu: false },
    { name: 'one channel per group', B: 1, C: 32, S: 130, groups: 32, affine: true, silu: false },
    { name: 'large plane (blocked sums)', B: 1, C: 64, S: 4099, groups: 32, affine: true, silu: true },
    { name: 'mean 500, spread 0.01', B: 2, C: 32, S: 67, groups: 8, affine: true, silu: false, offset: 500 },
    { name: 'in place', B: 2, C: 64, S: 33, groups: 32, affine: true, silu: true, inPlace: true },
  ];

  it.each(cases)('$name: B $B C $C S $S groups $groups', async (c) => {
    const { B, C, S, groups } = c;
    const seed = B * 7 + C * 13 + S;
    const x = data(B * C * S, seed, c.offset ?? 0, c.offset ? 0.01 : 2);
    const weight = c.affine ? randArray(C, rng(seed + 1), 0.5, 1.5) : undefined;
    const bias = c.affine ? randArray(C, rng(seed + 2)) : undefined;
    const want = refGroupNorm(x, B, C, S, groups, 1e-6, weight, bias, c.silu);
    const y = c.inPlace ? x : poisoned(B * C * S);
    await addon._ops(backend, 'groupnorm', {
      x: { data: x, shape: [B, C, S] },
      weight: weight && { data: weight, shape: [C] },
      bias: bias && { data: bias, shape: [C] },
      y: { data: y, shape: [B, C, S] },
      groups,
      eps: 1e-6,
      silu: c.silu ? 1 : 0,
    });
    expect(relErr(y, want)).toBeLessThan(TOL);
  });

  it('rejects groups that do not divide C, a 4-D x, and keeps working', async () => {
    const x = data(2 * 12 * 5, 3);
    await expect(
      addon._ops(backend, 'groupnorm', {
        x: { data: x, shape: [2, 12, 5] },
        y: { data: poisoned(120), shape: [2, 12, 5] },
        groups: 5,
      }),
    ).rejects.toThrow(/groupnorm: groups \(5\) must divide the channels \(12\)/);
    await expect(
      addon._ops(backend, 'groupnorm', {
        x: { data: x, shape: [2, 12, 5, 1] },
        y: { data: poisoned(120), shape: [2, 12, 5, 1] },
        groups: 4,
      }),
    ).rejects.toThrow(/x must be 3-D \[B, C, S\]/);
    const y = poisoned(120);
    await addon._ops(backend, 'groupnorm', {
      x: { data: x, shape: [2, 12, 5] },
      y: { data: y, shape: [2, 12, 5] },
      groups: 4,
    });
    expect(relErr(y, refGroupNorm(x, 2, 12, 5, 4, 1e-6))).toBeLessThan(TOL);
  });
});

describe('layernorm and groupnorm on the other CPU SIMD levels (child processes)', () => {
  const M = 26;
  const C = 129;
  const x = data(M * C, 11, 1000, 0.01);
  const scale = randArray(2 * C, rng(12), -0.5, 0.5);
  const shift = randArray(2 * C, rng(13));
  const weight = randArray(C, rng(14), 0.5, 1.5);
  const lnWant = refLayerNorm(x, M, C, { weight, scale, shift, rowsPerGroup: 13 });
  const B = 2;
  const Cg = 64;
  const S = 67;
  const xg = data(B * Cg * S, 15, 3, 2);
  const wg = randArray(Cg, rng(16), 0.5, 1.5);
  const bg = randArray(Cg, rng(17));
  const gnWant = refGroupNorm(xg, B, Cg, S, 32, 1e-6, wg, bg, true);

  it.each(['scalar', 'avx2'])('AV_SIMD=%s matches the float64 reference', (level) => {
    const { detail, outputs } = runOpsAtSimdLevel(level, [
      {
        op: 'layernorm',
        out: 'y',
        params: {
          x: { data: x, shape: [M, C] },
          weight: { data: weight, shape: [C] },
          scale: { data: scale, shape: [2, C] },
          shift: { data: shift, shape: [2, C] },
          y: { data: poisoned(M * C), shape: [M, C] },
          rows_per_group: 13,
        },
      },
      {
        op: 'groupnorm',
        out: 'y',
        params: {
          x: { data: xg, shape: [B, Cg, S] },
          weight: { data: wg, shape: [Cg] },
          bias: { data: bg, shape: [Cg] },
          y: { data: poisoned(B * Cg * S), shape: [B, Cg, S] },
          groups: 32,
          silu: 1,
        },
      },
    ]);
    expect(detail).toMatch(level === 'scalar' ? /simd=scalar/ : /simd=(avx2|scalar)/);
    expect(relErr(outputs[0]!, lnWant)).toBeLessThan(TOL);
    expect(relErr(outputs[1]!, gnWant)).toBeLessThan(TOL);
  });
});
