/**
 * Parity of `qkv_prep` (spec 4.2, 4.5) and `attn` (spec 4.5, 11.4; STYLE rule 5) on every
 * available backend against the float64 references of ./ref.ts.
 *
 * Covered: lengths that are not tile multiples (Lq 1, 5, 9, 37, 50, 67; Lk 1, 13, 67, 130) and
 * exact multiples, head dims 6, 8, 12, 20, 64 and 640; every key-bias broadcast (Rb = 1, R/2 for CFG, R),
 * kb_beta present and absent, the block-causal mask present and absent, rows with every key
 * masked (exact zeros), -inf bias keys, n_kv < n_ctx with NaN in the unused cache tail,
 * kv_pos > 0, RoPE and L2 norm on and off, the spec's fractional RoPE coordinates, and
 * invariant rejections.
 *
 * Tolerances (relative L2 error): qkv_prep < 1e-6 (a norm and a rotation: a few f32 ulps;
 * the reference uses the same fp32 angles). attn < 1e-5 for logits of magnitude ~1-10
 * (f32 dot products and sums of up to 640 terms, polynomial exp ~1.4 ulp); 5e-5 for the
 * s_h = 100 case, whose logits reach +-100 so the f32 rounding of each logit (~1e-5 absolute)
 * moves each softmax weight by ~1e-5 of itself.
 */
import { describe, expect, it } from 'vitest';

import type { NativeTensor, OpParams } from '../../src/binding/types.js';
import { addon, availableBackends, poisoned, randArray, relErr, rng, toBf16 } from '../helpers/index.js';
import { runOpsAtSimdLevel } from '../helpers/simd.js';
import { refAttn, refQkvPrep, ropeAngles, ropeRotate } from './ref.js';

const backends = availableBackends();

/**
 * CPU computes attention in fp32 (tolerances above). The CUDA backend runs D = 64 on f16
 * tensor cores (q, k, p and v rounded to f16, fp32 accumulation), so its error is that of the
 * rounding, ~1e-3 relative: it is held to 5e-3. Other head sizes take its fp32 path.
 */
function attnTol(backend: string, D: number, tol: number): number {
  return backend === 'cuda' && D === 64 ? Math.max(tol, 5e-3) : tol;
}

/** (tx, ty) for every token of a pn x pn grid, spec 4.2: tx = (r / pn) * 32 in fp32. */
function gridPos(pn: number): Float32Array {
  const f = Math.fround;
  const pos = new Float32Array(pn * pn * 2);
  for (let r = 0; r < pn; r++)
    for (let c = 0; c < pn; c++) {
      pos[2 * (r * pn + c)] = f(f(r / pn) * 32);
      pos[2 * (r * pn + c) + 1] = f(f(c / pn) * 32);
    }
  return pos;
}

