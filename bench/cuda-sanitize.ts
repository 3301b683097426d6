/**
 * CUDA smoke test: runs every op of core/ops.h once on the 'cuda' backend, through every
 * kernel variant the launchers can pick (skinny / 64x64 / 128x128 tensor-core GEMM, the fp32
 * SIMT GEMM, implicit-GEMM conv, the 4- and 8-warp D=64 attention and the generic-D one, all
 * four resample modes, upsample_accum with and without Phi, greedy and sampled decoding), and
 * compares each result with the CPU backend on the same random inputs. Small shapes, so that
 * it also runs under compute-sanitizer (memcheck, racecheck) in seconds:
 *
 *   npx tsx bench/cuda-sanitize.ts
 *   compute-sanitizer --tool memcheck node --import tsx bench/cuda-sanitize.ts
 *
 * Output buffers are poisoned with NaN before each run (an unwritten element fails the
 * comparison). Tolerances: relative L2 error 2e-2 where the GPU rounds operands to bf16/f16
 * (linear, conv, attention with 16-bit weights or the D=64 path), 1e-5 for fp32 paths, and
 * exact equality for ops built to agree to the bit (resample, upsample_accum, vq_*, sample,
 * copy). Exits 1 on any mismatch or error; prints one line per case.
 */
import type { NativeTensor, OpName, OpParams } from '../src/binding/types.js';
import { addon, poisoned, randArray, relErr, rng, toBf16, toF16 } from '../test/helpers/index.js';

// AV_SMOKE_BACKEND=cpu runs the harness against the CPU itself (a dry run on machines without
// a GPU: every case must then agree exactly).
const target = process.env.AV_SMOKE_BACKEND ?? 'cuda';
const info = addon.backendInfo().find((b) => b.name === target);
if (!info?.available) {
  console.log(`cuda-sanitize: backend '${target}' unavailable (${info?.reason ?? 'not compiled'}); nothing to do`);
  process.exit(0);
}

type Check = { kind: 'rel'; tol: number } | { kind: 'exact' };
const REL16: Check = { kind: 'rel', tol: 2e-2 };
const REL32: Check = { kind: 'rel', tol: 1e-5 };
const EXACT: Check = { kind: 'exact' };

interface Case {
  name: string;
  op: OpName;
  /** Fresh params (inputs + poisoned outputs) for one backend. */
  make: () => OpParams;
  /** Output keys to compare. */
  outs: string[];
  check: Check;
}

const f32 = (data: Float32Array, shape: number[]): NativeTensor => ({ data, shape, dtype: 'f32' });
const i32 = (data: Int32Array, shape: number[]): NativeTensor => ({ data, shape, dtype: 'i32' });
const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

function weights(shape: number[], seed: number, dtype: 'f32' | 'f16' | 'bf16'): NativeTensor {
  const w = randArray(prod(shape), rng(seed), -0.5, 0.5);
  if (dtype === 'f32') return f32(w, shape);
  const r = dtype === 'bf16' ? toBf16(w) : toF16(w);
  return { data: r.bits, shape, dtype };
}

/** Read-and-written operands: copied, never poisoned. */
const INOUT = ['k_cache', 'v_cache', 'f_hat'];

/** Copies inputs (so both backends see identical data) and re-poisons outputs. */
function clone(p: OpParams, outs: string[]): OpParams {
  const q: OpParams = {};
  for (const [k, v] of Object.entries(p)) {
    if (v && typeof v === 'object' && 'data' in v) {
      const t = v as NativeTensor;
      const poison = outs.includes(k) && !INOUT.includes(k) && t.data instanceof Float32Array;
      const data = poison ? poisoned(t.data.length) : t.data.slice();
      q[k] = { ...t, data } as NativeTensor;
    } else q[k] = v;
  }
  return q;
}

const cases: Case[] = [];

