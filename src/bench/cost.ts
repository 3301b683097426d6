/**
 * The spec's cost model (shared/spec/model.md section 9) for a detected configuration: FLOP per
 * scale step of the transformer, of the conditioning net and VQVAE decoder per tile, and of
 * VARSR's diffusion refiner (spec 6) per batch.
 * FLOP = 2 x multiply-accumulate; R = rows per image = 2 with classifier-free guidance, else 1
 * (the engine runs the unconditional rows only when cfg != 0).
 */
import { type ModelConfig, expectedTensors } from '../model/config.js';
import { REFINER_FREQ_DIM, REFINER_STEPS, type RefinerDims } from '../model/refiner.js';
import type { Schedule } from '../model/schedule.js';

/** Transformer cost of one scale step for one tile. */
export interface StepCost {
  /** Scale index. */
  si: number;
  /** Side of the token map sampled at this step. */
  pn: number;
  /** Query rows per image row (prefix length at si = 0, pn^2 after). */
  lq: number;
  /** Keys attended to (cache length after this step). */
  lk: number;
  /** Tokens sampled per tile (pn^2). */
  tokens: number;
  /** Linear layers (qkv, proj, fc1, fc2, word embedding), GFLOP. */
  linear: number;
  /** Attention QK^T and AV over the cache, GFLOP. */
  attention: number;
  /** Output head (one row at si = 0, as the engine runs it), GFLOP. */
  head: number;
  /** Sum, GFLOP. */
  total: number;
}

/**
 * Transformer GFLOP per step and tile (spec 9.1): `F_lin = R Lq d (8C^2 + 4 C mlp)`, the word
 * embedding `R Lq 2 Cvae C` after si = 0, `F_att = R d 4 C Lq Lk`, `F_head = R Lh 2 C V`. AdaLN
 * is precomputed at load (not counted).
 *
 * @param cfg - The model configuration.
 * @param sched - Its schedule.
 * @param guided - Whether CFG doubles the rows (cfg != 0).
 */
export function stepCosts(cfg: ModelConfig, sched: Schedule, guided: boolean): StepCost[] {
  const R = guided ? 2 : 1;
  const C = cfg.width;
  const d = cfg.depth;
  const linPerRow = 2 * (4 * C * C + 2 * C * cfg.mlpHidden);
  return sched.steps.map((s) => {
    const lh = s.si === 0 ? 1 : s.lq;
    const linear = R * s.lq * d * linPerRow + R * (s.si === 0 ? 0 : s.lq) * 2 * cfg.cvae * C;
    const attention = R * d * 4 * C * s.lq * s.lk;
    const head = R * lh * 2 * C * cfg.vocab;
    return {
      si: s.si,
      pn: s.pn,
      lq: s.lq,
      lk: s.lk,
      tokens: s.pn * s.pn,
      linear: linear / 1e9,
      attention: attention / 1e9,
      head: head / 1e9,
      total: (linear + attention + head) / 1e9,
    };
  });
}

/**
 * Conditioning-net and VQVAE-decoder GFLOP per tile, from the tensors the engine reads: every
 * conv as `2 Cin Cout k^2 Hout Wout` at its place in the network (spec 3, 7.1), attention blocks
 * adding `4 N^2 c`.
 */
export function convCosts(cfg: ModelConfig): { condNet: number; decoder: number } {
  const hr = cfg.hrSize;
  const G = cfg.grid;
  const levels = cfg.vqChMult.length;
  let condNet = 0;
  let decoder = 0;
  for (const t of expectedTensors(cfg)) {
    if (t.shape.length !== 4 || !t.name.endsWith('.weight')) continue;
    const [cout, cin, kh, kw] = t.shape as [number, number, number, number];
    const per = 2 * cout * cin * kh * kw;
    let m: RegExpExecArray | null;
    if (t.name === 'con_embedding.conv_in.weight') condNet += per * hr * hr;
    else if ((m = /^con_embedding\.blocks\.(\d+)\./.exec(t.name))) {
      const k = Number(m[1]);
      const s = hr >> (Math.floor(k / 2) + (k % 2));
      condNet += per * s * s;
    } else if (t.name === 'con_embedding.conv_out.weight') condNet += per * G * G;
    else if (
      t.name === 'post_quant_conv.weight' ||
      t.name.startsWith('decoder.conv_in') ||
      t.name.startsWith('decoder.mid.')
    ) {
      decoder += per * G * G;
      if (t.name.endsWith('proj_out.weight')) decoder += 4 * (G * G) ** 2 * cout;
    } else if ((m = /^decoder\.up\.(\d+)\.(\w+)\./.exec(t.name))) {
      let s = G << (levels - 1 - Number(m[1]));
      if (m[2] === 'upsample') s *= 2;
      decoder += per * s * s;
      if (t.name.endsWith('proj_out.weight')) decoder += 4 * (s * s) ** 2 * cout;
    } else if (t.name === 'decoder.conv_out.weight') decoder += per * hr * hr;
  }
  return { condNet: condNet / 1e9, decoder: decoder / 1e9 };
}

