/**
 * Model hyper-parameters: read from the safetensors `__metadata__` (the keys of
 * training/avtrain/config.py `ModelConfig`, every value a string), completed from tensor
 * shapes where the metadata is silent (spec 8.4), then checked tensor by tensor against the
 * shapes that configuration implies. A file whose tensors do not fit is rejected with a
 * {@link WeightsError} naming the first tensor that does not (expected vs actual shape).
 *
 * Tensor names are the reference state-dict keys (spec 8.2, 8.3, 11.7), VAR and VQVAE keys
 * unprefixed in one file. Keys the engine never reads (`diffloss.*`, `decoder_norm.*`,
 * `encoder.*`, `quant_conv.*`, buffers) are ignored.
 */
import { WeightsError } from '../errors.js';
import { COLOR_FIXES, MAX_CFG } from '../options.js';
import { quoteText } from '../text.js';
import { DEFAULT_PATCH_NUMS, checkPatchNums, makeSchedule, type Schedule } from './schedule.js';

/** Mask-generator sizes fixed by spec 11.2 / 11.7. */
export const SCA_LEVEL_EMBED_DIM = 8;
/** Hidden width of the mask generator's convs (spec 11.2). */
export const SCA_HIDDEN = 32;
/** GroupNorm groups of the VQVAE (spec 7). */
export const VQ_GROUPS = 32;

/** Storage dtypes accepted for weights. */
export type WeightDType = 'F32' | 'F16' | 'BF16';

/** Hyper-parameters of an AlignVAR / VARSR model file. Field names follow the metadata keys. */
export interface ModelConfig {
  /** Transformer blocks. */
  depth: number;
  /** Transformer width C. */
  width: number;
  /** Attention heads H (head dim = width / heads, a multiple of 4). */
  heads: number;
  /** FFN hidden width (mlp_ratio * width). */
  mlpHidden: number;
  /** Codebook size V. */
  vocab: number;
  /** VQ latent channels Cv. */
  cvae: number;
  /** Class labels; label numClasses-1 is the CFG negative ("low quality"). */
  numClasses: number;
  /** Side of each scale's token map. */
  patchNums: number[];
  /** Conditioning-net channel list (conv_in output, then one entry per stride-2 stage). */
  condCh: number[];
  /** VQVAE base channels. */
  vqCh: number;
  /** VQVAE channel multipliers per level. */
  vqChMult: number[];
  /** ResBlocks per encoder level (the decoder has vqNumRes + 1 per level). */
  vqNumRes: number;
  /** Whether the lowest-resolution decoder level has attention blocks. */
  vqAttnAtLowest: boolean;
  /** Number of shared Phi convs (quantize.quant_resi.qresi_ls.*). */
  nPhi: number;
  /** Phi mixing ratio: Phi(h) = (1-r) h + r conv(h). */
  quantResi: number;
  /** RoPE base. */
  ropeBase: number;
  /** Whether the SCA tensors are present (spec 11.7). */
  sca: boolean;
  /** Latent grid side G = last patch number. */
  grid: number;
  /** HR output side (= 2^(levels-1) * grid). */
  hrSize: number;
  /** LR input side (= hrSize / 4). */
  lrSize: number;
  /**
   * What the VQVAE tokenizes (metadata `latent`, default "image"): "residual" = (HR - base) /
   * residualScale, base = 2 * up01 - 1, the PIL-bicubic upsampled LR; the output is then
   * base + residualScale * decoder before the clamp (issue 11; not in the spec). detectConfig
   * sets it (and residualScale) for residual files only; absent means "image".
   */
  latent?: 'image' | 'residual';
  /** Metadata `residual_scale` (only with latent "residual"; 1 when absent). */
  residualScale?: number;
  /**
   * Metadata `decoder_lr` = "1": the decoder also reads base = 2 * up01 - 1, adding
   * `decoder.lr_in.<l>`(area_down(base)) at the start of each up level l (issue 11; not in the
   * spec). Set only when true.
   */
  decoderLr?: boolean;
  /**
   * Metadata `token_mode` = "mean": each scale's map is the expected codebook vector under the
   * scale's CFG-mixed distribution, softmax(G) E, instead of the sampled tokens' vectors (issue
   * 11; not in the spec). The sampled tokens are still reported. Set only when "mean".
   */
  tokenMode?: 'mean';
}

/** Shape and dtype of one stored tensor (what the safetensors reader exposes). */
export interface TensorShapeInfo {
  readonly shape: readonly number[];
  readonly dtype: string;
}

/** The parts of a safetensors header that configuration detection reads. */
export interface WeightsHeader {
  readonly metadata?: Readonly<Record<string, string>> | undefined;
  readonly tensors: ReadonlyMap<string, TensorShapeInfo>;
}

/** One tensor the engine reads, with the shape the configuration implies. */
export interface ExpectedTensor {
  name: string;
  shape: number[];
}

