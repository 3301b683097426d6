/**
 * VARSR's diffusion refiner as the engine sees it (spec 6.1, 8.2): its keys and shapes for a
 * config and refiner size, and the size read from a file's tensors. The converter checks
 * checkpoints against the same table (convert/keys.ts).
 */
import type { ExpectedTensor, ModelConfig } from './config.js';

/** Sinusoid size of the refiner's timestep embedding (spec 6.1). */
export const REFINER_FREQ_DIM = 256;

/** Diffusion steps the refiner runs per token (spec 6.2; native AV_REFINER_STEPS). */
export const REFINER_STEPS = 10;

/** Refiner sizes read from its tensors (spec 6.1: W = 1024, 6 blocks for VARSR). */
export interface RefinerDims {
  width: number;
  blocks: number;
}

/** The refiner's keys for a config and refiner sizes. */
export function refinerTensors(cfg: ModelConfig, r: RefinerDims): ExpectedTensor[] {
  const out: ExpectedTensor[] = [];
  const add = (name: string, ...shape: number[]) => out.push({ name, shape });
  const W = r.width;
  const p = 'diffloss.net.';
  add('decoder_norm.weight', cfg.width);
  add('decoder_norm.bias', cfg.width);
  add(`${p}time_embed.mlp.0.weight`, W, REFINER_FREQ_DIM);
  add(`${p}time_embed.mlp.0.bias`, W);
  add(`${p}time_embed.mlp.2.weight`, W, W);
  add(`${p}time_embed.mlp.2.bias`, W);
  add(`${p}cond_embed.weight`, W, cfg.width);
  add(`${p}cond_embed.bias`, W);
  add(`${p}input_proj.weight`, W, cfg.cvae);
  add(`${p}input_proj.bias`, W);
  for (let j = 0; j < r.blocks; j++) {
    const b = `${p}res_blocks.${j}.`;
    add(`${b}in_ln.weight`, W);
    add(`${b}in_ln.bias`, W);
    add(`${b}mlp.0.weight`, W, W);
    add(`${b}mlp.0.bias`, W);
    add(`${b}mlp.2.weight`, W, W);
    add(`${b}mlp.2.bias`, W);
    add(`${b}adaLN_modulation.1.weight`, 3 * W, W);
    add(`${b}adaLN_modulation.1.bias`, 3 * W);
  }
  add(`${p}final_layer.linear.weight`, 2 * cfg.cvae, W);
  add(`${p}final_layer.linear.bias`, 2 * cfg.cvae);
  add(`${p}final_layer.adaLN_modulation.1.weight`, 2 * W, W);
  add(`${p}final_layer.adaLN_modulation.1.bias`, 2 * W);
  return out;
}

/**
 * The refiner's size when a file holds one (any `diffloss.*` or `decoder_norm.*` key): W from
 * `diffloss.net.input_proj.weight`, the block count from the consecutive `res_blocks.<j>`
 * (VARSR: W 1024, 6 blocks when those keys are missing, so that the missing ones are named).
 *
 * @returns undefined when the file has no refiner key.
 */
export function detectRefiner(tensors: ReadonlyMap<string, { shape: readonly number[] }>): RefinerDims | undefined {
  const keys = [...tensors.keys()];
  if (!keys.some((k) => k.startsWith('diffloss.') || k.startsWith('decoder_norm.'))) return undefined;
  const proj = tensors.get('diffloss.net.input_proj.weight');
  let n = 0;
  while (tensors.has(`diffloss.net.res_blocks.${n}.in_ln.weight`)) n++;
  return { width: proj?.shape[0] ?? 1024, blocks: n > 0 ? n : 6 };
}