describe.each(backends)('qkv_prep on %s', (backend) => {
  interface PrepCase {
    R: number;
    L: number;
    H: number;
    D: number;
    nCtx: number;
    kvPos: number;
    l2norm: boolean;
    rope: boolean;
    qScale: boolean;
    /** Grid of the rope positions (pn * pn == L) or random positions. */
    pn?: number;
  }
  const cases: PrepCase[] = [
    { R: 2, L: 9, H: 3, D: 64, nCtx: 20, kvPos: 4, l2norm: true, rope: true, qScale: true, pn: 3 },
    { R: 1, L: 1, H: 1, D: 8, nCtx: 1, kvPos: 0, l2norm: true, rope: true, qScale: true },
    { R: 2, L: 37, H: 1, D: 12, nCtx: 50, kvPos: 13, l2norm: false, rope: true, qScale: false },
    { R: 1, L: 13, H: 3, D: 64, nCtx: 13, kvPos: 0, l2norm: true, rope: false, qScale: true },
    { R: 3, L: 4, H: 2, D: 64, nCtx: 4, kvPos: 0, l2norm: false, rope: false, qScale: false },
    { R: 2, L: 16, H: 6, D: 64, nCtx: 30, kvPos: 14, l2norm: true, rope: true, qScale: false, pn: 4 },
    { R: 1, L: 7, H: 2, D: 20, nCtx: 9, kvPos: 1, l2norm: true, rope: true, qScale: true },
  ];

  it.each(cases)(
    'R $R L $L H $H D $D n_ctx $nCtx kv_pos $kvPos l2norm $l2norm rope $rope q_scale $qScale',
    async (c) => {
      const { R, L, H, D, nCtx, kvPos } = c;
      const r = rng(R * 100 + L * 10 + D);
      const qkv = randArray(R * L * 3 * H * D, r, -2, 2);
      // One zero head vector: the 1e-12 floor must give 0, not NaN.
      qkv.fill(0, 0, D);
      const qScale = c.qScale ? randArray(H, r, 1, 100) : undefined;
      const ropePos = c.pn ? gridPos(c.pn) : randArray(L * 2, r, 0, 32);
      const qOut = poisoned(R * H * L * D);
      const kCache = poisoned(R * H * nCtx * D);
      const vCache = poisoned(R * H * nCtx * D);
      await addon._ops(backend, 'qkv_prep', {
        qkv: { data: qkv, shape: [R, L, 3, H * D] },
        q_scale: qScale && { data: qScale, shape: [H] },
        rope_pos: c.rope ? { data: ropePos, shape: [L, 2] } : undefined,
        q_out: { data: qOut, shape: [R, H, L, D] },
        k_cache: { data: kCache, shape: [R, H, nCtx, D] },
        v_cache: { data: vCache, shape: [R, H, nCtx, D] },
        kv_pos: kvPos,
        l2norm: c.l2norm ? 1 : 0,
        rope: c.rope ? 1 : 0,
        rope_base: 10000,
      });
      const want = refQkvPrep(qkv, R, L, H, D, { qScale, ropePos, l2norm: c.l2norm, rope: c.rope });
      expect(relErr(qOut, want.q)).toBeLessThan(1e-6);
      expect(qOut.subarray(0, D).every((e) => e === 0)).toBe(true); // +-0, never NaN
      // This step's rows of the caches match; every other cache row is untouched.
      const kGot = new Float32Array(R * H * L * D);
      const vGot = new Float32Array(R * H * L * D);
      for (let rh = 0; rh < R * H; rh++)
        for (let p = 0; p < nCtx; p++) {
          const src = (rh * nCtx + p) * D;
          if (p >= kvPos && p < kvPos + L) {
            kGot.set(kCache.subarray(src, src + D), (rh * L + p - kvPos) * D);
            vGot.set(vCache.subarray(src, src + D), (rh * L + p - kvPos) * D);
          } else {
            expect(kCache.subarray(src, src + D).every((e) => Number.isNaN(e))).toBe(true);
            expect(vCache.subarray(src, src + D).every((e) => Number.isNaN(e))).toBe(true);
          }
        }
      expect(relErr(kGot, want.k)).toBeLessThan(1e-6);
      expect(vGot).toEqual(Float32Array.from(want.v)); // v is copied bit-exactly
    },
  );

  it('RoPE on the pn = 3 grid matches the spec formula; (0, 0) is the identity', async () => {
    const pos = gridPos(3);
    // Row 1 of a 3x3 grid sits at tx = fp32(fp32(1/3) * 32) = 10.666667.
    expect(pos[2 * 3]).toBeCloseTo(10.666667, 5);
    expect(pos[2 * 6]).toBeCloseTo(21.333334, 5);
    expect(pos[2 * 1 + 1]).toBeCloseTo(10.666667, 5);
    const L = 9;
    const D = 64;
    const qkv = randArray(L * 3 * D, rng(77));
    const qOut = poisoned(L * D);
    await addon._ops(backend, 'qkv_prep', {
      qkv: { data: qkv, shape: [1, L, 3 * D] },
      rope_pos: { data: pos, shape: [L, 2] },
      q_out: { data: qOut, shape: [1, 1, L, D] },
      k_cache: { data: poisoned(L * D), shape: [1, 1, L, D] },
      v_cache: { data: poisoned(L * D), shape: [1, 1, L, D] },
      l2norm: 0,
      rope: 1,
    });
    // Token 0 (r = c = 0) is not rotated at all.
    expect(Array.from(qOut.subarray(0, D))).toEqual(Array.from(qkv.subarray(0, D)));
    for (let l = 0; l < L; l++) {
      const tx = pos[2 * l]!;
      const ty = pos[2 * l + 1]!;
      // Spec 4.2 literally, in float64: theta_i = 10000^(-i/16); pairs 0..15 use tx, 16..31 ty.
      const phi = Array.from({ length: 32 }, (_, p) => (p < 16 ? tx : ty) * 10000 ** (-(p % 16) / 16));
      const q = qkv.subarray(l * 3 * D, l * 3 * D + D);
      expect(relErr(qOut.subarray(l * D, (l + 1) * D), ropeRotate(q, phi))).toBeLessThan(1e-5);
      // and the fp32 angle recipe of ref.ts agrees with it to fp32 precision
      const phi32 = ropeAngles(tx, ty, D, 10000);
      for (let p = 0; p < 32; p++) expect(Math.abs(phi32[p]! - phi[p]!)).toBeLessThan(4e-6 * Math.max(1, phi[p]!));
    }
  });

  it('rejects invalid parameters with a message and keeps working', async () => {
    const base = (): Record<string, NativeTensor | number | undefined> => ({
      qkv: { data: randArray(2 * 3 * 8, rng(1)), shape: [1, 2, 3, 8] },
      rope_pos: { data: new Float32Array(4), shape: [2, 2] },
      q_out: { data: poisoned(16), shape: [1, 1, 2, 8] },
      k_cache: { data: poisoned(32), shape: [1, 1, 4, 8] },
      v_cache: { data: poisoned(32), shape: [1, 1, 4, 8] },
    });
    await expect(addon._ops(backend, 'qkv_prep', { ...base(), kv_pos: 3 })).rejects.toThrow(
      /qkv_prep: kv_pos \+ L \(3 \+ 2\) must be within n_ctx = 4/,
    );
    await expect(
      addon._ops(backend, 'qkv_prep', {
        ...base(),
        qkv: { data: randArray(2 * 3 * 6, rng(1)), shape: [1, 2, 3, 6] },
        q_out: { data: poisoned(12), shape: [1, 1, 2, 6] },
        k_cache: { data: poisoned(24), shape: [1, 1, 4, 6] },
        v_cache: { data: poisoned(24), shape: [1, 1, 4, 6] },
      }),
    ).rejects.toThrow(/rope needs D % 4 == 0, got D = 6/);
    await expect(addon._ops(backend, 'qkv_prep', { ...base(), rope_pos: undefined })).rejects.toThrow(
      /rope needs rope_pos, contiguous f32 \[L, 2\] = \[2, 2\]/,
    );
    await expect(
      addon._ops(backend, 'qkv_prep', { ...base(), l2norm: 0, q_scale: { data: new Float32Array([2]), shape: [1] } }),
    ).rejects.toThrow(/q_scale is applied with l2norm only/);
    await expect(
      addon._ops(backend, 'qkv_prep', { ...base(), k_cache: { data: poisoned(32), shape: [1, 2, 2, 8] } }),
    ).rejects.toThrow(/k_cache and v_cache must both be \[R, H, n_ctx, D\]/);
    await expect(
      addon._ops(backend, 'qkv_prep', {
        ...base(),
        k_cache: { data: new Uint16Array(32), shape: [1, 1, 4, 8], dtype: 'f16' },
        v_cache: { data: new Uint16Array(32), shape: [1, 1, 4, 8], dtype: 'f16' },
      }),
    ).rejects.toThrow(/k_cache and v_cache must be present, non-empty, contiguous and both f32 or both bf16/);
    const ok = base();
    await addon._ops(backend, 'qkv_prep', { ...ok, kv_pos: 2 });
    expect((ok.q_out as NativeTensor).data.every((e) => Number.isFinite(e))).toBe(true);
  });
});

