/**
 * The spec's cost model (shared/spec/model.md section 9) for a detected configuration: FLOP per
 * scale step of the transformer, and of the conditioning net and VQVAE decoder per tile.
 * FLOP = 2 x multiply-accumulate; R = rows per image = 2 with classifier-free guidance, else 1
 * (the engine runs the unconditional rows only when cfg != 0).
 */
import { type ModelConfig, expectedTensors } from '../model/config.js';
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
