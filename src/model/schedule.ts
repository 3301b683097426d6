/**
 * The multi-scale schedule of next-scale prediction (spec 1.3, 4.2, 4.3, 5.4): token offsets,
 * per-step query/key lengths, sequence blocks, level indices, scale-aligned RoPE coordinates
 * and the Phi selection table. Pure functions of `patchNums` (and the number of Phi convs);
 * the native session receives the RoPE table and the Phi table from here, so this file is the
 * single source of truth for the sequence layout.
 *
 * Sequence layout (spec 1.3): the prefix holds `pnLast^2` LR tokens and one class token
 * (`prefixLen = pnLast^2 + 1` positions, all level 0); then the inputs of scales 1..K-1, each
 * `pn^2` positions at level si. Scale 0 has no input: the class token predicts it.
 */

/** The default VARSR 512-px schedule (spec 1.1). */
export const DEFAULT_PATCH_NUMS: readonly number[] = [1, 2, 3, 4, 6, 9, 13, 18, 24, 32];

/** One step of the scale loop: which sequence positions it feeds and which it attends to. */
export interface ScaleStep {
  /** Scale index si in [0, K). */
  si: number;
  /** Side of this scale's token map (pn x pn tokens are sampled at this step). */
  pn: number;
  /** First sequence position fed at this step (0 for the prefix step). */
  seqBegin: number;
  /** One past the last sequence position fed at this step. */
  seqEnd: number;
  /** Query rows per image row: `prefixLen` at si = 0, `pn^2` otherwise. */
  lq: number;
  /** KV length after this step (= seqEnd). */
  lk: number;
  /** Offset of this scale's tokens in the concatenation of all scales' tokens. */
  tokenOffset: number;
  /** Index of the Phi conv used when accumulating this scale (-1 at the last scale: raw add). */
  phi: number;
}

/** Everything the engine needs to know about a schedule. */
export interface Schedule {
  /** Side lengths of the K token maps, strictly increasing, starting at 1. */
  patchNums: readonly number[];
  /** Number of scales. */
  K: number;
  /** Side of the last (finest) token map, which is also the latent grid and the LR-token grid. */
  pnLast: number;
  /** LR tokens + class token. */
  prefixLen: number;
  /** Total number of sampled tokens, sum of pn^2. */
  totalTokens: number;
  /** Total transformer sequence length T = prefixLen + totalTokens - 1. */
  seqLen: number;
  /** Offsets o_si of each scale in the token concatenation (length K). */
  tokenOffsets: number[];
  /** Per-step layout (length K). */
  steps: ScaleStep[];
}

/**
 * Validates a patch-number list: integers, at least 2 scales, starting at 1, strictly
 * increasing. Returns what was expected (for an "Expected ... for ... but received ..."
 * message) or undefined when the list is valid.
 */
export function checkPatchNums(patchNums: readonly number[]): string | undefined {
  if (patchNums.length < 2) return 'at least 2 scales';
  if (patchNums[0] !== 1) return 'a first scale of 1';
  for (let i = 0; i < patchNums.length; i++) {
    const pn = patchNums[i]!;
    if (!Number.isInteger(pn) || pn < 1) return 'positive integers';
    if (i > 0 && pn <= patchNums[i - 1]!) return 'strictly increasing sizes';
  }
  return undefined;
}

/** Parses "1,2,3,..." (metadata form). Returns undefined when it is not a list of integers. */
export function parsePatchNums(s: string): number[] | undefined {
  const parts = s.split(',').map((p) => p.trim());
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) return undefined;
  return parts.map((p) => Number(p));
}

/**
 * Phi selection table of VAR's PhiPartiallyShared (var/models/quant.py), generalised to any
 * number of Phi convs n: ticks = linspace(1/3/n, 1-1/3/n, n) when n == 4, else
 * linspace(1/(2n), 1-1/(2n), n); scale si uses the first argmin |ticks - si/(K-1)|, in double
 * precision exactly as numpy (ties at si = 2 and 7 for the default schedule are settled by
 * that rounding). The entry for the last scale is computed but never applied (VARSR adds the
 * raw embedding at si = K-1).
 */