type BiasKind = 'none' | 'Rb=1' | 'Rb=R/2' | 'Rb=R';

interface AttnCase {
  name: string;
  R: number;
  H: number;
  Lq: number;
  D: number;
  nKv: number;
  /** Cache capacity; positions >= nKv hold NaN. */
  nCtx: number;
  bias: BiasKind;
  beta: boolean;
  mask: boolean;
  /** Softmax scale; q and k are unit vectors times this when `unit`. */
  scale: number;
  unit?: boolean;
  tol?: number;
}

const attnCases: AttnCase[] = [
  {
    name: 'single query, single key',
    R: 1,
    H: 1,
    Lq: 1,
    D: 8,
    nKv: 1,
    nCtx: 1,
    bias: 'none',
    beta: false,
    mask: false,
    scale: 1,
  },
  {
    name: 'CFG bias shared by halves',
    R: 2,
    H: 3,
    Lq: 5,
    D: 64,
    nKv: 13,
    nCtx: 20,
    bias: 'Rb=R/2',
    beta: true,
    mask: false,
    scale: 0.125,
  },
  {
    name: 'one bias row, mask, D 12',
    R: 2,
    H: 1,
    Lq: 37,
    D: 12,
    nKv: 67,
    nCtx: 67,
    bias: 'Rb=1',
    beta: false,
    mask: true,
    scale: 0.3,
  },
  {
    name: 'bias per row, beta, mask',
    R: 4,
    H: 3,
    Lq: 37,
    D: 64,
    nKv: 130,
    nCtx: 140,
    bias: 'Rb=R',
    beta: true,
    mask: true,
    scale: 0.125,
  },
  {
    name: 'one query over many keys',
    R: 2,
    H: 3,
    Lq: 1,
    D: 64,
    nKv: 130,
    nCtx: 131,
    bias: 'Rb=R/2',
    beta: true,
    mask: false,
    scale: 0.125,
  },
  {
    name: 'small model heads, no bias',
    R: 1,
    H: 6,
    Lq: 33,
    D: 64,
    nKv: 100,
    nCtx: 100,
    bias: 'none',
    beta: false,
    mask: false,
    scale: 0.125,
  },
  {
    name: 'tile multiples',
    R: 1,
    H: 2,
    Lq: 64,
    D: 64,
    nKv: 128,
    nCtx: 128,
    bias: 'Rb=1',
    beta: true,
    mask: true,
    scale: 0.125,
  },
  {
    name: 'partial query block of 18, D 20',
    R: 1,
    H: 2,
    Lq: 50,
    D: 20,
    nKv: 67,
    nCtx: 70,
    bias: 'Rb=1',
    beta: true,
    mask: true,
    scale: 0.4,
  },
  {
    name: 'D 6 (scalar column tail)',
    R: 2,
    H: 1,
    Lq: 9,
    D: 6,
    nKv: 13,
    nCtx: 13,
    bias: 'Rb=R',
    beta: false,
    mask: false,
    scale: 0.7,
  },
  {
    name: 'D 8, mask, no bias',
    R: 3,
    H: 2,
    Lq: 67,
    D: 8,
    nKv: 13,
    nCtx: 13,
    bias: 'none',
    beta: false,
    mask: true,
    scale: 1,
  },
  {
    name: 'VQVAE single head D 640',
    R: 1,
    H: 1,
    Lq: 67,
    D: 640,
    nKv: 67,
    nCtx: 67,
    bias: 'none',
    beta: false,
    mask: false,
    scale: 1 / Math.sqrt(640),
  },
  {
    name: 'L2-normalised, s_h = 100 (logits up to 100)',
    R: 2,
    H: 2,
    Lq: 37,
    D: 64,
    nKv: 130,
    nCtx: 130,
    bias: 'Rb=R/2',
    beta: true,
    mask: false,
    scale: 100,
    unit: true,
    tol: 5e-5,
  },
];

