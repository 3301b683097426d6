/**
 * `diffusion_step` (the VARSR refiner's sampler step, spec 6.2; ops.h) on every available
 * backend against a plain reference: the element arithmetic emulated in fp32 with Math.fround,
 * the Gaussian draws from a Philox4x32-10 reimplementation (checked against Random123 in
 * sample.test.ts) with Box-Muller in float64. Random, non-zero, odd-sized inputs (B 3, 7 tokens,
 * Cv 6). Tolerance 1e-5 absolute on values of order 1: the only freedom a backend has is FMA
 * contraction (a rounding of ~6e-8 relative, times c_x up to ~10 here) and its float64 libm
 * (below fp32 resolution after the cast).
 */
import { describe, expect, it } from 'vitest';

import type { OpParams } from '../../src/binding/types.js';
import { addon, availableBackends, maxAbs, randn, rng } from '../helpers/index.js';
import { philox4x32_10, philoxKey } from '../helpers/philox.js';

const backends = availableBackends();

/** The op's noise [B*L, Cv] for image keys, a stream and a seed. */
function noise(keys: readonly number[], L: number, Cv: number, stream: number, seed: bigint): Float32Array {
  const out = new Float32Array(keys.length * L * Cv);
  keys.forEach((key, b) => {
    for (let l = 0; l < L; l++)
      for (let q = 0; q < Cv / 2; q++) {
        const w = philox4x32_10([key, stream, l, q], philoxKey(seed));
        const u1 = ((w[0]! >>> 8) + 1) * 2 ** -24;
        const u2 = (w[1]! >>> 8) * 2 ** -24;
        const r = Math.sqrt(-2 * Math.log(u1));
        out[(b * L + l) * Cv + 2 * q] = r * Math.cos(2 * Math.PI * u2);
        out[(b * L + l) * Cv + 2 * q + 1] = r * Math.sin(2 * Math.PI * u2);
      }
  });
  return out;
}

interface Consts {
  w: number;
  c_x: number;
  c_eps: number;
  coef1: number;
  coef2: number;
  log_beta: number;
  post_log_var: number;
}

/** ops.h diffusion_step in fp32 (Math.fround after every operation). */
function reference(
  x: Float32Array,
  o: Float32Array,
  n: Float32Array,
  Cv: number,
  halves: number,
  useNoise: boolean,
  k: Consts,
) {
  const f = Math.fround;
  const N = x.length / Cv;
  const c = Object.fromEntries(Object.entries(k).map(([a, v]) => [a, f(v)])) as unknown as Consts;
  const xo = new Float32Array(x.length);
  const eo = new Float32Array(x.length);
  for (let r = 0; r < N; r++)
    for (let ch = 0; ch < Cv; ch++) {
      const ec = o[r * 2 * Cv + ch]!;
      const v = o[r * 2 * Cv + Cv + ch]!;
      const eps = halves === 2 ? f(f(f(1 + c.w) * ec) - f(c.w * o[(N + r) * 2 * Cv + ch]!)) : ec;
      const xv = x[r * Cv + ch]!;
      const x0 = Math.min(1, Math.max(-1, f(f(c.c_x * xv) - f(c.c_eps * eps))));
      const mean = f(f(c.coef1 * x0) + f(c.coef2 * xv));
      let out = mean;
      if (useNoise) {
        const fr = f(f(v + 1) / 2);
        const lv = f(f(fr * c.log_beta) + f(f(1 - fr) * c.post_log_var));
        out = f(mean + f(f(Math.exp(f(0.5 * lv))) * n[r * Cv + ch]!));
      }
      xo[r * Cv + ch] = out;
      eo[r * Cv + ch] = eps;
    }
  return { x: xo, eps: eo };
}

// One mid-schedule step (n = 4 of spec 6.2's respaced cosine schedule, rounded to fp32).
const K = {
  w: 2.5,
  c_x: 1.6552,
  c_eps: 1.3018,
  coef1: 0.4113,
  coef2: 0.5702,
  log_beta: -1.2039,
  post_log_var: -1.9571,
};

