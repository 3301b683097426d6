/**
 * `sample` (spec 5.2 CFG, 5.3 top-k / top-p / Philox RNG) on every available backend.
 * The Philox4x32-10 reimplementation below is checked against the Random123 known-answer
 * vectors; the op is then checked to draw exactly the index a float64 reference picks with
 * the same u, position by position (positions whose u or top-p cut lies within 1e-5 of a
 * boundary are skipped, since fp32 rounding may legitimately flip them).
 */
import { describe, expect, it } from 'vitest';

import type { OpParams } from '../../src/binding/types.js';
import { addon, availableBackends, randn, rng } from '../helpers/index.js';
import { philox4x32_10, philoxKey } from '../helpers/philox.js';

const backends = availableBackends();

// ---- Philox4x32-10 (Salmon et al. SC'11; Random123 philox.h) ------------------------------

/** First output word for key = seed (low, high words) and counter (imageKey, scale, position, 0). */
function philoxWord(seed: bigint, imageKey: number, scale: number, position: number): number {
  const key = philoxKey(seed);
  return philox4x32_10([imageKey >>> 0, scale >>> 0, position >>> 0, 0], key)[0]!;
}

/** u in [0, 1): the top 24 bits of the first word. */
function philoxUniform(seed: bigint, imageKey: number, scale: number, position: number): number {
  return (philoxWord(seed, imageKey, scale, position) >>> 8) * 2 ** -24;
}