const D24 = {
  depth: 24,
  width: 1536,
  heads: 24,
  mlpRatio: 4,
  vocab: 4096,
  cvae: 32,
  vqCh: 160,
  vqChMult: [1, 1, 2, 2, 4],
  vqNumRes: 2,
  condCh: [32, 128, 256, 512, 1536],
  numClasses: 2,
  nPhi: 4,
  quantResi: 0.5,
  ropeBase: 10000,
};

function fmtShape(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/** Builds the configuration-level error for `file`. */
function bad(file: string, problem: string, tensor?: string): WeightsError {
  return new WeightsError({ file, tensor, problem });
}

// ---------------------------------------------------------------------------------------------
// Metadata: one table entry per key, each value parsed strictly and range-checked
// ---------------------------------------------------------------------------------------------

/** How one `__metadata__` value is read: a strict parser, and what it accepts (for messages). */
export interface MetadataKey<T> {
  /** What a valid value is, e.g. `an integer in [1, 1000]`. */
  readonly expected: string;
  /** The value, or undefined when `text` is not a valid one (no trimming, no coercion). */
  parse(text: string): T | undefined;
}

/** A decimal integer as Python's str(int) writes it (at most 16 digits: no precision loss). */
const DIGITS = /^[0-9]{1,16}$/;
/** A decimal number as Python's repr(float) writes it, finite ones only. */
const DECIMAL = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

function intKey(min: number, max: number): MetadataKey<number> {
  return {
    expected: `an integer in [${min}, ${max}]`,
    parse: (s) => {
      const v = DIGITS.test(s) ? Number(s) : NaN;
      return v >= min && v <= max ? v : undefined;
    },
  };
}

function floatKey(min: number, max: number, minOpen = false): MetadataKey<number> {
  return {
    expected: `a number in ${minOpen ? '(' : '['}${min}, ${max}]`,
    parse: (s) => {
      const v = DECIMAL.test(s) ? Number(s) : NaN;
      return (minOpen ? v > min : v >= min) && v <= max ? v : undefined;
    },
  };
}

function listKey(minLength: number, maxLength: number, min: number, max: number): MetadataKey<number[]> {
  const item = intKey(min, max);
  return {
    expected: `${minLength} to ${maxLength} comma-separated integers in [${min}, ${max}]`,
    parse: (s) => {
      const parts = s.split(',');
      if (parts.length < minLength || parts.length > maxLength) return undefined;
      const v = parts.map((p) => item.parse(p));
      return v.every((x) => x !== undefined) ? (v as number[]) : undefined;
    },
  };
}

function choiceKey<T extends string>(values: readonly T[]): MetadataKey<T> {
  return {
    expected: `one of ${values.map((v) => JSON.stringify(v)).join(', ')}`,
    parse: (s) => ((values as readonly string[]).includes(s) ? (s as T) : undefined),
  };
}

const BOOL: MetadataKey<boolean> = {
  expected: '"0" or "1"',
  parse: (s) => (s === '1' ? true : s === '0' ? false : undefined),
};

const TEXT: MetadataKey<string> = { expected: 'a string', parse: (s) => s };

/**
 * The `__metadata__` keys this package reads (training/avtrain/config.py `ModelConfig` fields as
 * written by `avtrain.export`, plus the inference defaults `cfg` and `color_fix` and the
 * free-text `status`), each with its strict parser and range. A value outside its range is a
 * {@link WeightsError} before anything uses it; keys not listed here are kept in the metadata
 * and otherwise ignored. Sizes that the tensors also state are checked against them in
 * {@link detectConfig}. Ranges are generous bounds on what the engine can run (the d24 model is
 * depth 24, width 1536), not limits of the format.
 *
 * - `depth` [1, 1000], `width` [1, 65536], `heads` [1, 1024], `mlp_ratio` (0, 64],
 *   `vocab` [2, 2^20], `cvae` [1, 4096], `num_classes` [2, 65536], `vq_ch` [1, 65536],
 *   `vq_num_res` [0, 64], `share_quant_resi` [1, 64] (the number of Phi convs);
 * - `patch_nums`: 2 to 64 sizes in [1, 1024], strictly increasing from 1; `cond_ch`: 2 to 11
 *   channel counts; `vq_ch_mult`: 1 to 11 multipliers in [1, 64];
 * - `quant_resi` [0, 1] (Phi(h) = (1 - r) h + r conv(h) mixes, so r is a fraction);
 *   `rope_base` (1, 1e7] (a base <= 1 makes every RoPE frequency >= 1);
 * - `vq_attn_at_lowest`, `sca`, `has_encoder`: "0" or "1"; `format`: "alignvar";
 *   `dtype`: "f32", "f16" or "bf16" (the storage dtype of the castable weights);
 * - `cfg` [0, 100] (the guidance default), `color_fix` "adain", "wavelet" or "none";
 *   `status`: any text (escape it before printing: src/text.ts `escapeControl`);
 * - `latent` "image" or "residual", `residual_scale` [1/64, 64] (only with latent "residual");
 * - `decoder_lr` "0" or "1": the LR-conditioned decoder (tensors `decoder.lr_in.<l>.*`);
 * - `token_mode` "sample" (spec 5.1) or "mean" (each scale's map is softmax(G) E).
 */
export const METADATA_KEYS = Object.freeze({
  depth: intKey(1, 1000),
  width: intKey(1, 65536),
  heads: intKey(1, 1024),
  mlp_ratio: floatKey(0, 64, true),
  vocab: intKey(2, 1 << 20),
  cvae: intKey(1, 4096),
  num_classes: intKey(2, 65536),
  patch_nums: listKey(2, 64, 1, 1024),
  cond_ch: listKey(2, 11, 1, 65536),
  vq_ch: intKey(1, 65536),
  vq_ch_mult: listKey(1, 11, 1, 64),
  vq_num_res: intKey(0, 64),
  vq_attn_at_lowest: BOOL,
  share_quant_resi: intKey(1, 64),
  quant_resi: floatKey(0, 1),
  rope_base: floatKey(1, 1e7, true),
  sca: BOOL,
  has_encoder: BOOL,
  format: choiceKey(['alignvar'] as const),
  dtype: choiceKey(['f32', 'f16', 'bf16'] as const),
  cfg: floatKey(0, MAX_CFG),
  color_fix: choiceKey(COLOR_FIXES),
  status: TEXT,
  latent: choiceKey(['image', 'residual'] as const),
  residual_scale: floatKey(1 / 64, 64),
  decoder_lr: BOOL,
  token_mode: choiceKey(['sample', 'mean'] as const),
});

/** The parsed values of the {@link METADATA_KEYS} a file states. */
export type ModelMetadata = {
  -readonly [K in keyof typeof METADATA_KEYS]?: (typeof METADATA_KEYS)[K] extends MetadataKey<infer T> ? T : never;
};

/**
 * Parses every known key of a file's `__metadata__` (see {@link METADATA_KEYS}); unknown keys
 * are skipped. Does not look at tensors.
 *
 * @param metadata - The `__metadata__` strings.
 * @param file - The file path, for error messages.
 * @param evidence - What the tensors say about a key (e.g. `the file has 2 transformer blocks`),
 *   appended to the message of a rejected value; optional.
 * @returns The values of the keys present.
 * @throws WeightsError `Expected <what> for metadata <key> but received "<value>"[; <evidence>]`.
 */
export function parseModelMetadata(
  metadata: Readonly<Record<string, string>>,
  file: string,
  evidence: (key: string) => string | undefined = () => undefined,
): ModelMetadata {
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(METADATA_KEYS) as [string, MetadataKey<unknown>][]) {
    if (!Object.hasOwn(metadata, key)) continue;
    const text = metadata[key]!;
    const value = spec.parse(text);
    if (value === undefined) {
      const says = evidence(key);
      const tail = says === undefined ? '' : `; ${says}`;
      throw bad(file, `Expected ${spec.expected} for metadata ${key} but received ${quoteText(text)}${tail}`);
    }
    out[key] = value;
  }
  const parsed = out as ModelMetadata;
  if (parsed.patch_nums !== undefined) {
    const why = checkPatchNums(parsed.patch_nums);
    if (why !== undefined) throw bad(file, `metadata patch_nums=${quoteText(metadata.patch_nums!)}: expected ${why}`);
  }
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// What the tensors say
// ---------------------------------------------------------------------------------------------

/** The distinct indices N of the tensor names `${prefix}N.`..., ascending. */
function indicesAfter(tensors: ReadonlyMap<string, TensorShapeInfo>, prefix: string): number[] {
  const seen = new Set<number>();
  for (const name of tensors.keys()) {
    if (!name.startsWith(prefix)) continue;
    const m = /^([0-9]{1,9})\./.exec(name.slice(prefix.length));
    if (m) seen.add(Number(m[1]));
  }
  return [...seen].sort((a, b) => a - b);
}

/** "N things (prefix0 to prefixM)" for a list of indices. */
function countText(what: string, prefix: string, idx: readonly number[]): string {
  if (idx.length === 0) return `no ${prefix}* tensors`;
  const span = idx.length === 1 ? `${prefix}${idx[0]}` : `${prefix}${idx[0]} to ${prefix}${idx[idx.length - 1]}`;
  return `${idx.length} ${what} (${span})`;
}

function dim(tensors: ReadonlyMap<string, TensorShapeInfo>, name: string, axis: number): number | undefined {
  return tensors.get(name)?.shape[axis];
}

/** `name is [a, b]`, for contradiction messages. */
function shapeSays(tensors: ReadonlyMap<string, TensorShapeInfo>, name: string): string {
  return `${name} is ${fmtShape(tensors.get(name)?.shape ?? [])}`;
}

/** What the tensors say about a metadata key, for the message of a rejected value. */
function tensorEvidence(t: ReadonlyMap<string, TensorShapeInfo>, key: string): string | undefined {
  const shapes = (...names: string[]) => {
    const have = names.filter((n) => t.has(n));
    return have.length === 0 ? undefined : have.map((n) => shapeSays(t, n)).join(', ');
  };
  switch (key) {
    case 'depth':
      return `the file has ${countText('transformer blocks', 'blocks.', indicesAfter(t, 'blocks.'))}`;
    case 'width':
    case 'cvae':
      return shapes('word_embed.weight');
    case 'heads':
      return shapes('blocks.0.attn.scale_mul_1H11');
    case 'mlp_ratio':
      return shapes('blocks.0.ffn.fc1.weight', 'word_embed.weight');
    case 'vocab':
      return shapes('head.weight');
    case 'num_classes':
      return shapes('class_emb.weight');
    case 'patch_nums':
      return shapes('lvl_embed.weight', 'pos_start');
    case 'vq_ch':
      return shapes('decoder.conv_out.weight');
    case 'vq_ch_mult':
      return `the decoder has ${countText('levels', 'decoder.up.', indicesAfter(t, 'decoder.up.'))}`;
    case 'vq_num_res':
      return `the decoder has ${countText('blocks at level 0', 'decoder.up.0.block.', indicesAfter(t, 'decoder.up.0.block.'))}`;
    case 'share_quant_resi': {
      const phi = indicesAfter(t, 'quantize.quant_resi.qresi_ls.');
      return `the file has ${countText('Phi convs', 'quantize.quant_resi.qresi_ls.', phi)}`;
    }
    default:
      return undefined;
  }
}

/** The error for a metadata value the tensors contradict. */
function contradiction(file: string, meta: Readonly<Record<string, string>>, key: string, says: string): WeightsError {
  return bad(file, `metadata ${key}=${quoteText(meta[key] ?? '')} contradicts the tensors: ${says}`);
}

/** Whether two numbers, booleans or number lists are equal. */
function same(a: number | boolean | readonly number[], b: number | boolean | readonly number[]): boolean {
  if (!Array.isArray(a) || !Array.isArray(b)) return a === b;
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Tensor families the engine reads: a tensor there that the configuration does not name is an error. */
const READ_PREFIXES = ['blocks.', 'con_embedding.', 'decoder.', 'quantize.quant_resi.', 'sca.'];
/** Buffers inside those families that the engine recomputes (spec 8.1): tolerated, not read. */
const IGNORED_SUFFIXES = ['.zero_k_bias'];

/** The names of the SCA tensors for a given depth (spec 11.7). */
export function scaTensorNames(depth: number): string[] {
  const names = [
    'sca.mask.0.weight',
    'sca.mask.0.bias',
    'sca.mask.2.weight',
    'sca.mask.2.bias',
    'sca.mask.4.weight',
    'sca.mask.4.bias',
    'sca.level_embed.weight',
    'sca.gamma',
  ];
  for (let i = 0; i < depth; i++) names.push(`blocks.${i}.attn.mask_lambda`);
  return names;
}

/**
 * Tensors of one VQVAE ResnetBlock at prefix `p` (spec 7; encoder and decoder alike):
 * GroupNorm affine pairs, two 3x3 convs, and a 1x1 `nin_shortcut` when `cin != cout`.
 */
export function vqResBlockTensors(p: string, cin: number, cout: number): ExpectedTensor[] {
  const out: ExpectedTensor[] = [
    { name: `${p}.norm1.weight`, shape: [cin] },
    { name: `${p}.norm1.bias`, shape: [cin] },
    { name: `${p}.conv1.weight`, shape: [cout, cin, 3, 3] },
    { name: `${p}.conv1.bias`, shape: [cout] },
    { name: `${p}.norm2.weight`, shape: [cout] },
    { name: `${p}.norm2.bias`, shape: [cout] },
    { name: `${p}.conv2.weight`, shape: [cout, cout, 3, 3] },
    { name: `${p}.conv2.bias`, shape: [cout] },
  ];
  if (cin !== cout)
    out.push(
      { name: `${p}.nin_shortcut.weight`, shape: [cout, cin, 1, 1] },
      { name: `${p}.nin_shortcut.bias`, shape: [cout] },
    );
  return out;
}

/** Tensors of one VQVAE single-head AttnBlock of `c` channels at prefix `p` (spec 7). */
export function vqAttnTensors(p: string, c: number): ExpectedTensor[] {
  return [
    { name: `${p}.norm.weight`, shape: [c] },
    { name: `${p}.norm.bias`, shape: [c] },
    { name: `${p}.qkv.weight`, shape: [3 * c, c, 1, 1] },
    { name: `${p}.qkv.bias`, shape: [3 * c] },
    { name: `${p}.proj_out.weight`, shape: [c, c, 1, 1] },
    { name: `${p}.proj_out.bias`, shape: [c] },
  ];
}

/**
 * Every tensor the engine reads, in a fixed order (conditioning net, transformer, SCA, VQVAE),
 * with the shape `cfg` implies.
 */
export function expectedTensors(cfg: ModelConfig): ExpectedTensor[] {
  const out: ExpectedTensor[] = [];
  const add = (name: string, ...shape: number[]) => out.push({ name, shape });
  const C = cfg.width;
  const cc = cfg.condCh;
  // Conditioning net (spec 3): conv_in, then per stage a stride-1 and a stride-2 conv.
  add('con_embedding.conv_in.weight', cc[0]!, 3, 3, 3);
  add('con_embedding.conv_in.bias', cc[0]!);
  for (let s = 0; s + 1 < cc.length; s++) {
    add(`con_embedding.blocks.${2 * s}.weight`, cc[s]!, cc[s]!, 3, 3);
    add(`con_embedding.blocks.${2 * s}.bias`, cc[s]!);
    add(`con_embedding.blocks.${2 * s + 1}.weight`, cc[s + 1]!, cc[s]!, 3, 3);
    add(`con_embedding.blocks.${2 * s + 1}.bias`, cc[s + 1]!);
  }
  add('con_embedding.conv_out.weight', C, cc[cc.length - 1]!, 3, 3);
  add('con_embedding.conv_out.bias', C);
  // Transformer (spec 4, 8.2).
  const K = cfg.patchNums.length;
  add('word_embed.weight', C, cfg.cvae);
  add('word_embed.bias', C);
  add('class_emb.weight', cfg.numClasses, C);
  add('pos_start', 1, cfg.grid * cfg.grid + 1, C);
  add('lvl_embed.weight', K, C);
  for (let i = 0; i < cfg.depth; i++) {
    const p = `blocks.${i}.`;
    add(`${p}attn.mat_qkv.weight`, 3 * C, C);
    add(`${p}attn.q_bias`, C);
    add(`${p}attn.v_bias`, C);
    add(`${p}attn.scale_mul_1H11`, 1, cfg.heads, 1, 1);
    add(`${p}attn.proj.weight`, C, C);
    add(`${p}attn.proj.bias`, C);
    add(`${p}ffn.fc1.weight`, cfg.mlpHidden, C);
    add(`${p}ffn.fc1.bias`, cfg.mlpHidden);
    add(`${p}ffn.fc2.weight`, C, cfg.mlpHidden);
    add(`${p}ffn.fc2.bias`, C);
    add(`${p}ada_lin.1.weight`, 6 * C, C);
    add(`${p}ada_lin.1.bias`, 6 * C);
  }
  add('head_nm.ada_lin.1.weight', 2 * C, C);
  add('head_nm.ada_lin.1.bias', 2 * C);
  add('head.weight', cfg.vocab, C);
  add('head.bias', cfg.vocab);
  // SCA (spec 11.7).
  if (cfg.sca) {
    add('sca.mask.0.weight', SCA_HIDDEN, 1 + SCA_LEVEL_EMBED_DIM, 3, 3);
    add('sca.mask.0.bias', SCA_HIDDEN);
    add('sca.mask.2.weight', SCA_HIDDEN, SCA_HIDDEN, 3, 3);
    add('sca.mask.2.bias', SCA_HIDDEN);
    add('sca.mask.4.weight', 1, SCA_HIDDEN + 1, 1, 1);
    add('sca.mask.4.bias', 1);
    add('sca.level_embed.weight', K, SCA_LEVEL_EMBED_DIM);
    add('sca.gamma', K);
    for (let i = 0; i < cfg.depth; i++) add(`blocks.${i}.attn.mask_lambda`, cfg.heads);
  }
  // VQVAE inference side (spec 7.1, 8.3).
  const Cv = cfg.cvae;
  add('quantize.embedding.weight', cfg.vocab, Cv);
  for (let j = 0; j < cfg.nPhi; j++) {
    add(`quantize.quant_resi.qresi_ls.${j}.weight`, Cv, Cv, 3, 3);
    add(`quantize.quant_resi.qresi_ls.${j}.bias`, Cv);
  }
  add('post_quant_conv.weight', Cv, Cv, 3, 3);
  add('post_quant_conv.bias', Cv);
  const mult = cfg.vqChMult;
  const levels = mult.length;
  let blockIn = cfg.vqCh * mult[levels - 1]!;
  add('decoder.conv_in.weight', blockIn, Cv, 3, 3);
  add('decoder.conv_in.bias', blockIn);
  const res = (p: string, cin: number, cout: number) => out.push(...vqResBlockTensors(p, cin, cout));
  const attn = (p: string, c: number) => out.push(...vqAttnTensors(p, c));
  res('decoder.mid.block_1', blockIn, blockIn);
  attn('decoder.mid.attn_1', blockIn);
  res('decoder.mid.block_2', blockIn, blockIn);
  for (let l = levels - 1; l >= 0; l--) {
    const blockOut = cfg.vqCh * mult[l]!;
    if (cfg.decoderLr) {
      add(`decoder.lr_in.${l}.weight`, blockIn, 3, 3, 3);
      add(`decoder.lr_in.${l}.bias`, blockIn);
    }
    for (let b = 0; b < cfg.vqNumRes + 1; b++) {
      res(`decoder.up.${l}.block.${b}`, blockIn, blockOut);
      blockIn = blockOut;
      if (l === levels - 1 && cfg.vqAttnAtLowest) attn(`decoder.up.${l}.attn.${b}`, blockIn);
    }
    if (l !== 0) {
      add(`decoder.up.${l}.upsample.conv.weight`, blockIn, blockIn, 3, 3);
      add(`decoder.up.${l}.upsample.conv.bias`, blockIn);
    }
  }
  add('decoder.norm_out.weight', blockIn);
  add('decoder.norm_out.bias', blockIn);
  add('decoder.conv_out.weight', 3, blockIn, 3, 3);
  add('decoder.conv_out.bias', 3);
  return out;
}

/**
 * Detects the configuration of a weights file and checks every tensor the engine reads.
 *
 * Every known metadata value is parsed strictly and range-checked ({@link METADATA_KEYS}), then
 * compared with what the tensor shapes say (spec 8.4: block count, widths, head count, scale
 * count and last scale, channel lists, decoder blocks per level, attention at the lowest level,
 * Phi convs, SCA, encoder, storage dtype) before any of it is used, so a value that would make
 * the loader loop or read a subset of the blocks is an error naming the key, the value and what
 * the tensors say. Sizes the metadata does not state are derived from shapes; `patch_nums`
 * defaults to the 512-px schedule (its inner sizes cannot be derived from shapes). SCA is on when
 * all SCA tensors are present, off when none are, and an error listing the missing ones when
 * only some are. A tensor in a family the engine reads (`blocks.*`, `decoder.*`, ...) that the
 * configuration does not name is an error too: it would be silently ignored.
 *
 * @param header - The file's metadata and tensor table.
 * @param file - The file path, for error messages.
 * @throws WeightsError naming the metadata key that is invalid or contradicts the tensors, or the
 *   first tensor that is missing, unexpected, has an unsupported dtype or a shape the
 *   configuration does not imply.
 */
export function detectConfig(header: WeightsHeader, file: string): ModelConfig {
  const t = header.tensors;
  const raw = header.metadata ?? {};
  const meta = parseModelMetadata(raw, file, (key) => tensorEvidence(t, key));
  /** Checks a metadata value against the shapes' value (when the shapes state one). */
  const agree = <T extends number | boolean | number[]>(
    key: keyof ModelMetadata,
    fromMeta: T | undefined,
    fromShapes: T | undefined,
    says: () => string,
  ): T | undefined => {
    if (fromMeta !== undefined && fromShapes !== undefined && !same(fromMeta, fromShapes))
      throw contradiction(file, raw, key, says());
    return fromMeta ?? fromShapes;
  };

  const wordEmbed = 'word_embed.weight';
  const width =
    agree('width', meta.width, dim(t, wordEmbed, 0), () => `${shapeSays(t, wordEmbed)} (width first)`) ?? D24.width;
  const cvae =
    agree('cvae', meta.cvae, dim(t, wordEmbed, 1), () => `${shapeSays(t, wordEmbed)} (latent channels second)`) ??
    D24.cvae;
  const blockIdx = indicesAfter(t, 'blocks.');
  const depth =
    agree(
      'depth',
      meta.depth,
      blockIdx.length > 0 ? blockIdx.length : undefined,
      () => `the file has ${countText('transformer blocks', 'blocks.', blockIdx)}`,
    ) ?? D24.depth;
  if (meta.depth !== undefined && blockIdx.length === 0 && t.size > 0 && t.has(wordEmbed))
    throw contradiction(file, raw, 'depth', `the file has ${countText('transformer blocks', 'blocks.', blockIdx)}`);
  const scaleMul = 'blocks.0.attn.scale_mul_1H11';
  const heads =
    agree('heads', meta.heads, dim(t, scaleMul, 1), () => `${shapeSays(t, scaleMul)} (heads second)`) ?? D24.heads;
  const fc1 = 'blocks.0.ffn.fc1.weight';
  const hiddenFromShapes = dim(t, fc1, 0);
  if (
    meta.mlp_ratio !== undefined &&
    hiddenFromShapes !== undefined &&
    Math.round(meta.mlp_ratio * width) !== hiddenFromShapes
  )
    throw contradiction(
      file,
      raw,
      'mlp_ratio',
      `${shapeSays(t, fc1)}: hidden ${hiddenFromShapes} = ${hiddenFromShapes / width} x width ${width}`,
    );
  const mlpHidden =
    meta.mlp_ratio !== undefined ? Math.round(meta.mlp_ratio * width) : (hiddenFromShapes ?? D24.mlpRatio * width);
  const vocab =
    agree('vocab', meta.vocab, dim(t, 'head.weight', 0), () => `${shapeSays(t, 'head.weight')} (vocabulary first)`) ??
    D24.vocab;
  const numClasses =
    agree(
      'num_classes',
      meta.num_classes,
      dim(t, 'class_emb.weight', 0),
      () => `${shapeSays(t, 'class_emb.weight')} (classes first)`,
    ) ?? D24.numClasses;

  // Scales: K from lvl_embed, the last size from the prefix length pn_last^2 + 1 (spec 8.4).
  const patchNums = meta.patch_nums ?? [...DEFAULT_PATCH_NUMS];
  const K = dim(t, 'lvl_embed.weight', 0);
  if (meta.patch_nums !== undefined && K !== undefined && K !== patchNums.length)
    throw contradiction(
      file,
      raw,
      'patch_nums',
      `${shapeSays(t, 'lvl_embed.weight')}: ${K} scales, not ${patchNums.length}`,
    );
  const prefix = dim(t, 'pos_start', 1);
  const grid = patchNums[patchNums.length - 1]!;
  if (meta.patch_nums !== undefined && prefix !== undefined && prefix !== grid * grid + 1)
    throw contradiction(
      file,
      raw,
      'patch_nums',
      `${shapeSays(t, 'pos_start')}: a prefix of ${prefix} tokens, not ${grid}^2 + 1 = ${grid * grid + 1} for a last scale of ${grid}`,
    );

  // Conditioning net: conv_in width, then the output width of every stride-2 conv (odd blocks).
  const condIdx = indicesAfter(t, 'con_embedding.blocks.');
  const c0 = dim(t, 'con_embedding.conv_in.weight', 0);
  let condFromShapes: number[] | undefined;
  if (c0 !== undefined && condIdx.length > 0) {
    condFromShapes = [c0];
    for (let j = 1; j < condIdx.length; j += 2) condFromShapes.push(dim(t, `con_embedding.blocks.${j}.weight`, 0) ?? 0);
  }
  const condCh = agree('cond_ch', meta.cond_ch, condFromShapes, () => {
    const list = condFromShapes!.join(',');
    return `con_embedding.conv_in and the ${countText('conditioning convs', 'con_embedding.blocks.', condIdx)} give ${list}`;
  }) ?? [...D24.condCh];
  if (condCh.length < 2 || condCh.some((c) => c < 1))
    throw bad(file, `conditioning-net channel list [${condCh.join(', ')}] needs at least 2 positive entries`);

  // VQVAE decoder: base channels from conv_out, one multiplier per level from its first block.
  const convOut = 'decoder.conv_out.weight';
  const vqCh =
    agree('vq_ch', meta.vq_ch, dim(t, convOut, 1), () => `${shapeSays(t, convOut)} (base channels second)`) ?? D24.vqCh;
  const levelIdx = indicesAfter(t, 'decoder.up.');
  let vqChMult = meta.vq_ch_mult;
  if (vqChMult !== undefined && levelIdx.length > 0) {
    if (vqChMult.length !== levelIdx.length)
      throw contradiction(file, raw, 'vq_ch_mult', `the decoder has ${countText('levels', 'decoder.up.', levelIdx)}`);
    vqChMult.forEach((m, l) => {
      const name = `decoder.up.${l}.block.0.conv1.weight`;
      const c = dim(t, name, 0);
      if (c !== undefined && c !== vqCh * m)
        throw contradiction(
          file,
          raw,
          'vq_ch_mult',
          `${shapeSays(t, name)}: ${c} channels at level ${l}, not ${m} x vq_ch ${vqCh}`,
        );
    });
  }
  if (vqChMult === undefined) {
    if (levelIdx.length === 0) vqChMult = [...D24.vqChMult];
    else
      vqChMult = levelIdx.map((_, l) =>
        Math.max(1, Math.round((dim(t, `decoder.up.${l}.block.0.conv1.weight`, 0) ?? vqCh) / vqCh)),
      );
  }
  const upBlocks = indicesAfter(t, 'decoder.up.0.block.');
  const vqNumRes =
    agree('vq_num_res', meta.vq_num_res, upBlocks.length > 0 ? upBlocks.length - 1 : undefined, () => {
      return `the decoder has ${countText('blocks at level 0', 'decoder.up.0.block.', upBlocks)}, i.e. vq_num_res + 1 = ${upBlocks.length}`;
    }) ?? D24.vqNumRes;
  const lowest = `decoder.up.${vqChMult.length - 1}.attn.`;
  const attnIdx = indicesAfter(t, lowest);
  const haveDecoder = levelIdx.length > 0;
  const vqAttnAtLowest =
    agree('vq_attn_at_lowest', meta.vq_attn_at_lowest, haveDecoder ? attnIdx.length > 0 : undefined, () =>
      attnIdx.length > 0
        ? `the lowest decoder level has ${countText('attention blocks', lowest, attnIdx)}`
        : `the lowest decoder level has no ${lowest}* tensors`,
    ) ?? attnIdx.length > 0;
  const phiIdx = indicesAfter(t, 'quantize.quant_resi.qresi_ls.');
  const nPhi =
    agree('share_quant_resi', meta.share_quant_resi, phiIdx.length > 0 ? phiIdx.length : undefined, () => {
      return `the file has ${countText('Phi convs', 'quantize.quant_resi.qresi_ls.', phiIdx)}`;
    }) ?? D24.nPhi;
  const quantResi = meta.quant_resi ?? D24.quantResi;
  const ropeBase = meta.rope_base ?? D24.ropeBase;

  // SCA: all or nothing (spec 11.7); metadata, when present, must agree.
  const scaNames = scaTensorNames(depth);
  const missing = scaNames.filter((n) => !t.has(n));
  let sca: boolean;
  if (missing.length === 0) sca = true;
  else if (missing.length === scaNames.length) sca = false;
  else throw bad(file, `SCA tensors are only partly present; missing: ${missing.join(', ')}`);
  if (meta.sca === true && !sca)
    throw bad(file, `metadata sca=1 but the SCA tensors are missing: ${missing.join(', ')}`);
  if (meta.sca === false && sca) throw bad(file, 'metadata sca=0 but the file holds SCA tensors');

  // The encoder is training-only (ignored), but the metadata must say whether it is there.
  const hasEncoder = [...t.keys()].some((n) => n.startsWith('encoder.'));
  if (meta.has_encoder !== undefined && meta.has_encoder !== hasEncoder)
    throw contradiction(
      file,
      raw,
      'has_encoder',
      hasEncoder ? 'the file holds encoder.* tensors' : 'the file has no encoder.* tensors',
    );

  // Storage dtype: every float tensor is F32 or the stated dtype, and some tensor is the stated one.
  if (meta.dtype !== undefined) {
    const stated = meta.dtype.toUpperCase();
    const counts = new Map<string, number>();
    for (const info of t.values()) counts.set(info.dtype, (counts.get(info.dtype) ?? 0) + 1);
    const list = () => [...counts].map(([d, n]) => `${n} ${d}`).join(', ');
    const other = ['F16', 'BF16'].find((d) => d !== stated && counts.has(d));
    if (other !== undefined || (stated !== 'F32' && !counts.has(stated)))
      throw contradiction(file, raw, 'dtype', `the tensors are ${list()}`);
  }

  // Invariants between sizes.
  if (width % heads !== 0 || (width / heads) % 4 !== 0)
    throw bad(file, `width ${width} and heads ${heads} give a head dim that is not a multiple of 4`);
  if (numClasses < 2) throw bad(file, `num_classes ${numClasses} must be >= 2`);
  if (nPhi < 1) throw bad(file, `share_quant_resi ${nPhi} must be >= 1`);
  for (const m of vqChMult)
    if ((vqCh * m) % VQ_GROUPS !== 0)
      throw bad(file, `VQVAE channel count ${vqCh * m} is not divisible by ${VQ_GROUPS} GroupNorm groups`);
  const down = 2 ** (vqChMult.length - 1);
  if (2 ** (condCh.length - 1) !== down)
    throw bad(file, `the conditioning net downsamples by ${2 ** (condCh.length - 1)} but the VQVAE by ${down}`);
  const hrSize = down * grid;
  if (hrSize % 4 !== 0) throw bad(file, `HR size ${hrSize} is not divisible by 4`);
  const latent = meta.latent ?? 'image';
  if (meta.residual_scale !== undefined && latent !== 'residual')
    throw bad(file, `metadata residual_scale=${quoteText(raw.residual_scale ?? '')} needs latent "residual"`);

  const cfg: ModelConfig = {
    depth,
    width,
    heads,
    mlpHidden,
    vocab,
    cvae,
    numClasses,
    patchNums,
    condCh,
    vqCh,
    vqChMult,
    vqNumRes,
    vqAttnAtLowest,
    nPhi,
    quantResi,
    ropeBase,
    sca,
    grid,
    hrSize,
    lrSize: hrSize / 4,
    // only residual files carry the fields: an image-latent config is exactly what it was before
    ...(latent === 'residual' ? { latent, residualScale: meta.residual_scale ?? 1 } : {}),
    ...(meta.decoder_lr ? { decoderLr: true } : {}),
    ...(meta.token_mode === 'mean' ? { tokenMode: 'mean' as const } : {}),
  };

  const expected = expectedTensors(cfg);
  for (const e of expected) {
    const info = t.get(e.name);
    if (info === undefined) throw bad(file, `missing (expected shape ${fmtShape(e.shape)})`, e.name);
    if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16')
      throw bad(file, `dtype ${info.dtype} is not supported (expected F32, F16 or BF16)`, e.name);
    const ok = info.shape.length === e.shape.length && info.shape.every((d, i) => d === e.shape[i]);
    if (!ok) throw bad(file, `expected shape ${fmtShape(e.shape)} but found ${fmtShape(info.shape)}`, e.name);
  }
  const names = new Set(expected.map((e) => e.name));
  for (const name of t.keys()) {
    if (
      names.has(name) ||
      !READ_PREFIXES.some((p) => name.startsWith(p)) ||
      IGNORED_SUFFIXES.some((s) => name.endsWith(s))
    )
      continue;
    const shape = `depth ${depth}, ${cfg.condCh.length - 1} conditioning stages, ${vqChMult.length} decoder levels of ${vqNumRes + 1} blocks, attention at the lowest ${vqAttnAtLowest ? 1 : 0}, ${nPhi} Phi convs, SCA ${sca ? 1 : 0}`;
    throw bad(file, `not part of the model the metadata and shapes describe (${shape}); it would be ignored`, name);
  }
  return cfg;
}

/** The schedule of a configuration. */
export function scheduleOf(cfg: ModelConfig): Schedule {
  return makeSchedule(cfg.patchNums, cfg.nPhi);
}
