/**
 * Parity of `vq_lookup` and `vq_nearest` (spec 5.1, 7.3) on every available backend: exact
 * gathers in both layouts and codebook dtypes, nearest codes against a float64 reference
 * with planted exact ties (lowest index wins), and rejection of bad indices and shapes.
 */
import { describe, expect, it } from 'vitest';

import type { NativeTensor } from '../../src/binding/types.js';
import { addon, availableBackends, poisoned, randArray, rng, toBf16, toF16 } from '../helpers/index.js';

const backends = availableBackends();

type CbDtype = 'f32' | 'f16' | 'bf16';

/** A codebook in the given dtype and the f32 values the op will see. */
function codebook(V: number, Cv: number, dtype: CbDtype, seed: number): { tensor: NativeTensor; values: Float32Array } {
  const w = randArray(V * Cv, rng(seed));
  if (dtype === 'f32') return { tensor: { data: w, shape: [V, Cv], dtype }, values: w };
  const r = dtype === 'f16' ? toF16(w) : toBf16(w);
  return { tensor: { data: r.bits, shape: [V, Cv], dtype }, values: r.values };
}

function poisonedIdx(n: number): Int32Array {
  return new Int32Array(n).fill(-1);
}

/** Index of the nearest row by squared L2 in float64; ties keep the lowest index. */
function nearestRef(z: ArrayLike<number>, E: ArrayLike<number>, V: number, Cv: number): number {
  let best = 0;
  let bestD = Infinity;
  for (let v = 0; v < V; v++) {
    let d = 0;
    for (let c = 0; c < Cv; c++) d += (z[c]! - E[v * Cv + c]!) ** 2;
    if (d < bestD) {
      bestD = d;
      best = v;
    }
  }
  return best;
}

describe.each(backends)('vq_lookup on %s', (backend) => {
  it.each([
    [1, 'f32', 2, 1, 64, 32],
    [0, 'f32', 2, 1, 64, 32],
    [1, 'f16', 3, 49, 100, 7],
    [0, 'bf16', 3, 49, 100, 7],
    [1, 'bf16', 1, 1024, 4096, 32],
  ] as [number, CbDtype, number, number, number, number][])(
    'channel_major %i, %s codebook, B %i T %i V %i Cv %i gathers exactly',
    async (cm, dtype, B, T, V, Cv) => {
      const cb = codebook(V, Cv, dtype, V + Cv);
      const r = rng(T * 17 + cm);
      const idx = Int32Array.from({ length: B * T }, () => Math.floor(r() * V));
      idx[0] = 0;
      idx[B * T - 1] = V - 1;
      const y = poisoned(B * T * Cv);
      await addon._ops(backend, 'vq_lookup', {
        idx: { data: idx, shape: [B, T], dtype: 'i32' },
        codebook: cb.tensor,
        y: { data: y, shape: cm ? [B, Cv, T] : [B, T, Cv] },
        channel_major: cm,
      });
      const want = new Float32Array(B * T * Cv);
      for (let b = 0; b < B; b++)
        for (let t = 0; t < T; t++)
          for (let c = 0; c < Cv; c++) {
            const v = cb.values[idx[b * T + t]! * Cv + c]!;
            want[cm ? (b * Cv + c) * T + t : (b * T + t) * Cv + c] = v;
          }
      expect(y).toEqual(want);
    },
  );

  it.each([
    [4096, 'idx\\[1, 2\\] = 4096 is outside the codebook \\[0, 4096\\)'],
    [-3, 'idx\\[1, 2\\] = -3 is outside the codebook \\[0, 4096\\)'],
  ])('rejects index %i naming it, and keeps working', async (bad, msg) => {
    const cb = codebook(4096, 4, 'f32', 1);
    const idx = new Int32Array([1, 2, 3, 4, 5, 6]);
    idx[5] = bad;
    const y = poisoned(6 * 4);
    await expect(
      addon._ops(backend, 'vq_lookup', {
        idx: { data: idx, shape: [2, 3], dtype: 'i32' },
        codebook: cb.tensor,
        y: { data: y, shape: [2, 4, 3] },
      }),
    ).rejects.toThrow(new RegExp(msg));
    idx[5] = 7;
    await addon._ops(backend, 'vq_lookup', {
      idx: { data: idx, shape: [2, 3], dtype: 'i32' },
      codebook: cb.tensor,
      y: { data: y, shape: [2, 4, 3] },
    });
    expect(y[(1 * 4 + 0) * 3 + 2]).toBe(cb.values[7 * 4]);
  });

  it('rejects a y of the wrong layout and a non-i32 idx', async () => {
    const cb = codebook(16, 4, 'f32', 2);
    const idx = { data: new Int32Array(6), shape: [2, 3], dtype: 'i32' as const };
    await expect(
      addon._ops(backend, 'vq_lookup', { idx, codebook: cb.tensor, y: { data: poisoned(24), shape: [2, 3, 4] }, channel_major: 1 }),
    ).rejects.toThrow(/y .* must be \[B, Cv, T\] = \[2, 4, 3\]/);
    await expect(
      addon._ops(backend, 'vq_lookup', {
        idx: { data: new Float32Array(6), shape: [2, 3] },
        codebook: cb.tensor,
        y: { data: poisoned(24), shape: [2, 4, 3] },
      }),
    ).rejects.toThrow(/idx must be contiguous i32/);
  });
});