describe('Philox4x32-10 reference', () => {
  // Random123 kat_vectors, "philox4x32 10" lines: counter, key, expected output.
  it.each([
    [
      [0, 0, 0, 0],
      [0, 0],
      [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
    ],
    [
      [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
      [0xffffffff, 0xffffffff],
      [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ],
    [
      [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
      [0xa4093822, 0x299f31d0],
      [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ],
  ])('counter %j key %j matches the known answer', (ctr, key, want) => {
    expect(philox4x32_10(ctr, key)).toEqual(want);
  });
});

// ---- float64 sampling reference ----------------------------------------------------------

const EPS = 1e-5;

/** Index the op must pick for one row of guided logits g, or null when a boundary is too close. */
function expectedIndex(g: readonly number[], topK: number, topP: number, u: number): number | null {
  const V = g.length;
  const x = g.slice();
  if (topK > 0 && topK < V) {
    const desc = x.slice().sort((a, b) => b - a);
    const thr = desc[topK - 1]!;
    const below = desc[topK];
    if (below !== undefined && below !== thr && thr - below < EPS) return null;
    for (let v = 0; v < V; v++) if (x[v]! < thr) x[v] = -Infinity;
  }
  if (topP > 0 && topP < 1) {
    const order = x.map((_, i) => i).sort((a, b) => x[a]! - x[b]! || a - b);
    const m = x[order[V - 1]!]!;
    const e = order.map((i) => Math.exp(x[i]! - m));
    const S = e.reduce((p, q) => p + q, 0);
    let cum = 0;
    for (let j = 0; j + 1 < V; j++) {
      cum += e[j]! / S;
      if (e[j]! > 0 && Math.abs(cum - (1 - topP)) < EPS) return null;
      if (cum <= 1 - topP) x[order[j]!] = -Infinity;
    }
  }
  const m = Math.max(...x);
  const e = x.map((v) => Math.exp(v - m));
  const S = e.reduce((p, q) => p + q, 0);
  let cum = 0;
  for (let v = 0; v < V; v++) {
    if (e[v] === 0) continue;
    cum += e[v]! / S;
    if (Math.abs(cum - u) < EPS) return null;
    if (cum > u) return v;
  }
  return null;
}

interface SampleRun {
  logits: Float32Array; // [R, L, V]
  B: number;
  L: number;
  V: number;
  cfg?: number;
  t?: number;
  topK: number;
  topP?: number;
  seed?: bigint;
  scale?: number;
  keys?: number[];
}

async function sample(backend: string, s: SampleRun): Promise<Int32Array> {
  const R = s.cfg ? 2 * s.B : s.B;
  const idx = new Int32Array(s.B * s.L).fill(-1);
  const params: OpParams = {
    logits: { data: s.logits, shape: [R, s.L, s.V] },
    idx: { data: idx, shape: [s.B, s.L], dtype: 'i32' },
    cfg: s.cfg ?? 0,
    t: s.t ?? 0,
    top_k: s.topK,
    top_p: s.topP ?? 0,
    seed: s.seed ?? 0n,
    scale: s.scale ?? 0,
  };
  if (s.keys) params.image_key = { data: Int32Array.from(s.keys), shape: [s.B], dtype: 'i32' };
  await addon._ops(backend, 'sample', params);
  return idx;
}

/** Guided logits of row (b, l) in float64 from the f32 inputs. */
function guided(s: SampleRun, b: number, l: number): number[] {
  const { V, L, B } = s;
  const t = Math.fround(s.t ?? 0);
  const out: number[] = [];
  for (let v = 0; v < V; v++) {
    const zc = s.logits[(b * L + l) * V + v]!;
    out.push(s.cfg ? (1 + t) * zc - t * s.logits[((B + b) * L + l) * V + v]! : zc);
  }
  return out;
}

describe.each(backends)('sample on %s', (backend) => {
  it('top_k = 1 is the argmax, lowest index among ties, with or without cfg, and draws nothing', async () => {
    const V = 9;
    const rows = [
      [0, 1, 5, 2, 5, 5, -1, 0, 3], // ties at 2, 4, 5 -> 2
      [7, 7, 7, 7, 7, 7, 7, 7, 7], // all equal -> 0
      [-Infinity, -3, -Infinity, -3, -4, -5, -6, -7, -3], // -> 1
      [0, 0, 0, 0, 0, 0, 0, 0, 1e-6], // -> 8
    ];
    const logits = Float32Array.from(rows.flat());
    // No image_key: greedy decoding needs no random numbers.
    const idx = await sample(backend, { logits, B: 1, L: rows.length, V, topK: 1 });
    expect(Array.from(idx)).toEqual([2, 0, 1, 8]);

    // cfg: G = (1+t) Zc - t Zn. Zc alone prefers 1; the guided row prefers 3 (and ties 3 vs 5).
    const zc = [0, 2, 1, 1.5, 0, 1.5];
    const zn = [0, 3, 1, 0, 0, 0];
    const cfg = await sample(backend, {
      logits: Float32Array.from([...zc, ...zn]),
      B: 1,
      L: 1,
      V: 6,
      topK: 1,
      cfg: 1,
      t: 2,
    });
    // G = 3 zc - 2 zn = [0, 0, 1, 4.5, 0, 4.5]
    expect(Array.from(cfg)).toEqual([3]);
  });

  it('Philox stream: with V = 4096 equal logits the pick is the top 12 bits of the first word', async () => {
    const V = 4096;
    const L = 64;
    const B = 3;
    const keys = [0, 77, -5];
    const seed = 0x0123456789abcdefn;
    const scale = 7;
    const idx = await sample(backend, { logits: new Float32Array(B * L * V), B, L, V, topK: 0, seed, scale, keys });
    // p = 2^-12 each and every prefix sum k/4096 is exact, so the pick is floor(u * 4096).
    const want = keys.flatMap((k) => Array.from({ length: L }, (_, l) => philoxWord(seed, k, scale, l) >>> 20));
    expect(Array.from(idx)).toEqual(want);
  });

  const EXACT: { name: string; run: Omit<SampleRun, 'logits'>; std: number }[] = [
    { name: 'full softmax', run: { B: 2, L: 300, V: 37, topK: 0, seed: 12345n, scale: 3, keys: [4, 9] }, std: 1.5 },
    { name: 'top-k 5', run: { B: 2, L: 200, V: 50, topK: 5, seed: 7n, scale: 1, keys: [1, 2] }, std: 1 },
    { name: 'top-p 0.75', run: { B: 1, L: 300, V: 40, topK: 0, topP: 0.75, seed: 99n, scale: 5, keys: [3] }, std: 2 },
    {
      name: 'cfg t=1.5, top-k 10, top-p 0.5, 64-bit seed',
      run: {
        B: 2,
        L: 200,
        V: 64,
        cfg: 1,
        t: 1.5,
        topK: 10,
        topP: 0.5,
        seed: 0xdeadbeef12345678n,
        scale: 9,
        keys: [11, -1],
      },
      std: 1,
    },
    {
      name: 'V 4096, top-k 600, top-p 0.9',
      run: { B: 1, L: 24, V: 4096, topK: 600, topP: 0.9, seed: 5n, scale: 8, keys: [2] },
      std: 3,
    },
  ];

  it.each(EXACT)('$name: every position draws the float64 reference index for its Philox u', async ({ run, std }) => {
    const R = run.cfg ? 2 * run.B : run.B;
    const s: SampleRun = { ...run, logits: randn(R * run.L * run.V, rng(run.V * 7 + run.L), std) };
    const idx = await sample(backend, s);
    let checked = 0;
    for (let b = 0; b < s.B; b++)
      for (let l = 0; l < s.L; l++) {
        const u = philoxUniform(s.seed!, s.keys![b]!, s.scale!, l);
        const want = expectedIndex(guided(s, b, l), s.topK, s.topP ?? 0, u);
        if (want === null) continue;
        checked++;
        expect(idx[b * s.L + l], `b ${b} l ${l} u ${u}`).toBe(want);
      }
    expect(checked).toBeGreaterThan(0.95 * s.B * s.L);
  });

  it('top-k keeps every tie at the k-th value and nothing below it', async () => {
    const V = 8;
    const L = 2000;
    const row = [5, 3, 3, 1, 3, 0, 2.5, -1];
    const logits = Float32Array.from({ length: L * V }, (_, i) => row[i % V]!);
    const idx = await sample(backend, { logits, B: 1, L, V, topK: 2, seed: 3n, keys: [0] });
    const seen = new Set(idx);
    expect([...seen].sort((p, q) => p - q)).toEqual([0, 1, 2, 4]);
  });

  it.each([
    [0.75, [2, 3]], // cumulative 1/15, 3/15 <= 0.25 are cut; 7/15 survives
    [0.1, [3]], // only the max survives: sampling degenerates to argmax
    [0.999, [0, 1, 2, 3]], // the smallest mass 1/15 > 0.001: nothing is cut
    [1, [0, 1, 2, 3]], // p >= 1 disables top-p
    [0, [0, 1, 2, 3]], // p = 0 disables top-p
  ])('top-p %f keeps %j of probabilities 1/15, 2/15, 4/15, 8/15', async (p, keep) => {
    const V = 4;
    const L = 1000;
    const row = [0, Math.log(2), Math.log(4), Math.log(8)];
    const logits = Float32Array.from({ length: L * V }, (_, i) => row[i % V]!);
    const idx = await sample(backend, { logits, B: 1, L, V, topK: 0, topP: p, seed: 21n, keys: [6] });
    expect([...new Set(idx)].sort((p, q) => p - q)).toEqual(keep);
    const want = Array.from({ length: L }, (_, l) => expectedIndex(row, 0, p, philoxUniform(21n, 6, 0, l)));
    for (let l = 0; l < L; l++) if (want[l] !== null) expect(idx[l]).toBe(want[l]);
  });

  it('top-p removes an entry whose cumulative mass equals 1-p exactly (the lower index of a tie)', async () => {
    // Two equal logits: sorted ascending by (value, index) the first has cumulative 0.5 <= 0.5.
    const L = 200;
    const logits = new Float32Array(L * 2);
    const idx = await sample(backend, { logits, B: 1, L, V: 2, topK: 0, topP: 0.5, seed: 1n, keys: [0] });
    expect(idx.every((v) => v === 1)).toBe(true);
  });

  it('is deterministic, independent per image key and scale, and independent of batch composition', async () => {
    const V = 64;
    const L = 256;
    const r = rng(8);
    const img = randn(2 * L * V, r, 0.5); // one image's [cond; neg] rows, nearly flat: draws vary
    const run = (logits: Float32Array, B: number, keys: number[], scale = 4) =>
      sample(backend, { logits, B, L, V, cfg: 1, t: 0.5, topK: 0, topP: 0.95, seed: 2024n, scale, keys });

    const a = await run(img, 1, [77]);
    const again = await run(img, 1, [77]);
    expect(again).toEqual(a);

    const otherKey = await run(img, 1, [78]);
    const otherScale = await run(img, 1, [77], 5);
    const agree = (x: Int32Array, y: Int32Array) => x.filter((v, i) => v === y[i]).length / x.length;
    expect(agree(a, otherKey)).toBeLessThan(0.3);
    expect(agree(a, otherScale)).toBeLessThan(0.3);

    // Batch of 3 with this image at position 2: rows [c0, c1, c2, n0, n1, n2].
    const others = randn(4 * L * V, r, 0.5);
    const LV = L * V;
    const batch = new Float32Array(6 * LV);
    batch.set(others.subarray(0, LV), 0);
    batch.set(others.subarray(LV, 2 * LV), LV);
    batch.set(img.subarray(0, LV), 2 * LV);
    batch.set(others.subarray(2 * LV, 3 * LV), 3 * LV);
    batch.set(others.subarray(3 * LV, 4 * LV), 4 * LV);
    batch.set(img.subarray(LV, 2 * LV), 5 * LV);
    const b3 = await run(batch, 3, [5, 9, 77]);
    expect(b3.subarray(2 * L)).toEqual(a);
  });

  it('rejects inconsistent shapes and a missing image_key, and keeps working', async () => {
    const V = 5;
    const L = 3;
    const logits = new Float32Array(3 * L * V);
    const idx = { data: new Int32Array(2 * L).fill(-1), shape: [2, L], dtype: 'i32' as const };
    await expect(
      addon._ops(backend, 'sample', { logits: { data: logits, shape: [3, L, V] }, idx, cfg: 1, top_k: 1 }),
    ).rejects.toThrow(/R = 3 rows but cfg needs 2B = 4/);
    await expect(
      addon._ops(backend, 'sample', {
        logits: { data: logits.subarray(0, 2 * L * V), shape: [2, L, V] },
        idx,
        top_k: 0,
      }),
    ).rejects.toThrow(/image_key must be i32 \[B\] with B = 2/);
    await expect(
      addon._ops(backend, 'sample', {
        logits: { data: logits.subarray(0, 2 * 2 * V), shape: [2, 2, V] },
        idx,
        top_k: 1,
      }),
    ).rejects.toThrow(/idx .* must be \[B, L\] with L = 2/);
    expect(Array.from(idx.data)).toEqual([-1, -1, -1, -1, -1, -1]);
    const ok = Float32Array.from({ length: 2 * L * V }, (_, i) => (i % V === (i % 7) % V ? 1 : 0));
    await addon._ops(backend, 'sample', { logits: { data: ok, shape: [2, L, V] }, idx, top_k: 1 });
    const want = Array.from({ length: 2 * L }, (_, r) => {
      const row = Array.from(ok.subarray(r * V, (r + 1) * V));
      return row.indexOf(Math.max(...row));
    });
    expect(Array.from(idx.data)).toEqual(want);
  });
});
