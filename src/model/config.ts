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
import { DEFAULT_PATCH_NUMS, checkPatchNums, makeSchedule, parsePatchNums, type Schedule } from './schedule.js';

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

/** Reads metadata key `key` as a non-negative integer; undefined when absent. */
function metaInt(file: string, meta: Readonly<Record<string, string>>, key: string): number | undefined {
  const s = meta[key];
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s.trim())) throw bad(file, `metadata ${key}=${JSON.stringify(s)} is not an integer`);
  return Number(s.trim());
}

function metaFloat(file: string, meta: Readonly<Record<string, string>>, key: string): number | undefined {
  const s = meta[key];
  if (s === undefined) return undefined;
  const v = Number(s.trim());
  if (s.trim() === '' || !Number.isFinite(v)) throw bad(file, `metadata ${key}=${JSON.stringify(s)} is not a number`);
  return v;
}

function metaList(file: string, meta: Readonly<Record<string, string>>, key: string): number[] | undefined {
  const s = meta[key];
  if (s === undefined) return undefined;
  const v = parsePatchNums(s);
  if (v === undefined) throw bad(file, `metadata ${key}=${JSON.stringify(s)} is not a comma-separated integer list`);
  return v;
}

function metaBool(file: string, meta: Readonly<Record<string, string>>, key: string): boolean | undefined {
  const s = meta[key];
  if (s === undefined) return undefined;
  if (s !== '0' && s !== '1') throw bad(file, `metadata ${key}=${JSON.stringify(s)} is not "0" or "1"`);
  return s === '1';
}

/** Counts i = 0, 1, ... while `pattern(i)` is a tensor name. */
function countWhile(tensors: ReadonlyMap<string, TensorShapeInfo>, pattern: (i: number) => string): number {
  let n = 0;
  while (tensors.has(pattern(n))) n++;
  return n;
}