// ---- linear ----------------------------------------------------------------------------------
function linearCase(
  name: string,
  M: number,
  K: number,
  N: number,
  wt: 'f32' | 'f16' | 'bf16',
  extra: Partial<{ bias: boolean; gate: boolean; res: boolean; act: number; batch: number; batchW: number }> = {},
): void {
  const batch = extra.batch ?? 1;
  const bw = extra.batchW ?? 1;
  cases.push({
    name: `linear ${name}`,
    op: 'linear',
    outs: ['y'],
    check: wt === 'f32' ? REL32 : REL16,
    make: () => {
      const r = rng(M * 7 + K * 3 + N);
      const p: OpParams = {
        x: f32(randArray(batch * M * K, r), batch > 1 ? [batch, M, K] : [M, K]),
        w: weights(bw > 1 ? [bw, N, K] : [N, K], K + N, wt),
        y: f32(poisoned(batch * M * N), batch > 1 ? [batch, M, N] : [M, N]),
        act: extra.act ?? 0,
      };
      if (extra.bias) p.bias = f32(randArray(N, r), [N]);
      if (extra.gate) {
        p.gate = f32(randArray(2 * N, r), [2, N]);
        p.rows_per_group = Math.ceil(M / 2);
      }
      if (extra.res) p.res = f32(randArray(batch * M * N, r), batch > 1 ? [batch, M, N] : [M, N]);
      return p;
    },
  });
}
linearCase('skinny M=5 bf16', 5, 256, 96, 'bf16', { bias: true, act: 1 });
linearCase('skinny M=13 f16 gate+res', 13, 512, 70, 'f16', { bias: true, gate: true, res: true });
linearCase('tiled 64 M=100 bf16', 100, 320, 200, 'bf16', { bias: true, act: 2 });
linearCase('tiled 128 M=N=1536 bf16', 1536, 64, 1536, 'bf16', { res: true });
linearCase('tiled K%8!=0 (sync W) f16', 40, 37, 33, 'f16', { bias: true });
linearCase('tiled batched weights bf16', 20, 64, 48, 'bf16', { batch: 3, batchW: 3 });
linearCase('simt f32', 70, 100, 90, 'f32', { bias: true, gate: true, act: 3 });

// ---- conv2d ----------------------------------------------------------------------------------
function convCase(
  name: string,
  B: number,
  Cin: number,
  H: number,
  W: number,
  Cout: number,
  k: number,
  wt: 'f32' | 'f16' | 'bf16',
  stride = 1,
  pad = 1,
  dil = 1,
): void {
  const Ho = Math.floor((H + 2 * pad - dil * (k - 1) - 1) / stride) + 1;
  const Wo = Math.floor((W + 2 * pad - dil * (k - 1) - 1) / stride) + 1;
  cases.push({
    name: `conv2d ${name}`,
    op: 'conv2d',
    outs: ['y'],
    check: wt === 'f32' ? REL32 : REL16,
    make: () => {
      const r = rng(Cin * 11 + Cout);
      return {
        x: f32(randArray(B * Cin * H * W, r), [B, Cin, H, W]),
        w: weights([Cout, Cin, k, k], Cin + Cout + k, wt),
        bias: f32(randArray(Cout, r), [Cout]),
        res: f32(randArray(B * Cout * Ho * Wo, r), [B, Cout, Ho, Wo]),
        y: f32(poisoned(B * Cout * Ho * Wo), [B, Cout, Ho, Wo]),
        stride,
        pad_t: pad,
        pad_l: pad,
        pad_b: pad,
        pad_r: pad,
        dilation: dil,
        act: 2,
      };
    },
  });
}
convCase('3x3 bf16', 2, 8, 12, 13, 16, 3, 'bf16');
convCase('3x3 s2 f16', 1, 16, 17, 15, 24, 3, 'f16', 2, 1);
convCase('3x3 dil2 f32', 1, 9, 10, 10, 32, 3, 'f32', 1, 2, 2);
convCase('1x1 bf16', 1, 64, 8, 8, 40, 1, 'bf16', 1, 0);