export function phiTable(K: number, nPhi: number): number[] {
  if (nPhi < 1) throw new RangeError(`phiTable: nPhi must be >= 1, got ${nPhi}`);
  const start = nPhi === 4 ? 1 / 3 / nPhi : 1 / 2 / nPhi;
  const stop = 1 - start;
  // numpy.linspace: y = arange(n) * step + start, last element set to stop exactly.
  const ticks: number[] = [];
  const step = nPhi > 1 ? (stop - start) / (nPhi - 1) : 0;
  for (let i = 0; i < nPhi; i++) ticks.push(i * step + start);
  if (nPhi > 1) ticks[nPhi - 1] = stop;
  const out: number[] = [];
  for (let si = 0; si < K; si++) {
    const at = K > 1 ? si / (K - 1) : 0;
    let best = 0;
    let bestD = Infinity;
    for (let j = 0; j < nPhi; j++) {
      const d = Math.abs(ticks[j]! - at);
      if (d < bestD) {
        bestD = d;
        best = j;
      }
    }
    out.push(best);
  }
  return out;
}

/** Builds the schedule for a patch-number list (throws RangeError on an invalid list). */
export function makeSchedule(patchNums: readonly number[], nPhi = 4): Schedule {
  const bad = checkPatchNums(patchNums);
  if (bad !== undefined) throw new RangeError(`Expected ${bad} for patchNums but received [${patchNums.join(',')}]`);
  const K = patchNums.length;
  const pnLast = patchNums[K - 1]!;
  const prefixLen = pnLast * pnLast + 1;
  const tokenOffsets: number[] = [];
  let total = 0;
  for (const pn of patchNums) {
    tokenOffsets.push(total);
    total += pn * pn;
  }
  const phi = phiTable(K, nPhi);
  const steps: ScaleStep[] = [];
  for (let si = 0; si < K; si++) {
    const pn = patchNums[si]!;
    // Output index n = p - (prefixLen - 1) addresses the token concatenation, so scale si's
    // inputs sit at sequence positions prefixLen - 1 + o_si (spec 1.3).
    const seqBegin = si === 0 ? 0 : prefixLen - 1 + tokenOffsets[si]!;
    const seqEnd = si === 0 ? prefixLen : seqBegin + pn * pn;
    steps.push({
      si,
      pn,
      seqBegin,
      seqEnd,
      lq: seqEnd - seqBegin,
      lk: seqEnd,
      tokenOffset: tokenOffsets[si]!,
      phi: si === K - 1 ? -1 : phi[si]!,
    });
  }
  return {
    patchNums: [...patchNums],
    K,
    pnLast,
    prefixLen,
    totalTokens: total,
    seqLen: prefixLen + total - 1,
    tokenOffsets,
    steps,
  };
}

/** Level index per sequence position (spec 4.3): 0 for the prefix, si for scale si. */
export function levelIndices(s: Schedule): Int32Array {
  const lvl = new Int32Array(s.seqLen);
  for (const st of s.steps) lvl.fill(st.si, st.seqBegin, st.seqEnd);
  return lvl;
}

/**
 * The grids of the RoPE table in sequence order (spec 4.2): the LR grid (pnLast), the class
 * token as a 1x1 grid, then scales 1..K-1.
 */
export function ropeGrids(s: Schedule): number[] {
  return [s.pnLast, 1, ...s.patchNums.slice(1)];
}

/**
 * Scale-aligned 2-D RoPE coordinates [T, 2] (spec 4.2): token (r, c) of a pn-grid gets
 * tx = (r / pn) * pnLast and ty = (c / pn) * pnLast, evaluated in fp32 in that order.
 */
export function ropeTable(s: Schedule): Float32Array {
  const out = new Float32Array(s.seqLen * 2);
  const last = Math.fround(s.pnLast);
  let p = 0;
  for (const pn of ropeGrids(s)) {
    for (let r = 0; r < pn; r++) {
      const tx = Math.fround(Math.fround(r / pn) * last);
      for (let c = 0; c < pn; c++) {
        out[2 * p] = tx;
        out[2 * p + 1] = Math.fround(Math.fround(c / pn) * last);
        p++;
      }
    }
  }
  return out;
}

/** CFG weight at scale si (spec 5.2): t = cfg * si / (K - 1), evaluated left to right as the reference. */
export function cfgWeight(cfg: number, si: number, K: number): number {
  return K > 1 ? (cfg * si) / (K - 1) : 0;
}
