/**
 * Float64 references for the normalisation, elementwise and attention ops of core/ops.h,
 * written from the spec (sections 0, 4.2, 4.4, 4.5, 7, 11.4) and the ops.h comments, not from
 * the C++ kernels. Arrays are row-major; results are Float64Array. The only deliberate fp32
 * step is the RoPE angle (ropeAngles), which the spec defines in fp32.
 */

/** Per-row mean and biased variance of x viewed as [M, C]. */
function rowMoments(x: ArrayLike<number>, off: number, n: number): { mean: number; variance: number } {
  let s = 0;
  for (let i = 0; i < n; i++) s += x[off + i]!;
  const mean = s / n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (x[off + i]! - mean) ** 2;
  return { mean, variance: v / n };
}

/** Options of refLayerNorm; every operand is optional as in av_layernorm_params. */
export interface LayerNormRefOptions {
  /** Affine weight [C]. */
  weight?: ArrayLike<number>;
  /** Affine bias [C]. */
  bias?: ArrayLike<number>;
  /** AdaLN scale [G, C] (row-group broadcast). */
  scale?: ArrayLike<number>;
  /** AdaLN shift [G, C]. */
  shift?: ArrayLike<number>;
  /** Default 1e-6. */
  eps?: number;
  /** Rows of x per row of scale/shift; default 1. */
  rowsPerGroup?: number;
}

/** y = (LN(x)*weight + bias) * (1 + scale[g]) + shift[g], x [M, C], g = m / rowsPerGroup. */
export function refLayerNorm(x: ArrayLike<number>, M: number, C: number, o: LayerNormRefOptions = {}): Float64Array {
  const eps = o.eps ?? 1e-6;
  const rpg = o.rowsPerGroup ?? 1;
  const y = new Float64Array(M * C);
  for (let m = 0; m < M; m++) {
    const { mean, variance } = rowMoments(x, m * C, C);
    const rstd = 1 / Math.sqrt(variance + eps);
    const g = Math.floor(m / rpg);
    for (let c = 0; c < C; c++) {
      let v = (x[m * C + c]! - mean) * rstd;
      if (o.weight) v *= o.weight[c]!;
      if (o.bias) v += o.bias[c]!;
      if (o.scale) v *= 1 + o.scale[g * C + c]!;
      if (o.shift) v += o.shift[g * C + c]!;
      y[m * C + c] = v;
    }
  }
  return y;
}

/** y = x * (1 + scale[g]) + shift[g], x [M, C], g = m / rowsPerGroup. */
export function refModulate(
  x: ArrayLike<number>,
  M: number,
  C: number,
  scale: ArrayLike<number>,
  shift: ArrayLike<number>,
  rowsPerGroup: number,
): Float64Array {
  const y = new Float64Array(M * C);
  for (let m = 0; m < M; m++) {
    const g = Math.floor(m / rowsPerGroup);
    for (let c = 0; c < C; c++) y[m * C + c] = x[m * C + c]! * (1 + scale[g * C + c]!) + shift[g * C + c]!;
  }
  return y;
}

/**
 * kind 0: y = a + alpha*b; kind 1: y = a * (beta + alpha*b). a [M, N]; b [Mb, Nb] with Nb in
 * {N, 1}; row m of a uses row floor(m / bDiv) % Mb of b.
 */
export function refBinary(
  a: ArrayLike<number>,
  M: number,
  N: number,
  b: ArrayLike<number>,
  Mb: number,
  Nb: number,
  kind: number,
  alpha: number,
  beta: number,
  bDiv: number,
): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    const rb = Math.floor(m / bDiv) % Mb;
    for (let n = 0; n < N; n++) {
      const bv = b[rb * Nb + (Nb === 1 ? 0 : n)]!;
      const av = a[m * N + n]!;
      y[m * N + n] = kind === 0 ? av + alpha * bv : av * (beta + alpha * bv);
    }
  }
  return y;
}

/** av_act: 0 none, 1 GELU_tanh, 2 SiLU, 3 sigmoid (spec 0). */
export function refAct(x: number, act: number): number {
  switch (act) {
    case 1:
      return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
    case 2:
      return x / (1 + Math.exp(-x));
    case 3:
      return 1 / (1 + Math.exp(-x));
    default:
      return x;
  }
}