// ---- norms and elementwise ---------------------------------------------------------------------
cases.push({
  name: 'layernorm affine+modulate',
  op: 'layernorm',
  outs: ['y'],
  check: REL32,
  make: () => {
    const r = rng(1);
    return {
      x: f32(randArray(6 * 200, r), [6, 200]),
      weight: f32(randArray(200, r), [200]),
      bias: f32(randArray(200, r), [200]),
      scale: f32(randArray(2 * 200, r), [2, 200]),
      shift: f32(randArray(2 * 200, r), [2, 200]),
      y: f32(poisoned(6 * 200), [6, 200]),
      rows_per_group: 3,
    };
  },
});
cases.push({
  name: 'groupnorm silu',
  op: 'groupnorm',
  outs: ['y'],
  check: REL32,
  make: () => {
    const r = rng(2);
    return {
      x: f32(randArray(2 * 64 * 300, r), [2, 64, 300]),
      weight: f32(randArray(64, r), [64]),
      bias: f32(randArray(64, r), [64]),
      y: f32(poisoned(2 * 64 * 300), [2, 64, 300]),
      groups: 32,
      silu: 1,
    };
  },
});
cases.push({
  name: 'modulate',
  op: 'modulate',
  outs: ['y'],
  check: REL32,
  make: () => {
    const r = rng(3);
    return {
      x: f32(randArray(8 * 64, r), [8, 64]),
      scale: f32(randArray(2 * 64, r), [2, 64]),
      shift: f32(randArray(2 * 64, r), [2, 64]),
      y: f32(poisoned(8 * 64), [8, 64]),
      rows_per_group: 4,
    };
  },
});
for (const [kind, bShape] of [
  [0, [3, 50]],
  [1, [4, 1]],
] as const)
  cases.push({
    name: `binary kind ${kind} b ${bShape.join('x')}`,
    op: 'binary',
    outs: ['y'],
    check: REL32,
    make: () => {
      const r = rng(4 + kind);
      return {
        a: f32(randArray(12 * 50, r), [12, 50]),
        b: f32(randArray(prod([...bShape]), r), [...bShape]),
        y: f32(poisoned(12 * 50), [12, 50]),
        kind,
        alpha: 0.5,
        beta: 1.5,
        b_div: 2,
      };
    },
  });
cases.push({
  name: 'unary gelu',
  op: 'unary',
  outs: ['y'],
  check: REL32,
  make: () => ({ x: f32(randArray(1000, rng(6), -4, 4), [1000]), y: f32(poisoned(1000), [1000]), act: 1 }),
});
cases.push({
  name: 'softmax with -inf rows',
  op: 'softmax',
  outs: ['y'],
  check: REL32,
  make: () => {
    const x = randArray(3 * 1500, rng(7), -5, 5);
    for (let i = 0; i < 1500; i += 3) x[i] = -Infinity;
    x.fill(-Infinity, 2 * 1500, 3 * 1500);
    return { x: f32(x, [3, 1500]), y: f32(poisoned(3 * 1500), [3, 1500]), scale: 0.7 };
  },
});
cases.push({
  name: 'copy f32 -> bf16 bits',
  op: 'copy',
  outs: [],
  check: EXACT,
  make: () => ({
    x: f32(randArray(777, rng(8)), [7, 111]),
    y: { data: new Uint16Array(777), shape: [7, 111], dtype: 'bf16' },
  }),
});