describe.each(backends)('vq_nearest on %s', (backend) => {
  it.each([
    [1, 'f32', 2, 9, 512, 32],
    [0, 'f32', 2, 9, 512, 32],
    [1, 'f16', 1, 169, 300, 8],
    [0, 'bf16', 3, 13, 1000, 5],
  ] as [number, CbDtype, number, number, number, number][])(
    'channel_major %i, %s codebook, B %i T %i V %i Cv %i matches the float64 argmin',
    async (cm, dtype, B, T, V, Cv) => {
      const cb = codebook(V, Cv, dtype, V * 3 + Cv);
      const r = rng(T * 5 + V);
      // Token-major z; half the tokens sit next to a random code so the argmin is not trivial.
      const zt = randArray(B * T * Cv, r);
      for (let i = 0; i < B * T; i += 2) {
        const v = Math.floor(r() * V);
        for (let c = 0; c < Cv; c++) zt[i * Cv + c] = cb.values[v * Cv + c]! + 0.01 * (r() - 0.5);
      }
      const z = new Float32Array(B * T * Cv);
      for (let b = 0; b < B; b++)
        for (let t = 0; t < T; t++)
          for (let c = 0; c < Cv; c++) z[cm ? (b * Cv + c) * T + t : (b * T + t) * Cv + c] = zt[(b * T + t) * Cv + c]!;
      const idx = poisonedIdx(B * T);
      await addon._ops(backend, 'vq_nearest', {
        z: { data: z, shape: cm ? [B, Cv, T] : [B, T, Cv] },
        codebook: cb.tensor,
        idx: { data: idx, shape: [B, T], dtype: 'i32' },
        channel_major: cm,
      });
      const want = Array.from({ length: B * T }, (_, i) => nearestRef(zt.subarray(i * Cv, (i + 1) * Cv), cb.values, V, Cv));
      expect(Array.from(idx)).toEqual(want);
    },
  );

  it('breaks planted exact ties toward the lowest index', async () => {
    const V = 64;
    const Cv = 4;
    // Codes on a grid of multiples of 1/8 so that midpoints and distances are exact.
    const r = rng(42);
    const E = Float32Array.from({ length: V * Cv }, () => Math.round((r() * 2 - 1) * 8) / 8);
    const set = (v: number, vals: number[]) => vals.forEach((x, c) => (E[v * Cv + c] = x));
    set(10, [3, 3, 3, 3]); // duplicate codes 10 and 40 (far from the rest)
    set(40, [3, 3, 3, 3]);
    set(5, [-3, 2, -3, 2]); // z = (-3, 2.25, -3, 2) is equidistant from 5 and 20
    set(20, [-3, 2.5, -3, 2]);
    set(30, [2, -3, 2, -3]); // z = (2.5, -2.5, 2.5, -2.5) is the midpoint of 30 and 50
    set(50, [3, -2, 3, -2]);
    set(0, [-2, -2, 3, 3]); // z equidistant from 0 and 63, and the tie is at index 0
    set(63, [-2, -2, 3.5, 3]);
    const Z = [
      [3, 3, 3, 3],
      [3.125, 2.875, 3, 3.25],
      [-3, 2.25, -3, 2],
      [2.5, -2.5, 2.5, -2.5],
      [-2, -2, 3.25, 3],
    ];
    const want = [10, 10, 5, 30, 0];
    for (const row of Z) {
      // Each planted tie must be a real tie of the float64 distances and the global minimum.
      const d = Array.from({ length: V }, (_, v) => row.reduce((s, x, c) => s + (x - E[v * Cv + c]!) ** 2, 0));
      const m = Math.min(...d);
      expect(d.filter((x) => x === m).length).toBeGreaterThanOrEqual(2);
    }
    const zt = Float32Array.from(Z.flat());
    const T = Z.length;
    for (const cm of [0, 1]) {
      const z = new Float32Array(T * Cv);
      for (let t = 0; t < T; t++) for (let c = 0; c < Cv; c++) z[cm ? c * T + t : t * Cv + c] = zt[t * Cv + c]!;
      const idx = poisonedIdx(T);
      await addon._ops(backend, 'vq_nearest', {
        z: { data: z, shape: cm ? [1, Cv, T] : [1, T, Cv] },
        codebook: { data: E, shape: [V, Cv] },
        idx: { data: idx, shape: [1, T], dtype: 'i32' },
        channel_major: cm,
      });
      expect(Array.from(idx)).toEqual(want);
    }
  });

  it('rejects a z that does not match the codebook width, and keeps working', async () => {
    const cb = codebook(8, 4, 'f32', 3);
    const idx = poisonedIdx(6);
    await expect(
      addon._ops(backend, 'vq_nearest', {
        z: { data: poisoned(2 * 5 * 3), shape: [2, 5, 3] },
        codebook: cb.tensor,
        idx: { data: idx, shape: [2, 3], dtype: 'i32' },
      }),
    ).rejects.toThrow(/z .* does not match idx \[B, T\] = \[2, 3\] and codebook Cv = 4/);
    expect(Array.from(idx)).toEqual([-1, -1, -1, -1, -1, -1]);
    const z = new Float32Array(2 * 4 * 3);
    for (let t = 0; t < 6; t++) for (let c = 0; c < 4; c++) z[(Math.floor(t / 3) * 4 + c) * 3 + (t % 3)] = cb.values[t * 4 + c]!;
    await addon._ops(backend, 'vq_nearest', {
      z: { data: z, shape: [2, 4, 3] },
      codebook: cb.tensor,
      idx: { data: idx, shape: [2, 3], dtype: 'i32' },
    });
    expect(Array.from(idx)).toEqual([0, 1, 2, 3, 4, 5]);
  });
});
