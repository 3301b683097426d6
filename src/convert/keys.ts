/**
 * The checkpoint keys the engine does not read, with the shapes the spec gives them: the VQVAE
 * encoder side (spec 8.3: encoder.*, quant_conv.*, quantize.ema_vocab_hit_SV), VARSR's
 * recomputable buffers (spec 8.2: lvl_1L, attn_bias_for_masking, blocks.*.attn.zero_k_bias) and
 * the refiner (spec 6.1 / 8.2: decoder_norm.*, diffloss.net.*). Together with
 * model/config.ts `expectedTensors` (what the engine reads) they are every key a VARSR or AlignVAR
 * checkpoint may hold; anything else is an unexpected key.
 */
import { type ExpectedTensor, type ModelConfig, vqAttnTensors, vqResBlockTensors } from '../model/config.js';

export { REFINER_FREQ_DIM, type RefinerDims, refinerTensors } from '../model/refiner.js';

/** A key family that is optional as a whole: all of its keys or none. */
export interface KeyGroup {
  /** What the group is, for messages ("the VQVAE encoder", "the refiner"). */
  what: string;
  /** Whether the converter keeps it in the output. */
  keep: boolean;
  tensors: ExpectedTensor[];
}

/** Keys of one dropped buffer, each optional on its own (spec 8.1). */
export interface BufferKey extends ExpectedTensor {
  /** Integer buffers (lvl_1L). */
  integer: boolean;
}

/** The VQVAE encoder and quant_conv of a config (training/avtrain/vqvae.py Encoder). */
export function encoderTensors(cfg: ModelConfig): ExpectedTensor[] {
  const out: ExpectedTensor[] = [];
  const add = (name: string, ...shape: number[]) => out.push({ name, shape });
  const Cv = cfg.cvae;
  const ch = cfg.vqCh;
  const mult = cfg.vqChMult;
  const levels = mult.length;
  const res = (p: string, cin: number, cout: number) => out.push(...vqResBlockTensors(p, cin, cout));
  const attn = (p: string, c: number) => out.push(...vqAttnTensors(p, c));
  add('encoder.conv_in.weight', ch, 3, 3, 3);
  add('encoder.conv_in.bias', ch);
  const inMult = [1, ...mult];
  let blockIn = ch;
  for (let l = 0; l < levels; l++) {
    blockIn = ch * inMult[l]!;
    const blockOut = ch * mult[l]!;
    for (let b = 0; b < cfg.vqNumRes; b++) {
      res(`encoder.down.${l}.block.${b}`, blockIn, blockOut);
      blockIn = blockOut;
      if (l === levels - 1 && cfg.vqAttnAtLowest) attn(`encoder.down.${l}.attn.${b}`, blockIn);
    }
    if (l !== levels - 1) {
      add(`encoder.down.${l}.downsample.conv.weight`, blockIn, blockIn, 3, 3);
      add(`encoder.down.${l}.downsample.conv.bias`, blockIn);
    }
  }
  res('encoder.mid.block_1', blockIn, blockIn);
  attn('encoder.mid.attn_1', blockIn);
  res('encoder.mid.block_2', blockIn, blockIn);
  add('encoder.norm_out.weight', blockIn);
  add('encoder.norm_out.bias', blockIn);
  add('encoder.conv_out.weight', Cv, blockIn, 3, 3);
  add('encoder.conv_out.bias', Cv);
  add('quant_conv.weight', Cv, Cv, 3, 3);
  add('quant_conv.bias', Cv);
  return out;
}

/** The recomputable buffers (each optional; dropped from the output). */
export function bufferTensors(cfg: ModelConfig, seqLen: number): BufferKey[] {
  const out: BufferKey[] = [
    { name: 'lvl_1L', shape: [1, seqLen], integer: true },
    { name: 'attn_bias_for_masking', shape: [1, 1, seqLen, seqLen], integer: false },
    { name: 'quantize.ema_vocab_hit_SV', shape: [cfg.patchNums.length, cfg.vocab], integer: false },
  ];
  for (let i = 0; i < cfg.depth; i++)
    out.push({ name: `blocks.${i}.attn.zero_k_bias`, shape: [cfg.width], integer: false });
  return out;
}

/** Prefixes of the VQVAE's keys (a key with one of them belongs to the VQVAE file). */
export const VQ_PREFIXES = ['encoder.', 'decoder.', 'quantize.', 'quant_conv.', 'post_quant_conv.'] as const;

/** Whether `key` is a VQVAE key. */
export function isVqKey(key: string): boolean {
  return VQ_PREFIXES.some((p) => key.startsWith(p));
}

/**
 * Whether a weight is stored in the requested dtype (else F32): the matrices of Linear and Conv
 * layers, as training/avtrain/export.py `castable` (embedding tables, norms, biases, the codebook,
 * the Phi convs and SCA stay f32, spec 0).
 */
export function castable(name: string, shape: readonly number[]): boolean {
  return (
    shape.length >= 2 &&
    name.endsWith('.weight') &&
    !name.startsWith('sca.') &&
    !name.startsWith('quantize.') &&
    name !== 'class_emb.weight' &&
    name !== 'lvl_embed.weight'
  );
}