/** The params (o poisoned) and float64 reference of one attention case. */
/**
 * The operands, output and float64 reference of an attention case. With `bf16Kv`, k and v are
 * rounded to bf16 first (the reference sees the rounded values) and their bits are returned too.
 */
function buildAttn(
  c: AttnCase,
  bf16Kv = false,
): { params: OpParams; o: Float32Array; want: Float64Array; kBits?: Uint16Array; vBits?: Uint16Array } {
  const { R, H, Lq, D, nKv, nCtx } = c;
  const r = rng(R * 1000 + H * 100 + Lq * 10 + nKv);
  const q = randArray(R * H * Lq * D, r);
  const k = randArray(R * H * nCtx * D, r);
  const v = randArray(R * H * nCtx * D, r);
  if (c.unit) {
    for (const t of [q, k])
      for (let off = 0; off < t.length; off += D) {
        let n = 0;
        for (let d = 0; d < D; d++) n += t[off + d]! ** 2;
        for (let d = 0; d < D; d++) t[off + d] = t[off + d]! / Math.sqrt(n);
      }
  }
  // Cache positions past n_kv are not part of the op: NaN there must not leak into o.
  for (const t of [k, v]) for (let rh = 0; rh < R * H; rh++) t.fill(NaN, (rh * nCtx + nKv) * D, (rh + 1) * nCtx * D);
  let kBits: Uint16Array | undefined;
  let vBits: Uint16Array | undefined;
  if (bf16Kv) {
    const kb = toBf16(k);
    const vb = toBf16(v);
    k.set(kb.values);
    v.set(vb.values);
    kBits = kb.bits;
    vBits = vb.bits;
  }
  const Rb = c.bias === 'Rb=1' ? 1 : c.bias === 'Rb=R/2' ? R / 2 : R;
  let keyBias: Float32Array | undefined;
  if (c.bias !== 'none') {
    // ln(m + 1e-6) of a mask in (0, 1) (spec 11.4), a few keys at -inf, NaN past n_kv.
    keyBias = Float32Array.from({ length: Rb * nCtx }, () => Math.log(r() + 1e-6));
    for (let b = 0; b < Rb; b++) {
      if (nKv > 3) keyBias[b * nCtx + 2] = -Infinity;
      keyBias.fill(NaN, b * nCtx + nKv, (b + 1) * nCtx);
    }
  }
  const kbBeta = c.beta ? randArray(H, r, 0.05, 2) : undefined;
  let qLvl: Int32Array | undefined;
  let kLvl: Int32Array | undefined;
  if (c.mask) {
    // Keys in level blocks; queries at random levels, query 0 below every key (all masked).
    kLvl = Int32Array.from({ length: nCtx }, (_, j) => (j < nKv ? Math.floor((j * 4) / nKv) : 99));
    qLvl = Int32Array.from({ length: Lq }, () => Math.floor(r() * 5) - 1);
    qLvl[0] = -1;
    if (Lq > 1) qLvl[Lq - 1] = 3;
  }
  const o = poisoned(R * Lq * H * D);
  const params: OpParams = {
    q: { data: q, shape: [R, H, Lq, D] },
    k: { data: k, shape: [R, H, nCtx, D] },
    v: { data: v, shape: [R, H, nCtx, D] },
    key_bias: keyBias && { data: keyBias, shape: [Rb, nCtx] },
    kb_beta: kbBeta && { data: kbBeta, shape: [H] },
    q_lvl: qLvl && { data: qLvl, shape: [Lq], dtype: 'i32' },
    k_lvl: kLvl && { data: kLvl, shape: [nCtx], dtype: 'i32' },
    o: { data: o, shape: [R, Lq, H, D] },
    n_kv: nKv,
    scale: c.scale,
  };
  const want = refAttn(q, k, v, { R, H, Lq, D, nCtx, nKv, scale: c.scale, keyBias, Rb, kbBeta, qLvl, kLvl });
  return { params, o, want, kBits, vBits };
}