// ---- attention -------------------------------------------------------------------------------
// qkv_prep on the spec's 3x3 RoPE grid, into an f32 cache or a bf16 one (k and v rounded).
function qkvPrepCase(kv: 'f32' | 'bf16'): void {
  cases.push({
    name: `qkv_prep l2norm+rope${kv === 'bf16' ? ', bf16 cache' : ''}`,
    op: 'qkv_prep',
    outs: ['q_out', 'k_cache', 'v_cache'],
    check: REL32,
    make: () => {
      const R = 2,
        L = 9,
        H = 3,
        D = 64,
        nCtx = 20;
      const r = rng(9);
      const pos = new Float32Array(2 * L);
      for (let l = 0; l < L; l++) {
        pos[2 * l] = (Math.floor(l / 3) / 3) * 32;
        pos[2 * l + 1] = ((l % 3) / 3) * 32;
      }
      const cache = (): NativeTensor => {
        const c = randArray(R * H * nCtx * D, r);
        return kv === 'bf16'
          ? { data: toBf16(c).bits, shape: [R, H, nCtx, D], dtype: 'bf16' }
          : f32(c, [R, H, nCtx, D]);
      };
      return {
        qkv: f32(randArray(R * L * 3 * H * D, r), [R, L, 3, H * D]),
        q_scale: f32(new Float32Array([4, 10, 0.5]), [H]),
        rope_pos: f32(pos, [L, 2]),
        q_out: f32(poisoned(R * H * L * D), [R, H, L, D]),
        k_cache: cache(),
        v_cache: cache(),
        kv_pos: 5,
      };
    },
  });
}
qkvPrepCase('f32');
qkvPrepCase('bf16');
function attnCase(
  name: string,
  R: number,
  H: number,
  Lq: number,
  nKv: number,
  D: number,
  opts: { bias?: boolean; mask?: boolean; scale?: number; bf16Kv?: boolean },
): void {
  cases.push({
    name: `attn ${name}`,
    op: 'attn',
    outs: ['o'],
    check: D === 64 ? REL16 : REL32,
    make: () => {
      const r = rng(R * 100 + Lq + D);
      const nCtx = nKv + 3;
      const kv = (a: Float32Array, shape: number[]): NativeTensor =>
        opts.bf16Kv ? { data: toBf16(a).bits, shape, dtype: 'bf16' } : f32(a, shape);
      const unit = (n: number, s: number) => {
        const a = randArray(n, r);
        for (let i = 0; i < n; i += D) {
          let q = 0;
          for (let d = 0; d < D; d++) q += a[i + d]! * a[i + d]!;
          const f = s / Math.sqrt(q);
          for (let d = 0; d < D; d++) a[i + d]! *= f;
        }
        return a;
      };
      const p: OpParams = {
        q: f32(unit(R * H * Lq * D, opts.scale ?? 4), [R, H, Lq, D]),
        k: kv(unit(R * H * nCtx * D, 1), [R, H, nCtx, D]),
        v: kv(randArray(R * H * nCtx * D, r), [R, H, nCtx, D]),
        o: f32(poisoned(R * Lq * H * D), [R, Lq, H, D]),
        n_kv: nKv,
        scale: 1,
      };
      if (opts.bias) {
        const kb = new Float32Array((R / 2) * nCtx).map(() => Math.log(r() + 1e-6));
        kb[3] = -Infinity;
        p.key_bias = f32(kb, [R / 2, nCtx]);
        p.kb_beta = f32(randArray(H, r, 0, 1), [H]);
      }
      if (opts.mask) {
        const ql = new Int32Array(Lq).map((_, i) => Math.floor((i * 4) / Lq) + (i === 0 ? -1 : 0));
        const kl = new Int32Array(nCtx).map((_, j) => Math.floor((j * 4) / nCtx));
        p.q_lvl = i32(ql, [Lq]);
        p.k_lvl = i32(kl, [nCtx]);
      }
      return p;
    },
  });
}
attnCase('d64 4-warp bias+mask', 2, 3, 70, 150, 64, { bias: true, mask: true });
attnCase('d64 8-warp bias s=30', 2, 24, 384, 200, 64, { bias: true, scale: 30 });
attnCase('generic D=40 mask', 2, 2, 37, 90, 40, { bias: true, mask: true });
attnCase('generic D=640', 2, 1, 20, 64, 640, {});
attnCase('d64 8-warp bias, bf16 KV', 2, 24, 384, 200, 64, { bias: true, scale: 30, bf16Kv: true });
attnCase('d64 4-warp mask, bf16 KV', 2, 3, 70, 150, 64, { mask: true, bf16Kv: true });
attnCase('generic D=40 mask, bf16 KV', 2, 2, 37, 90, 40, { bias: true, mask: true, bf16Kv: true });

// ---- resampling, VQ, sampling ------------------------------------------------------------------
for (const [mode, H, W, Ho, Wo] of [
  [0, 5, 7, 32, 32],
  [1, 32, 32, 13, 9],
  [2, 6, 9, 17, 4],
  [3, 16, 20, 64, 50],
  [3, 90, 70, 16, 16],
] as const)
  cases.push({
    name: `resample mode ${mode} ${H}x${W}->${Ho}x${Wo}`,
    op: 'resample',
    outs: ['y'],
    check: EXACT,
    make: () => ({
      x: f32(randArray(3 * H * W, rng(mode + H)), [3, H, W]),
      y: f32(poisoned(3 * Ho * Wo), [3, Ho, Wo]),
      mode,
    }),
  });
for (const [phi, pn, pnNext] of [
  [true, 3, 4],
  [false, 32, 0],
  [true, 1, 2],
] as const)
  cases.push({
    name: `upsample_accum pn ${pn} phi ${phi} next ${pnNext}`,
    op: 'upsample_accum',
    outs: pnNext ? ['f_hat', 'next'] : ['f_hat'],
    check: EXACT,
    make: () => {
      const B = 2,
        Cv = 32,
        G = 32;
      const r = rng(pn * 3 + pnNext);
      const p: OpParams = {
        h: f32(randArray(B * Cv * pn * pn, r), [B, Cv, pn, pn]),
        f_hat: f32(randArray(B * Cv * G * G, r), [B, Cv, G, G]),
        phi_ratio: 0.5,
      };
      if (phi) {
        p.phi_w = weights([Cv, Cv, 3, 3], 77, 'bf16');
        p.phi_b = f32(randArray(Cv, r), [Cv]);
      }
      if (pnNext) {
        p.next = f32(poisoned(B * pnNext * pnNext * Cv), [B, pnNext * pnNext, Cv]);
        p.pn_next = pnNext;
      }
      return p;
    },
  });