export function refUnary(x: ArrayLike<number>, act: number): Float64Array {
  return Float64Array.from(x, (v) => refAct(v, act));
}

/** Row softmax of scale*x over [M, N]; -inf entries give 0; an all -inf row gives zeros. */
export function refSoftmax(x: ArrayLike<number>, M: number, N: number, scale: number): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    let mx = -Infinity;
    for (let n = 0; n < N; n++) {
      const v = x[m * N + n]!;
      if (v !== -Infinity) mx = Math.max(mx, scale * v);
    }
    if (mx === -Infinity) continue;
    let s = 0;
    for (let n = 0; n < N; n++) {
      const v = x[m * N + n]!;
      const p = v === -Infinity ? 0 : Math.exp(scale * v - mx);
      y[m * N + n] = p;
      s += p;
    }
    for (let n = 0; n < N; n++) y[m * N + n]! /= s;
  }
  return y;
}

/** GroupNorm over x [B, C, S] with `groups` groups, biased variance, optional affine and SiLU. */
export function refGroupNorm(
  x: ArrayLike<number>,
  B: number,
  C: number,
  S: number,
  groups: number,
  eps: number,
  weight?: ArrayLike<number>,
  bias?: ArrayLike<number>,
  silu = false,
): Float64Array {
  const y = new Float64Array(B * C * S);
  const cg = C / groups;
  for (let b = 0; b < B; b++)
    for (let g = 0; g < groups; g++) {
      const off = (b * C + g * cg) * S;
      const { mean, variance } = rowMoments(x, off, cg * S);
      const rstd = 1 / Math.sqrt(variance + eps);
      for (let c = g * cg; c < (g + 1) * cg; c++)
        for (let s = 0; s < S; s++) {
          const i = (b * C + c) * S + s;
          let v = (x[i]! - mean) * rstd;
          if (weight) v *= weight[c]!;
          if (bias) v += bias[c]!;
          y[i] = silu ? refAct(v, 2) : v;
        }
    }
  return y;
}

/**
 * RoPE angles of spec 4.2 for head dim D (D % 4 == 0), in fp32 as the reference computes
 * them: theta_i = fp32(1 / fp32(base ^ fp32(4i / D))), phi = fp32(t * theta). Returns
 * phi[p] for the D/2 pairs: p < D/4 use tx, p >= D/4 use ty.
 */
export function ropeAngles(tx: number, ty: number, D: number, base: number): number[] {
  const f = Math.fround;
  const n4 = D / 4;
  const phi: number[] = [];
  for (let p = 0; p < D / 2; p++) {
    const i = p < n4 ? p : p - n4;
    const theta = f(1 / f(Math.pow(base, f((4 * i) / D))));
    phi.push(f((p < n4 ? tx : ty) * theta));
  }
  return phi;
}

/** Rotates pairs (x[2p], x[2p+1]) of one head vector by phi[p] (spec 4.2), in float64. */
export function ropeRotate(x: ArrayLike<number>, phi: number[]): Float64Array {
  const y = new Float64Array(x.length);
  for (let p = 0; p < phi.length; p++) {
    const c = Math.cos(phi[p]!);
    const s = Math.sin(phi[p]!);
    const a = x[2 * p]!;
    const b = x[2 * p + 1]!;
    y[2 * p] = a * c - b * s;
    y[2 * p + 1] = a * s + b * c;
  }
  return y;
}

/** Options of refQkvPrep (av_qkv_prep_params). */
export interface QkvPrepRefOptions {
  /** Per-head q multiplier [H] applied with the L2 norm; absent = 1. */
  qScale?: ArrayLike<number>;
  /** (tx, ty) per token [L, 2]; needed when rope. */
  ropePos?: ArrayLike<number>;
  l2norm: boolean;
  rope: boolean;
  ropeBase?: number;
}

/**
 * Splits qkv [R, L, 3, H, D] into q, k, v [R, H, L, D] with the per-head L2 norm (q times
 * qScale[h]) and RoPE applied to q and k after it (spec 4.2, 4.5).
 */