/** Query 0 of a masked case sees no key: exact zeros in every row and head. */
function expectQuery0Zero(c: AttnCase, o: Float32Array): void {
  if (!c.mask) return;
  for (let rr = 0; rr < c.R; rr++) {
    const row = o.subarray(rr * c.Lq * c.H * c.D, (rr * c.Lq + 1) * c.H * c.D);
    expect(row.every((e) => e === 0)).toBe(true);
  }
}

describe.each(backends)('attn on %s', (backend) => {
  it.each(attnCases)(
    '$name: R $R H $H Lq $Lq D $D n_kv $nKv n_ctx $nCtx bias $bias beta $beta mask $mask',
    async (c) => {
      const { params, o, want } = buildAttn(c);
      await addon._ops(backend, 'attn', params);
      expect(relErr(o, want)).toBeLessThan(attnTol(backend, c.D, c.tol ?? 1e-5));
      expectQuery0Zero(c, o);
    },
  );

  it('gives exact zeros for rows whose visible keys all have a -inf bias, never NaN', async () => {
    const R = 2;
    const H = 2;
    const Lq = 5;
    const D = 16;
    const nKv = 70;
    const r = rng(3);
    const q = randArray(R * H * Lq * D, r);
    const k = randArray(R * H * nKv * D, r);
    const v = randArray(R * H * nKv * D, r);
    // Image 0 masks every key through the bias, image 1 only the first 65.
    const keyBias = new Float32Array(2 * nKv).fill(-Infinity);
    keyBias.fill(0.5, nKv + 65, 2 * nKv);
    const kbBeta = new Float32Array([0, 1.5]); // beta 0 with a -inf bias must still mask
    const o = poisoned(R * Lq * H * D);
    await addon._ops(backend, 'attn', {
      q: { data: q, shape: [R, H, Lq, D] },
      k: { data: k, shape: [R, H, nKv, D] },
      v: { data: v, shape: [R, H, nKv, D] },
      key_bias: { data: keyBias, shape: [2, nKv] },
      kb_beta: { data: kbBeta, shape: [H] },
      o: { data: o, shape: [R, Lq, H, D] },
      n_kv: nKv,
      scale: 0.25,
    });
    expect(o.subarray(0, Lq * H * D).every((e) => e === 0)).toBe(true);
    const want = refAttn(q, k, v, { R, H, Lq, D, nCtx: nKv, nKv, scale: 0.25, keyBias, Rb: 2, kbBeta });
    expect(relErr(o.subarray(Lq * H * D), want.subarray(Lq * H * D))).toBeLessThan(1e-5);
  });

  it('rejects invalid parameters with a message and keeps working', async () => {
    const R = 4;
    const H = 2;
    const Lq = 3;
    const D = 8;
    const nCtx = 6;
    const base = (): Record<string, NativeTensor | number | undefined> => ({
      q: { data: randArray(R * H * Lq * D, rng(1)), shape: [R, H, Lq, D] },
      k: { data: randArray(R * H * nCtx * D, rng(2)), shape: [R, H, nCtx, D] },
      v: { data: randArray(R * H * nCtx * D, rng(3)), shape: [R, H, nCtx, D] },
      o: { data: poisoned(R * Lq * H * D), shape: [R, Lq, H, D] },
      n_kv: nCtx,
      scale: 1,
    });
    await expect(addon._ops(backend, 'attn', { ...base(), o: undefined })).rejects.toThrow(
      /attn: q and o must be present, non-empty, contiguous f32/,
    );
    await expect(
      addon._ops(backend, 'attn', {
        ...base(),
        v: { data: new Uint16Array(R * H * nCtx * D), shape: [R, H, nCtx, D], dtype: 'bf16' },
      }),
    ).rejects.toThrow(/attn: k and v must be present, non-empty, contiguous and both f32 or both bf16/);
    await expect(addon._ops(backend, 'attn', { ...base(), n_kv: 7 })).rejects.toThrow(
      /attn: n_kv must be in \[1, n_ctx = 6\], got 7/,
    );
    await expect(addon._ops(backend, 'attn', { ...base(), n_kv: 0 })).rejects.toThrow(
      /n_kv must be in \[1, n_ctx = 6\], got 0/,
    );
    await expect(
      addon._ops(backend, 'attn', { ...base(), key_bias: { data: new Float32Array(3 * nCtx), shape: [3, nCtx] } }),
    ).rejects.toThrow(/key_bias rows \(3\) must divide R = 4/);
    await expect(
      addon._ops(backend, 'attn', { ...base(), q_lvl: { data: new Int32Array(Lq), shape: [Lq], dtype: 'i32' } }),
    ).rejects.toThrow(/q_lvl and k_lvl must be both present or both absent/);
    await expect(
      addon._ops(backend, 'attn', {
        ...base(),
        q_lvl: { data: new Float32Array(Lq), shape: [Lq] },
        k_lvl: { data: new Int32Array(nCtx), shape: [nCtx], dtype: 'i32' },
      }),
    ).rejects.toThrow(/q_lvl must be contiguous i32 \[Lq\] = \[3\]/);
    await expect(
      addon._ops(backend, 'attn', { ...base(), o: { data: poisoned(R * Lq * H * D), shape: [R, H, Lq, D] } }),
    ).rejects.toThrow(/attn: o must be \[R, Lq, H, D\] = \[4, 3, 2, 8\]/);
    await expect(
      addon._ops(backend, 'attn', { ...base(), kb_beta: { data: new Float32Array(3), shape: [3] } }),
    ).rejects.toThrow(/kb_beta must be contiguous f32 \[H\] = \[2\]/);
    const ok = base();
    await addon._ops(backend, 'attn', ok);
    const want = refAttn((ok.q as NativeTensor).data, (ok.k as NativeTensor).data, (ok.v as NativeTensor).data, {
      R,
      H,
      Lq,
      D,
      nCtx,
      nKv: nCtx,
      scale: 1,
    });
    expect(relErr((ok.o as NativeTensor).data, want)).toBeLessThan(attnTol(backend, D, 1e-5));
  });
});