cases.push({
  name: 'vq_lookup bf16 channel-major',
  op: 'vq_lookup',
  outs: ['y'],
  check: EXACT,
  make: () => ({
    idx: i32(
      new Int32Array(2 * 81).map((_, i) => (i * 97) % 4096),
      [2, 81],
    ),
    codebook: weights([4096, 32], 5, 'bf16'),
    y: f32(poisoned(2 * 32 * 81), [2, 32, 81]),
    channel_major: 1,
  }),
});
cases.push({
  name: 'vq_nearest f32 token-major',
  op: 'vq_nearest',
  outs: [],
  check: EXACT,
  make: () => ({
    z: f32(randArray(2 * 50 * 32, rng(12), -0.5, 0.5), [2, 50, 32]),
    codebook: weights([4096, 32], 6, 'f32'),
    idx: i32(new Int32Array(100).fill(-7), [2, 50]),
    channel_major: 0,
  }),
});
for (const [topK, topP] of [
  [1, 0.75],
  [0, 0.9],
  [50, 0.6],
  [300, 0],
] as const)
  cases.push({
    name: `sample cfg top_k ${topK} top_p ${topP}`,
    op: 'sample',
    outs: [],
    check: EXACT,
    make: () => ({
      logits: f32(randArray(4 * 9 * 4096, rng(13 + topK), -3, 3), [4, 9, 4096]),
      image_key: i32(new Int32Array([11, 12]), [2]),
      idx: i32(new Int32Array(18).fill(-7), [2, 9]),
      cfg: 1,
      t: 1.5,
      top_k: topK,
      top_p: topP,
      seed: 1234n,
      scale: 3,
    }),
  });

// ---- run -------------------------------------------------------------------------------------
/** bf16 bits widened to f32. */
function widen(bits: Uint16Array): Float32Array {
  const u = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i]! << 16;
  return new Float32Array(u.buffer);
}

function compare(a: NativeTensor, b: NativeTensor, check: Check): { ok: boolean; err: number } {
  if (check.kind === 'rel' && a.dtype === 'bf16' && a.data instanceof Uint16Array) {
    // A bf16 cache written by both backends: an ulp of f32 difference can round either way.
    const e = relErr(widen(a.data), widen(b.data as Uint16Array));
    return { ok: e < Math.max(check.tol, 8e-3), err: e };
  }
  if (check.kind === 'exact' || !(a.data instanceof Float32Array)) {
    const x = a.data,
      y = b.data;
    let bad = 0;
    for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) bad++;
    return { ok: bad === 0, err: bad };
  }
  const e = relErr(a.data, b.data as Float32Array);
  return { ok: e < check.tol, err: e };
}

// AV_SMOKE_ONLY=<regex> runs the matching cases only (racecheck: the attention and reduction kernels).
const only = process.env.AV_SMOKE_ONLY ? new RegExp(process.env.AV_SMOKE_ONLY) : undefined;
const picked = only ? cases.filter((c) => only.test(c.name) || only.test(c.op)) : cases;
let failed = 0;
for (const c of picked) {
  const base = c.make();
  // Outputs of ops whose outputs are not f32 (idx, bf16 copy) are compared whole.
  const outKeys = c.outs.length ? c.outs : Object.keys(base).filter((k) => ['y', 'idx'].includes(k));
  const pc = clone(base, outKeys);
  const pg = clone(base, outKeys);
  try {
    await addon._ops('cpu', c.op, pc);
    await addon._ops(target, c.op, pg);
    const parts = outKeys.map((k) => compare(pg[k] as NativeTensor, pc[k] as NativeTensor, c.check));
    const ok = parts.every((p) => p.ok);
    if (!ok) failed++;
    const detail = parts
      .map((p, i) => `${outKeys[i]}=${c.check.kind === 'exact' ? `${p.err} differ` : p.err.toExponential(2)}`)
      .join(' ');
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${c.name.padEnd(44)} ${detail}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${c.name.padEnd(44)} threw: ${e instanceof Error ? e.message : String(e)}`);
  }
}
console.log(`${picked.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