describe.each(backends)('diffusion_step on %s', (backend) => {
  const B = 3;
  const L = 7;
  const Cv = 6;
  const keys = [4, 0, 11];
  const seed = 0x1234_5678_9abcn;
  const r = rng(17);
  const x0 = randn(B * L * Cv, r);
  const o2 = randn(2 * B * L * 2 * Cv, r, 0.8);

  async function op(x: Float32Array, params: OpParams, eps?: Float32Array) {
    const p: OpParams = {
      ...params,
      x: { data: x, shape: [B * L, Cv] },
      image_key: { data: Int32Array.from(keys), shape: [B], dtype: 'i32' },
      tokens: L,
      seed,
    };
    if (eps) p.eps_out = { data: eps, shape: [B * L, Cv] };
    await addon._ops(backend, 'diffusion_step', p);
  }

  it('init draws the keyed Philox Gaussians, and nothing else', async () => {
    const x = new Float32Array(B * L * Cv).fill(7);
    await op(x, { init: 1, stream: 0x10a });
    expect(maxAbs(x, noise(keys, L, Cv, 0x10a, seed))).toBeLessThan(1e-6);
    expect(Math.abs(x.reduce((a, v) => a + v, 0) / x.length)).toBeLessThan(0.5);
  });

  it('a guided step with noise (two halves) matches the fp32 reference, eps_out included', async () => {
    const x = x0.slice();
    const eps = new Float32Array(x.length);
    await op(x, { o: { data: o2, shape: [2 * B * L, 2 * Cv] }, halves: 2, noise: 1, stream: 0x104, ...K }, eps);
    const ref = reference(x0, o2, noise(keys, L, Cv, 0x104, seed), Cv, 2, true, K);
    expect(maxAbs(x, ref.x)).toBeLessThan(1e-5);
    expect(maxAbs(eps, ref.eps)).toBeLessThan(1e-5);
    expect(maxAbs(x, x0)).toBeGreaterThan(0.1);
  });

  it('one half and no noise: eps is the conditional eps and x the posterior mean', async () => {
    const o1 = o2.subarray(0, B * L * 2 * Cv).slice();
    const x = x0.slice();
    const eps = new Float32Array(x.length);
    await op(x, { o: { data: o1, shape: [B * L, 2 * Cv] }, halves: 1, noise: 0, stream: 0x100, ...K }, eps);
    const ref = reference(x0, o1, new Float32Array(x.length), Cv, 1, false, K);
    expect(maxAbs(x, ref.x)).toBeLessThan(1e-5);
    for (let rr = 0; rr < B * L; rr++) for (let c = 0; c < Cv; c++) expect(eps[rr * Cv + c]).toBe(o1[rr * 2 * Cv + c]);
  });

  it("a tile's draw depends on its key, not on the batch around it", async () => {
    const one = new Float32Array(L * Cv);
    await addon._ops(backend, 'diffusion_step', {
      x: { data: one, shape: [L, Cv] },
      image_key: { data: Int32Array.from([11]), shape: [1], dtype: 'i32' },
      tokens: L,
      seed,
      init: 1,
      stream: 0x10a,
    });
    const all = new Float32Array(B * L * Cv);
    await op(all, { init: 1, stream: 0x10a });
    expect(Array.from(one)).toEqual(Array.from(all.subarray(2 * L * Cv)));
  });

  it('rejects an odd channel count, a wrong o and a wrong key count, naming them', async () => {
    const bad = (p: OpParams) => addon._ops(backend, 'diffusion_step', p);
    await expect(
      bad({
        x: { data: new Float32Array(L * 5), shape: [L, 5] },
        image_key: { data: Int32Array.from([0]), shape: [1], dtype: 'i32' },
        tokens: L,
        init: 1,
      }),
    ).rejects.toThrow('diffusion_step: the channel count Cv = 5 must be even');
    await expect(op(x0.slice(), { o: { data: o2, shape: [2 * B * L, 2 * Cv] }, halves: 1 })).rejects.toThrow(
      `diffusion_step: o [1, 1, ${2 * B * L}, ${2 * Cv}] must be [halves * N, 2 * Cv] = [${B * L}, ${2 * Cv}]`,
    );
    await expect(
      bad({
        x: { data: x0.slice(), shape: [B * L, Cv] },
        image_key: { data: Int32Array.from([0, 1]), shape: [2], dtype: 'i32' },
        tokens: L,
        init: 1,
      }),
    ).rejects.toThrow('diffusion_step: image_key must be i32 [B] with B = 3');
  });
});