/**
 * The bf16 KV cache (ops.h): qkv_prep stores its f32 k and v rounded to nearest even, and attn
 * widens bf16 k/v exactly, so each op must equal its f32-cache run on the same backend bit for
 * bit (qkv_prep after rounding that run's output; attn on the widened values). attn is also held
 * to the float64 reference on the rounded values, at the f32 cases' tolerances.
 */
describe.each(backends)('bf16 KV cache on %s', (backend) => {
  it.each(attnCases)('attn $name: R $R H $H Lq $Lq D $D n_kv $nKv n_ctx $nCtx mask $mask', async (c) => {
    const { params, o, want, kBits, vBits } = buildAttn(c, /*bf16Kv=*/ true);
    const k = params.k as NativeTensor;
    const v = params.v as NativeTensor;
    await addon._ops(backend, 'attn', params);
    const o16 = poisoned(o.length);
    await addon._ops(backend, 'attn', {
      ...params,
      k: { data: kBits!, shape: k.shape, dtype: 'bf16' },
      v: { data: vBits!, shape: v.shape, dtype: 'bf16' },
      o: { data: o16, shape: (params.o as NativeTensor).shape },
    });
    expect(o16).toEqual(o);
    expect(relErr(o16, want)).toBeLessThan(attnTol(backend, c.D, c.tol ?? 1e-5));
  });

  it.each([
    { R: 2, L: 9, H: 3, D: 64, nCtx: 20, kvPos: 4, pn: 3 },
    { R: 2, L: 37, H: 1, D: 12, nCtx: 50, kvPos: 13 },
    { R: 1, L: 7, H: 2, D: 20, nCtx: 9, kvPos: 1 },
  ])('qkv_prep R $R L $L H $H D $D n_ctx $nCtx kv_pos $kvPos', async (c) => {
    const { R, L, H, D, nCtx, kvPos } = c;
    const r = rng(R * 100 + L * 10 + D + 7);
    const qkv = randArray(R * L * 3 * H * D, r, -2, 2);
    const qScale = randArray(H, r, 1, 100);
    const ropePos = c.pn ? gridPos(c.pn) : randArray(L * 2, r, 0, 32);
    const common = {
      qkv: { data: qkv, shape: [R, L, 3, H * D] },
      q_scale: { data: qScale, shape: [H] },
      rope_pos: { data: ropePos, shape: [L, 2] },
      kv_pos: kvPos,
      l2norm: 1,
      rope: 1,
      rope_base: 10000,
    };
    const n = R * H * nCtx * D;
    const q32 = poisoned(R * H * L * D);
    const k32 = poisoned(n);
    const v32 = poisoned(n);
    await addon._ops(backend, 'qkv_prep', {
      ...common,
      q_out: { data: q32, shape: [R, H, L, D] },
      k_cache: { data: k32, shape: [R, H, nCtx, D] },
      v_cache: { data: v32, shape: [R, H, nCtx, D] },
    });
    const POISON = 0x7fc1; // a bf16 NaN pattern: rows outside [kv_pos, kv_pos + L) keep it
    const q16 = poisoned(R * H * L * D);
    const k16 = new Uint16Array(n).fill(POISON);
    const v16 = new Uint16Array(n).fill(POISON);
    await addon._ops(backend, 'qkv_prep', {
      ...common,
      q_out: { data: q16, shape: [R, H, L, D] },
      k_cache: { data: k16, shape: [R, H, nCtx, D], dtype: 'bf16' },
      v_cache: { data: v16, shape: [R, H, nCtx, D], dtype: 'bf16' },
    });
    expect(q16).toEqual(q32);
    const kWant = toBf16(k32).bits;
    const vWant = toBf16(v32).bits;
    for (let rh = 0; rh < R * H; rh++)
      for (let p = 0; p < nCtx; p++) {
        const at = (rh * nCtx + p) * D;
        const written = p >= kvPos && p < kvPos + L;
        expect(Array.from(k16.subarray(at, at + D))).toEqual(
          written ? Array.from(kWant.subarray(at, at + D)) : new Array<number>(D).fill(POISON),
        );
        expect(Array.from(v16.subarray(at, at + D))).toEqual(
          written ? Array.from(vWant.subarray(at, at + D)) : new Array<number>(D).fill(POISON),
        );
      }
  });
});