export function refQkvPrep(
  qkv: ArrayLike<number>,
  R: number,
  L: number,
  H: number,
  D: number,
  o: QkvPrepRefOptions,
): { q: Float64Array; k: Float64Array; v: Float64Array } {
  const q = new Float64Array(R * H * L * D);
  const k = new Float64Array(R * H * L * D);
  const v = new Float64Array(R * H * L * D);
  for (let r = 0; r < R; r++)
    for (let l = 0; l < L; l++) {
      const phi = o.rope ? ropeAngles(o.ropePos![2 * l]!, o.ropePos![2 * l + 1]!, D, o.ropeBase ?? 10000) : null;
      for (let h = 0; h < H; h++)
        for (let part = 0; part < 3; part++) {
          const src = (((r * L + l) * 3 + part) * H + h) * D;
          let vec: Float64Array = Float64Array.from({ length: D }, (_, d) => qkv[src + d]!);
          if (part < 2 && o.l2norm) {
            const n = Math.max(Math.sqrt(vec.reduce((s, e) => s + e * e, 0)), 1e-12);
            const mul = part === 0 && o.qScale ? o.qScale[h]! : 1;
            vec = vec.map((e) => (e / n) * mul);
          }
          if (part < 2 && phi) vec = ropeRotate(vec, phi);
          const dst = ((r * H + h) * L + l) * D;
          (part === 0 ? q : part === 1 ? k : v).set(vec, dst);
        }
    }
  return { q, k, v };
}

/** Options of refAttn (av_attn_params). */
export interface AttnRefOptions {
  R: number;
  H: number;
  Lq: number;
  D: number;
  nCtx: number;
  nKv: number;
  scale: number;
  /** [Rb, nCtx]; row r uses r % Rb. */
  keyBias?: ArrayLike<number>;
  Rb?: number;
  /** [H]; absent = 1. */
  kbBeta?: ArrayLike<number>;
  /** [Lq] and [nCtx]: key j is visible to query i iff qLvl[i] >= kLvl[j]. */
  qLvl?: ArrayLike<number>;
  kLvl?: ArrayLike<number>;
}

/**
 * o [R, Lq, H, D] = softmax_j(scale q_i.k_j + beta_h bias[r % Rb, j], masked) v_j over the
 * first nKv keys of k, v [R, H, nCtx, D]; q [R, H, Lq, D]. Rows with no visible key give 0.
 */
export function refAttn(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  o: AttnRefOptions,
): Float64Array {
  const { R, H, Lq, D, nCtx, nKv, scale } = o;
  const out = new Float64Array(R * Lq * H * D);
  const logits = new Float64Array(nKv);
  for (let r = 0; r < R; r++)
    for (let h = 0; h < H; h++) {
      const beta = o.kbBeta ? o.kbBeta[h]! : 1;
      for (let i = 0; i < Lq; i++) {
        const qo = ((r * H + h) * Lq + i) * D;
        let mx = -Infinity;
        for (let j = 0; j < nKv; j++) {
          const ko = ((r * H + h) * nCtx + j) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += q[qo + d]! * k[ko + d]!;
          s *= scale;
          if (o.keyBias) {
            const b = o.keyBias[(r % o.Rb!) * nCtx + j]!;
            s = b === -Infinity ? -Infinity : s + beta * b;
          }
          if (o.qLvl && o.kLvl && o.qLvl[i]! < o.kLvl[j]!) s = -Infinity;
          logits[j] = s;
          mx = Math.max(mx, s);
        }
        const oo = ((r * Lq + i) * H + h) * D;
        if (mx === -Infinity) continue; // every key masked: o = 0
        let sum = 0;
        for (let j = 0; j < nKv; j++) {
          const p = logits[j] === -Infinity ? 0 : Math.exp(logits[j]! - mx);
          sum += p;
          if (p === 0) continue;
          const vo = ((r * H + h) * nCtx + j) * D;
          for (let d = 0; d < D; d++) out[oo + d]! += p * v[vo + d]!;
        }
        for (let d = 0; d < D; d++) out[oo + d]! /= sum;
      }
    }
  return out;
}
