/**
 * Float64 references for the resampling ops (spec 2.1, 5.4, 5.5), written from the spec's
 * formulas and independent of native/core/resample-weights.h. Every 2-D resample is a 1-D
 * pass along W followed by one along H (exact arithmetic makes the order irrelevant).
 * Planes are row-major [P, H, W].
 */

/** A 1-D resampling rule: taps (source index, weight) of output index i. */
export type Taps1d = (i: number, inSize: number, outSize: number) => { idx: number[]; w: number[] };

/** PyTorch bicubic, A = -0.75, align_corners=False, source indices clamped; in == out copies. */
export const bicubicTaps: Taps1d = (i, inSize, outSize) => {
  if (inSize === outSize) return { idx: [i], w: [1] };
  const A = -0.75;
  const x = (i + 0.5) * (inSize / outSize) - 0.5;
  const x0 = Math.floor(x);
  const t = x - x0;
  const far = (d: number): number => ((A * d - 5 * A) * d + 8 * A) * d - 4 * A; // 1 <= d < 2
  const near = (d: number): number => ((A + 2) * d - (A + 3)) * d * d + 1; // d < 1
  const w = [far(t + 1), near(t), near(1 - t), far(2 - t)];
  const idx = [-1, 0, 1, 2].map((k) => Math.min(Math.max(x0 + k, 0), inSize - 1));
  return { idx, w };
};

/** Adaptive average pooling: mean of [floor(i*in/out), ceil((i+1)*in/out)). */
export const areaTaps: Taps1d = (i, inSize, outSize) => {
  const b = Math.floor((i * inSize) / outSize);
  const e = Math.ceil(((i + 1) * inSize) / outSize);
  const idx: number[] = [];
  for (let j = b; j < e; j++) idx.push(j);
  return { idx, w: idx.map(() => 1 / (e - b)) };
};

/** out[i] = in[floor(i*in/out)]. */
export const nearestTaps: Taps1d = (i, inSize, outSize) => ({
  idx: [Math.min(Math.floor((i * inSize) / outSize), inSize - 1)],
  w: [1],
});

/** Pillow bicubic (a = -0.5), support 2*max(in/out, 1), out-of-image taps dropped, renormalised. */
export const pilBicubicTaps: Taps1d = (i, inSize, outSize) => {
  const a = -0.5;
  const k = (x0: number): number => {
    const x = Math.abs(x0);
    if (x < 1) return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1;
    if (x < 2) return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a;
    return 0;
  };
  const s = inSize / outSize;
  const fs = Math.max(s, 1);
  const c = (i + 0.5) * s;
  const lo = Math.max(0, Math.trunc(c - 2 * fs + 0.5));
  const hi = Math.min(inSize, Math.trunc(c + 2 * fs + 0.5));
  const idx: number[] = [];
  const w: number[] = [];
  for (let j = lo; j < hi; j++) {
    idx.push(j);
    w.push(k((j + 0.5 - c) / fs));
  }
  const sum = w.reduce((p, q) => p + q, 0);
  return { idx, w: w.map((v) => v / sum) };
};

/** Resamples planes x [P, H, W] to [P, Ho, Wo] with one rule on both axes. */
export function resampleRef(
  x: ArrayLike<number>,
  P: number,
  H: number,
  W: number,
  Ho: number,
  Wo: number,
  taps: Taps1d,
): Float64Array {
  const tx = Array.from({ length: Wo }, (_, i) => taps(i, W, Wo));
  const ty = Array.from({ length: Ho }, (_, i) => taps(i, H, Ho));
  const tmp = new Float64Array(P * H * Wo);
  for (let r = 0; r < P * H; r++) {
    for (let o = 0; o < Wo; o++) {
      const { idx, w } = tx[o]!;
      let acc = 0;
      for (let k = 0; k < idx.length; k++) acc += w[k]! * x[r * W + idx[k]!]!;
      tmp[r * Wo + o] = acc;
    }
  }
  const y = new Float64Array(P * Ho * Wo);
  for (let p = 0; p < P; p++) {
    for (let o = 0; o < Ho; o++) {
      const { idx, w } = ty[o]!;
      for (let c = 0; c < Wo; c++) {
        let acc = 0;
        for (let k = 0; k < idx.length; k++) acc += w[k]! * tmp[(p * H + idx[k]!) * Wo + c]!;
        y[(p * Ho + o) * Wo + c] = acc;
      }
    }
  }
  return y;
}

/** conv3x3, stride 1, zero padding 1: x [B, C, H, W], w [C, C, 3, 3], bias [C] -> [B, C, H, W]. */
export function conv3x3Ref(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  bias: ArrayLike<number> | undefined,
  B: number,
  C: number,
  H: number,
  W: number,
): Float64Array {
  const y = new Float64Array(B * C * H * W);
  for (let b = 0; b < B; b++)
    for (let co = 0; co < C; co++)
      for (let i = 0; i < H; i++)
        for (let j = 0; j < W; j++) {
          let acc = bias ? bias[co]! : 0;
          for (let ci = 0; ci < C; ci++)
            for (let ky = 0; ky < 3; ky++) {
              const yy = i + ky - 1;
              if (yy < 0 || yy >= H) continue;
              for (let kx = 0; kx < 3; kx++) {
                const xx = j + kx - 1;
                if (xx < 0 || xx >= W) continue;
                acc += w[((co * C + ci) * 3 + ky) * 3 + kx]! * x[((b * C + ci) * H + yy) * W + xx]!;
              }
            }
          y[((b * C + co) * H + i) * W + j] = acc;
        }
  return y;
}

/**
 * One scale of residual accumulation (spec 5.4): t = bicubic_up(h [B, Cv, ph, pw] -> G x G);
 * with phi, t = (1-r) t + r (conv3x3(t) + b); f_hat + t; next = area_down(f_hat, pn) as
 * token-major [B, pn*pn, Cv] when pn > 0.
 */
export function upsampleAccumRef(opts: {
  h: ArrayLike<number>;
  fHat: ArrayLike<number>;
  B: number;
  Cv: number;
  ph: number;
  pw: number;
  G: number;
  phiW?: ArrayLike<number>;
  phiB?: ArrayLike<number>;
  ratio?: number;
  pnNext?: number;
}): { fHat: Float64Array; next?: Float64Array } {
  const { h, B, Cv, ph, pw, G } = opts;
  const P = B * Cv;
  let t = resampleRef(h, P, ph, pw, G, G, bicubicTaps);
  if (opts.phiW) {
    const r = opts.ratio ?? 0.5;
    const c = conv3x3Ref(t, opts.phiW, opts.phiB, B, Cv, G, G);
    t = t.map((v, i) => (1 - r) * v + r * c[i]!);
  }
  const fHat = Float64Array.from(opts.fHat, (v, i) => v + t[i]!);
  if (!opts.pnNext) return { fHat };
  const pn = opts.pnNext;
  const down = resampleRef(fHat, P, G, G, pn, pn, areaTaps);
  const L = pn * pn;
  const next = new Float64Array(B * L * Cv);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < Cv; c++) for (let l = 0; l < L; l++) next[(b * L + l) * Cv + c] = down[(b * Cv + c) * L + l]!;
  return { fHat, next };
}