describe('attn and qkv_prep on the other CPU SIMD levels (child processes)', () => {
  // The micro-kernel's vector width (32/16/8 columns) and the column tails differ per level.
  const picked = attnCases.filter((c) => /bias per row|partial query block|D 6|VQVAE|one query/.test(c.name));
  const built = picked.map((c) => buildAttn(c));
  const R = 2;
  const L = 9;
  const H = 3;
  const D = 64;
  const qkv = randArray(R * L * 3 * H * D, rng(91), -2, 2);
  const qScale = randArray(H, rng(92), 1, 100);
  const ropePos = gridPos(3);
  const prepWant = refQkvPrep(qkv, R, L, H, D, { qScale, ropePos, l2norm: true, rope: true });

  it.each(['scalar', 'avx2'])('AV_SIMD=%s matches the float64 reference', (level) => {
    const { detail, outputs } = runOpsAtSimdLevel(level, [
      ...built.map((b) => ({ op: 'attn' as const, params: b.params, out: 'o' })),
      {
        op: 'qkv_prep',
        out: 'q_out',
        params: {
          qkv: { data: qkv, shape: [R, L, 3, H * D] },
          q_scale: { data: qScale, shape: [H] },
          rope_pos: { data: ropePos, shape: [L, 2] },
          q_out: { data: poisoned(R * H * L * D), shape: [R, H, L, D] },
          k_cache: { data: poisoned(R * H * L * D), shape: [R, H, L, D] },
          v_cache: { data: poisoned(R * H * L * D), shape: [R, H, L, D] },
        },
      },
    ]);
    // AV_SIMD only caps the level: a machine without AVX2 runs the baseline kernels for 'avx2'.
    expect(detail).toMatch(level === 'scalar' ? /simd=scalar/ : /simd=(avx2|scalar)/);
    built.forEach((b, i) => {
      expect(relErr(outputs[i]!, b.want), picked[i]!.name).toBeLessThan(picked[i]!.tol ?? 1e-5);
      expectQuery0Zero(picked[i]!, outputs[i]!);
    });
    expect(relErr(outputs[built.length]!, prepWant.q)).toBeLessThan(1e-6);
  });
});