/** Refiner cost of one engine batch, as native/model/refiner.cc runs it (GFLOP unless noted). */
export interface RefinerCost {
  /** Network rows per step: R x G^2 per tile (both halves with guidance). */
  rows: number;
  /** Diffusion steps (spec 6.2: 10). */
  steps: number;
  /** FLOP of the per-row network for one row and step: input_proj, blocks, final layer. */
  perRowStep: number;
  /** The per-row network over every row and step. */
  network: number;
  /** cond_embed C -> W, once per row and run (c is kept for every step). */
  condEmbed: number;
  /** The timestep embedding 256 -> W -> W, once per step for the whole batch (one row). */
  timeEmbed: number;
  /** z's word embedding Cv -> C, once per token (shared by both halves). */
  wordEmbed: number;
  /** Sum of the four: what the engine runs. */
  total: number;
  /**
   * Spec 9's count, as VARSR's reference runs the network: every linear per row and step, the
   * time and cond embeddings included, word embedding not counted. 1,496.5 per d24 tile with
   * guidance; the engine's `total` is lower because it does not repeat those embeddings.
   */
  reference: number;
}

/**
 * Refiner GFLOP of a batch of `tiles` tiles (spec 6.1, 6.2; FLOP = 2 x MAC; linears only, the
 * LayerNorms and the sampler's element arithmetic not counted). With L = G^2 tokens per tile,
 * R = 2 rows per token with guidance (else 1), S = 10 steps, n blocks and width W:
 *
 * - per row and step, `2 (Cv W + n (3 W^2 + 2 W^2) + 2 W^2 + 2 Cv W) = 2 ((5n + 2) W^2 + 3 Cv W)`:
 *   input_proj Cv -> W; per block the AdaLN shift/scale/gate (3 x W -> W, read from
 *   SiLU(temb + c), which differs per row) and the MLP (2 x W -> W); the final AdaLN
 *   (2 x W -> W) and linear W -> 2 Cv;
 * - `network = tiles R L S x per row and step`, `condEmbed = tiles R L 2 C W`,
 *   `wordEmbed = tiles L 2 Cv C`, `timeEmbed = S 2 (256 W + W^2)`;
 * - `reference = tiles R L S 2 ((5n + 3) W^2 + (256 + C + 3 Cv) W)`: 73.07 MFLOP per row and
 *   step at d24 (W 1024, 6 blocks, C 1536, Cv 32), x 2048 rows x 10 steps = 1,496.5 GFLOP.
 *
 * @param cfg - The model configuration (C, Cv, grid G).
 * @param r - The refiner's width and block count.
 * @param guided - Whether CFG doubles the rows (cfg != 0).
 * @param tiles - Tiles in the batch (>= 1). Default 1.
 */
export function refinerCost(cfg: ModelConfig, r: RefinerDims, guided: boolean, tiles = 1): RefinerCost {
  const R = guided ? 2 : 1;
  const W = r.width;
  const n = r.blocks;
  const C = cfg.width;
  const Cv = cfg.cvae;
  const S = REFINER_STEPS;
  const L = cfg.grid * cfg.grid;
  const rows = tiles * R * L;
  const perRowStep = 2 * ((5 * n + 2) * W * W + 3 * Cv * W);
  const network = rows * S * perRowStep;
  const condEmbed = rows * 2 * C * W;
  const timeEmbed = S * 2 * (REFINER_FREQ_DIM * W + W * W);
  const wordEmbed = tiles * L * 2 * Cv * C;
  const reference = rows * S * 2 * ((5 * n + 3) * W * W + (REFINER_FREQ_DIM + C + 3 * Cv) * W);
  return {
    rows,
    steps: S,
    perRowStep,
    network: network / 1e9,
    condEmbed: condEmbed / 1e9,
    timeEmbed: timeEmbed / 1e9,
    wordEmbed: wordEmbed / 1e9,
    total: (network + condEmbed + timeEmbed + wordEmbed) / 1e9,
    reference: reference / 1e9,
  };
}