function dim(tensors: ReadonlyMap<string, TensorShapeInfo>, name: string, axis: number): number | undefined {
  return tensors.get(name)?.shape[axis];
}

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
  const res = (p: string, cin: number, cout: number) => {
    add(`${p}.norm1.weight`, cin);
    add(`${p}.norm1.bias`, cin);
    add(`${p}.conv1.weight`, cout, cin, 3, 3);
    add(`${p}.conv1.bias`, cout);
    add(`${p}.norm2.weight`, cout);
    add(`${p}.norm2.bias`, cout);
    add(`${p}.conv2.weight`, cout, cout, 3, 3);
    add(`${p}.conv2.bias`, cout);
    if (cin !== cout) {
      add(`${p}.nin_shortcut.weight`, cout, cin, 1, 1);
      add(`${p}.nin_shortcut.bias`, cout);
    }
  };
  const attn = (p: string, c: number) => {
    add(`${p}.norm.weight`, c);
    add(`${p}.norm.bias`, c);
    add(`${p}.qkv.weight`, 3 * c, c, 1, 1);
    add(`${p}.qkv.bias`, 3 * c);
    add(`${p}.proj_out.weight`, c, c, 1, 1);
    add(`${p}.proj_out.bias`, c);
  };
  res('decoder.mid.block_1', blockIn, blockIn);
  attn('decoder.mid.attn_1', blockIn);
  res('decoder.mid.block_2', blockIn, blockIn);
  for (let l = levels - 1; l >= 0; l--) {
    const blockOut = cfg.vqCh * mult[l]!;
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
 * Metadata values win; sizes the metadata does not state are derived from shapes (spec 8.4);
 * `patch_nums` defaults to the 512-px schedule. SCA is on when all SCA tensors are present,
 * off when none are, and an error listing the missing ones when only some are.
 *
 * @param header - The file's metadata and tensor table.
 * @param file - The file path, for error messages.
 * @throws WeightsError naming the first tensor that is missing, has an unsupported dtype or a
 *   shape the configuration does not imply.
 */
export function detectConfig(header: WeightsHeader, file: string): ModelConfig {
  const t = header.tensors;
  const meta = header.metadata ?? {};

  const width = metaInt(file, meta, 'width') ?? dim(t, 'word_embed.weight', 0) ?? D24.width;
  const cvae = metaInt(file, meta, 'cvae') ?? dim(t, 'word_embed.weight', 1) ?? D24.cvae;
  const depthFromShapes = countWhile(t, (i) => `blocks.${i}.attn.mat_qkv.weight`);
  const depth = metaInt(file, meta, 'depth') ?? (depthFromShapes > 0 ? depthFromShapes : D24.depth);
  const heads = metaInt(file, meta, 'heads') ?? dim(t, 'blocks.0.attn.scale_mul_1H11', 1) ?? D24.heads;
  const ratio = metaFloat(file, meta, 'mlp_ratio');
  const mlpHidden =
    ratio !== undefined ? Math.round(ratio * width) : (dim(t, 'blocks.0.ffn.fc1.weight', 0) ?? D24.mlpRatio * width);
  const vocab = metaInt(file, meta, 'vocab') ?? dim(t, 'head.weight', 0) ?? D24.vocab;
  const numClasses = metaInt(file, meta, 'num_classes') ?? dim(t, 'class_emb.weight', 0) ?? D24.numClasses;

  const patchNums = metaList(file, meta, 'patch_nums') ?? [...DEFAULT_PATCH_NUMS];
  const pnBad = checkPatchNums(patchNums);
  if (pnBad !== undefined) throw bad(file, `metadata patch_nums=${patchNums.join(',')}: expected ${pnBad}`);

  // Conditioning net: conv_in width, then the output width of every stride-2 conv (odd blocks).
  let condCh = metaList(file, meta, 'cond_ch');
  if (condCh === undefined) {
    const c0 = dim(t, 'con_embedding.conv_in.weight', 0);
    const nBlocks = countWhile(t, (i) => `con_embedding.blocks.${i}.weight`);
    if (c0 === undefined || nBlocks === 0) condCh = [...D24.condCh];
    else {
      condCh = [c0];
      for (let j = 1; j < nBlocks; j += 2) condCh.push(dim(t, `con_embedding.blocks.${j}.weight`, 0) ?? 0);
    }
  }
  if (condCh.length < 2 || condCh.some((c) => c < 1))
    throw bad(file, `conditioning-net channel list [${condCh.join(', ')}] needs at least 2 positive entries`);

  // VQVAE decoder: base channels from conv_out, multipliers from each level's first block.
  const vqCh = metaInt(file, meta, 'vq_ch') ?? dim(t, 'decoder.conv_out.weight', 1) ?? D24.vqCh;
  let vqChMult = metaList(file, meta, 'vq_ch_mult');
  const levelsFromShapes = countWhile(t, (l) => `decoder.up.${l}.block.0.conv1.weight`);
  if (vqChMult === undefined) {
    if (levelsFromShapes === 0) vqChMult = [...D24.vqChMult];
    else {
      vqChMult = [];
      for (let l = 0; l < levelsFromShapes; l++)
        vqChMult.push(Math.max(1, Math.round((dim(t, `decoder.up.${l}.block.0.conv1.weight`, 0) ?? vqCh) / vqCh)));
    }
  }
  const upBlocks = countWhile(t, (b) => `decoder.up.0.block.${b}.conv1.weight`);
  const vqNumRes = metaInt(file, meta, 'vq_num_res') ?? (upBlocks > 0 ? upBlocks - 1 : D24.vqNumRes);
  const vqAttnAtLowest =
    metaBool(file, meta, 'vq_attn_at_lowest') ?? t.has(`decoder.up.${vqChMult.length - 1}.attn.0.qkv.weight`);
  const phiFromShapes = countWhile(t, (j) => `quantize.quant_resi.qresi_ls.${j}.weight`);
  const nPhi = metaInt(file, meta, 'share_quant_resi') ?? (phiFromShapes > 0 ? phiFromShapes : D24.nPhi);
  const quantResi = metaFloat(file, meta, 'quant_resi') ?? D24.quantResi;
  const ropeBase = metaFloat(file, meta, 'rope_base') ?? D24.ropeBase;

  // SCA: all or nothing (spec 11.7); metadata, when present, must agree.
  const scaNames = scaTensorNames(depth);
  const missing = scaNames.filter((n) => !t.has(n));
  let sca: boolean;
  if (missing.length === 0) sca = true;
  else if (missing.length === scaNames.length) sca = false;
  else throw bad(file, `SCA tensors are only partly present; missing: ${missing.join(', ')}`);
  const metaSca = metaBool(file, meta, 'sca');
  if (metaSca === true && !sca)
    throw bad(file, `metadata sca=1 but the SCA tensors are missing: ${missing.join(', ')}`);
  if (metaSca === false && sca) throw bad(file, 'metadata sca=0 but the file holds SCA tensors');

  // Invariants between sizes.
  if (width % heads !== 0 || (width / heads) % 4 !== 0)
    throw bad(file, `width ${width} and heads ${heads} give a head dim that is not a multiple of 4`);
  if (numClasses < 2) throw bad(file, `num_classes ${numClasses} must be >= 2`);
  if (nPhi < 1) throw bad(file, `share_quant_resi ${nPhi} must be >= 1`);
  for (const m of vqChMult)
    if ((vqCh * m) % VQ_GROUPS !== 0)
      throw bad(file, `VQVAE channel count ${vqCh * m} is not divisible by ${VQ_GROUPS} GroupNorm groups`);
  const grid = patchNums[patchNums.length - 1]!;
  const down = 2 ** (vqChMult.length - 1);
  if (2 ** (condCh.length - 1) !== down)
    throw bad(file, `the conditioning net downsamples by ${2 ** (condCh.length - 1)} but the VQVAE by ${down}`);
  const hrSize = down * grid;
  if (hrSize % 4 !== 0) throw bad(file, `HR size ${hrSize} is not divisible by 4`);

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
  };

  for (const e of expectedTensors(cfg)) {
    const info = t.get(e.name);
    if (info === undefined) throw bad(file, `missing (expected shape ${fmtShape(e.shape)})`, e.name);
    if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16')
      throw bad(file, `dtype ${info.dtype} is not supported (expected F32, F16 or BF16)`, e.name);
    const same = info.shape.length === e.shape.length && info.shape.every((d, i) => d === e.shape[i]);
    if (!same) throw bad(file, `expected shape ${fmtShape(e.shape)} but found ${fmtShape(info.shape)}`, e.name);
  }
  return cfg;
}

/** The schedule of a configuration. */
export function scheduleOf(cfg: ModelConfig): Schedule {
  return makeSchedule(cfg.patchNums, cfg.nPhi);
}
