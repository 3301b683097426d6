/**
 * `alignvar convert` as a library: VARSR / AlignVAR checkpoints (torch `.pth` zips, or a pair of
 * `.safetensors` files) -> the project's single-file safetensors model with its config in
 * `__metadata__` (the layout of training/avtrain/export.py). No Python is involved.
 *
 * Accepted nestings (spec 8.1): VARSR's trainer checkpoints `['trainer']['var_wo_ddp' |
 * 'vae_local']`, the same keys at the top level, AlignVAR's train_var.py checkpoints
 * `['var' | 'vqvae']`, and plain state dicts such as VAR's `vae_ch160v4096z32.pth`. When only the
 * transformer file is given, the VQVAE is taken from the same checkpoint if it holds one.
 *
 * Every key is checked: what the engine reads by model/config.ts `detectConfig` (shapes implied
 * by the detected config), the rest by ./keys.ts (encoder, buffers, refiner). Each mismatch is
 * an error naming the file, the key, the expected and the found shape; unknown keys are errors.
 * The recomputable buffers and the VQVAE encoder are dropped (spec 8.1); the refiner is kept
 * unless `refiner: false`.
 *
 * Memory: the header is written from the pickles' shapes, then each tensor is streamed from its
 * zip record through the dtype conversion into a temporary file next to the output, renamed over
 * it at the end. Peak memory is about one strided tensor's storage span or 8 MiB chunks, not the
 * checkpoint.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import { WeightsError } from '../errors.js';
import { detectConfig, expectedTensors, type ModelConfig, type TensorShapeInfo } from '../model/config.js';
import { checkPatchNums, makeSchedule, parsePatchNums } from '../model/schedule.js';
import { SafetensorsFile } from '../weights/safetensors.js';
import { convertBytes, type OutDType } from './dtype.js';
import { detectRefiner } from '../model/refiner.js';
import { bufferTensors, castable, encoderTensors, isVqKey, refinerTensors, type RefinerDims } from './keys.js';
import { TORCH_DTYPE_SIZES, type TensorRef, type TorchDType } from './pickle.js';
import { ConvertError, TorchCheckpoint, numel } from './torch.js';

export { ConvertError } from './torch.js';

/** Output precision names of {@link ConvertOptions.dtype}. */
export const CONVERT_DTYPES = ['f32', 'f16', 'bf16'] as const;
/** One of {@link CONVERT_DTYPES}. */
export type ConvertDType = (typeof CONVERT_DTYPES)[number];

/** Options of {@link convertCheckpoint}. */
export interface ConvertOptions {
  /** The transformer checkpoint (VARSR.pth, a train_var.py checkpoint, or a .safetensors file). */
  var: string;
  /**
   * The VQVAE checkpoint (VQVAE.pth, VAR's vae_ch160v4096z32.pth, or a .safetensors file).
   * Default: the VQVAE inside the `var` checkpoint, when it holds one.
   */
  vae?: string | undefined;
  /** Output .safetensors path; written atomically (temp file + rename). */
  out: string;
  /**
   * Precision of the Linear and Conv weight matrices: 'f32' (default, lossless for VARSR's fp32
   * files), 'bf16' or 'f16' (half the size). Biases, norms, embeddings, the codebook and the Phi
   * convs stay f32.
   */
  dtype?: ConvertDType | undefined;
  /** Keep the VARSR refiner (`diffloss.*`, `decoder_norm.*`) when present. Default true. */
  refiner?: boolean | undefined;
  /**
   * Scale schedule to record in the metadata (cannot be derived from shapes, spec 8.4).
   * Default: the checkpoint's trainer config `patch_nums` if present, else 1,2,3,4,6,9,13,18,24,32.
   */
  patchNums?: readonly number[] | undefined;
  /** Aborts the conversion (the temporary file is removed). */
  signal?: AbortSignal | undefined;
}

/** What {@link convertCheckpoint} wrote. */
export interface ConvertResult {
  /** The output path. */
  out: string;
  /** The detected configuration. */
  config: ModelConfig;
  /** Tensors written. */
  tensors: number;
  /** Bytes of the output file. */
  bytes: number;
  /** Whether the refiner was written. */
  refiner: boolean;
  /** Keys of the inputs that were checked and left out (buffers, encoder, refiner when off). */
  dropped: string[];
  /** The metadata written. */
  metadata: Record<string, string>;
}

/** One input tensor: where it is and what it is. */
interface Source {
  file: string;
  dtype: TorchDType;
  shape: number[];
  chunks(): AsyncIterable<Uint8Array>;
}

interface Part {
  tensors: Map<string, Source>;
  /** patch_nums found in the checkpoint's config, if any. */
  patchNums?: number[] | undefined;
  /** Whether the checkpoint also holds the VQVAE (only for the transformer file). */
  vae?: Map<string, Source> | undefined;
}

const ST_DTYPES: Readonly<Record<string, TorchDType>> = {
  F64: 'F64',
  F32: 'F32',
  F16: 'F16',
  BF16: 'BF16',
  I64: 'I64',
  I32: 'I32',
  I16: 'I16',
  I8: 'I8',
  U8: 'U8',
  BOOL: 'BOOL',
};

const FLOAT_DTYPES = new Set<TorchDType>(['F64', 'F32', 'F16', 'BF16']);

function isMap(v: unknown): v is Map<unknown, unknown> {
  return v instanceof Map;
}

function isTensor(v: unknown): v is TensorRef {
  return typeof v === 'object' && v !== null && (v as TensorRef).kind === 'tensor';
}

function keysOf(m: Map<unknown, unknown>): string {
  const ks = [...m.keys()].map((k) => JSON.stringify(k));
  return ks.length > 12 ? `${ks.slice(0, 12).join(', ')}, ... (${ks.length})` : ks.join(', ');
}

/** A state dict (string keys, tensor values) from an unpickled map. */
function stateDict(ck: TorchCheckpoint, m: Map<unknown, unknown>, where: string): Map<string, Source> {
  const out = new Map<string, Source>();
  for (const [k, v] of m) {
    if (typeof k !== 'string') throw new ConvertError(`${ck.path}: ${where}: key ${JSON.stringify(k)} is not a string`);
    if (!isTensor(v)) throw new ConvertError(`${ck.path}: ${where}: ${JSON.stringify(k)} is not a tensor`);
    out.set(k, {
      file: ck.path,
      dtype: v.storage.dtype,
      shape: [...v.shape],
      chunks: () => ck.chunks(v, k),
    });
  }
  return out;
}

function isPlainStateDict(m: Map<unknown, unknown>): boolean {
  if (m.size === 0) return false;
  for (const [k, v] of m) if (typeof k !== 'string' || !isTensor(v)) return false;
  return true;
}

function patchNumsFrom(v: unknown): number[] | undefined {
  if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number' && Number.isInteger(x)))
    return v as number[];
  if (typeof v === 'string') return parsePatchNums(v.replace(/_/g, ','));
  return undefined;
}

/** Finds the `role` state dict of an unpickled checkpoint (see the module comment). */
function selectPart(ck: TorchCheckpoint, role: 'var' | 'vae'): Part {
  const root = ck.root;
  if (!isMap(root)) throw new ConvertError(`${ck.path}: the checkpoint is not a dict`);
  const trainer = root.get('trainer');
  const roleKey = role === 'var' ? 'var_wo_ddp' : 'vae_local';
  const altKey = role === 'var' ? 'var' : 'vqvae';
  for (const [holder, where] of [
    [trainer, "['trainer']"],
    [root, ''],
  ] as const) {
    if (!isMap(holder)) continue;
    const cfg = holder.get('config');
    const patchNums = isMap(cfg) ? patchNumsFrom(cfg.get('patch_nums')) : undefined;
    for (const key of [roleKey, altKey]) {
      const sd = holder.get(key);
      if (isMap(sd)) {
        const part: Part = { tensors: stateDict(ck, sd, `${where}['${key}']`), patchNums };
        // A train_var.py checkpoint keeps its config as metadata strings under 'cfg'.
        const meta = root.get('cfg');
        if (part.patchNums === undefined && isMap(meta)) part.patchNums = patchNumsFrom(meta.get('patch_nums'));
        if (role === 'var') {
          for (const vk of ['vae_local', 'vqvae']) {
            const v = holder.get(vk);
            if (isMap(v)) part.vae = stateDict(ck, v, `${where}['${vk}']`);
          }
        }
        return part;
      }
    }
  }
  if (isPlainStateDict(root)) return { tensors: stateDict(ck, root, 'state dict') };
  throw new ConvertError(
    `${ck.path}: found no ${role === 'var' ? 'transformer' : 'VQVAE'} state dict: expected ['trainer']['${roleKey}'], ['${roleKey}'], ['${altKey}'] or a plain state dict; top-level keys: ${keysOf(root)}`,
  );
}

async function isZip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && b.readUInt32LE(0) === 0x04034b50;
  } finally {
    await fh.close();
  }
}

/** Opened inputs, closed by {@link Inputs.close}. */
interface Inputs {
  var: Part;
  vae: Map<string, Source>;
  close(): Promise<void>;
}

async function openSafetensors(path: string, closers: (() => Promise<void>)[]): Promise<Part> {
  let f: SafetensorsFile;
  try {
    f = await SafetensorsFile.open(path);
  } catch (err) {
    throw new ConvertError(`${path}: neither a torch zip nor a valid safetensors file: ${(err as Error).message}`, {
      cause: err,
    });
  }
  closers.push(() => f.close());
  const tensors = new Map<string, Source>();
  for (const [name, info] of f.tensors) {
    const dtype = ST_DTYPES[info.dtype];
    if (dtype === undefined)
      throw new ConvertError(`${path}: tensor ${JSON.stringify(name)}: dtype ${info.dtype} is not supported`);
    tensors.set(name, {
      file: path,
      dtype,
      shape: [...info.shape],
      chunks: async function* () {
        yield await f.read(name);
      },
    });
  }
  const pn = f.metadata.patch_nums;
  return { tensors, patchNums: pn === undefined ? undefined : parsePatchNums(pn) };
}

async function openInputs(varPath: string, vaePath: string | undefined): Promise<Inputs> {
  const closers: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const c of closers.splice(0)) await c().catch(() => undefined);
  };
  const cache = new Map<string, TorchCheckpoint>();
  const openPart = async (path: string, role: 'var' | 'vae'): Promise<Part> => {
    if (!(await isZip(path))) return openSafetensors(path, closers);
    let ck = cache.get(path);
    if (ck === undefined) {
      ck = await TorchCheckpoint.open(path);
      cache.set(path, ck);
      const c = ck;
      closers.push(async () => c.close());
    }
    return selectPart(ck, role);
  };
  try {
    const v = await openPart(varPath, 'var');
    let vae: Map<string, Source>;
    if (vaePath !== undefined) {
      const p = await openPart(vaePath, 'vae');
      vae = p.tensors;
      v.patchNums ??= p.patchNums;
    } else if (v.vae !== undefined) vae = v.vae;
    else throw new ConvertError(`${varPath}: holds no VQVAE; pass the VQVAE checkpoint too (--vae VQVAE.pth)`);
    return { var: v, vae, close };
  } catch (err) {
    await close();
    throw err;
  }
}

function fmtShape(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

function pyFloat(v: number): string {
  return Number.isInteger(v) ? `${v}.0` : String(v);
}

/** The metadata of training/avtrain/config.py `config_to_metadata` + export.py's extras. */
export function configMetadata(cfg: ModelConfig, dtype: ConvertDType, refiner: boolean): Record<string, string> {
  return {
    depth: String(cfg.depth),
    width: String(cfg.width),
    heads: String(cfg.heads),
    mlp_ratio: pyFloat(cfg.mlpHidden / cfg.width),
    vocab: String(cfg.vocab),
    cvae: String(cfg.cvae),
    vq_ch: String(cfg.vqCh),
    vq_ch_mult: cfg.vqChMult.join(','),
    vq_num_res: String(cfg.vqNumRes),
    vq_attn_at_lowest: cfg.vqAttnAtLowest ? '1' : '0',
    cond_ch: cfg.condCh.join(','),
    patch_nums: cfg.patchNums.join(','),
    num_classes: String(cfg.numClasses),
    share_quant_resi: String(cfg.nPhi),
    quant_resi: pyFloat(cfg.quantResi),
    sca: cfg.sca ? '1' : '0',
    rope_base: pyFloat(cfg.ropeBase),
    format: 'alignvar',
    dtype,
    has_encoder: '0',
    refiner: refiner ? '1' : '0',
  };
}

/** Checks every key; returns the tensors to write (name -> output dtype) and the dropped keys. */
function plan(
  all: Map<string, Source>,
  patchNums: readonly number[] | undefined,
  dtype: ConvertDType,
  keepRefiner: boolean,
  label: string,
): { cfg: ModelConfig; write: Map<string, OutDType>; dropped: string[]; refiner: boolean } {
  const header = new Map<string, TensorShapeInfo>();
  for (const [k, s] of all) header.set(k, { shape: s.shape, dtype: s.dtype === 'F64' ? 'F32' : s.dtype });
  const metadata: Record<string, string> = patchNums === undefined ? {} : { patch_nums: patchNums.join(',') };
  let cfg: ModelConfig;
  try {
    cfg = detectConfig({ metadata, tensors: header }, label);
  } catch (err) {
    if (err instanceof WeightsError) {
      const file = err.tensor !== undefined ? (all.get(err.tensor)?.file ?? label) : label;
      const where = err.tensor === undefined ? '' : `tensor ${JSON.stringify(err.tensor)}: `;
      throw new ConvertError(`${file}: ${where}${err.problem}`, { cause: err });
    }
    throw err;
  }
  const problems: string[] = [];
  const check = (name: string, shape: readonly number[]): void => {
    const s = all.get(name)!;
    const same = s.shape.length === shape.length && s.shape.every((d, i) => d === shape[i]);
    if (!same)
      problems.push(
        `${s.file}: tensor ${JSON.stringify(name)}: expected shape ${fmtShape(shape)} but found ${fmtShape(s.shape)}`,
      );
  };
  const group = (what: string, names: { name: string; shape: number[] }[]): void => {
    const missing = names.filter((e) => !all.has(e.name));
    for (const e of missing)
      problems.push(`${what}: tensor ${JSON.stringify(e.name)} is missing (expected shape ${fmtShape(e.shape)})`);
    for (const e of names) if (all.has(e.name)) check(e.name, e.shape);
  };

  const write = new Map<string, OutDType>();
  const dropped: string[] = [];
  const claimed = new Set<string>();
  const target: OutDType = dtype === 'f32' ? 'F32' : dtype === 'f16' ? 'F16' : 'BF16';
  const out = (name: string) => write.set(name, castable(name, all.get(name)!.shape) ? target : 'F32');

  for (const e of expectedTensors(cfg)) {
    claimed.add(e.name);
    out(e.name);
  }
  const seqLen = makeSchedule(cfg.patchNums, cfg.nPhi).seqLen;
  for (const b of bufferTensors(cfg, seqLen))
    if (all.has(b.name)) {
      claimed.add(b.name);
      dropped.push(b.name);
      check(b.name, b.shape);
      // Dropped, but still checked: lvl_1L holds integer levels, the other buffers floats.
      const d = all.get(b.name)!;
      if (FLOAT_DTYPES.has(d.dtype) === b.integer)
        problems.push(
          `${d.file}: buffer ${JSON.stringify(b.name)}: dtype ${d.dtype}, expected ${b.integer ? 'an integer' : 'a float'} type`,
        );
    }
  const keys = [...all.keys()];
  if (keys.some((k) => k.startsWith('encoder.') || k.startsWith('quant_conv.'))) {
    const enc = encoderTensors(cfg);
    group('the VQVAE encoder', enc);
    for (const e of enc)
      if (all.has(e.name)) {
        claimed.add(e.name);
        dropped.push(e.name);
      }
  }
  let refiner = false;
  if (keys.some((k) => k.startsWith('diffloss.') || k.startsWith('decoder_norm.'))) {
    const dims: RefinerDims = detectRefiner(all)!;
    const ref = refinerTensors(cfg, dims);
    group('the refiner', ref);
    for (const e of ref)
      if (all.has(e.name)) {
        claimed.add(e.name);
        if (keepRefiner) out(e.name);
        else dropped.push(e.name);
      }
    refiner = keepRefiner;
  }
  for (const k of keys)
    if (!claimed.has(k))
      problems.push(
        `${all.get(k)!.file}: unexpected tensor ${JSON.stringify(k)} (not a VARSR/AlignVAR key of spec 8.2, 8.3, 11.7)`,
      );
  for (const name of write.keys()) {
    const s = all.get(name)!;
    if (!FLOAT_DTYPES.has(s.dtype))
      problems.push(`${s.file}: tensor ${JSON.stringify(name)}: dtype ${s.dtype} is not a float type`);
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 20);
    if (problems.length > 20) shown.push(`... and ${problems.length - 20} more`);
    throw new ConvertError(`the checkpoint does not match the spec's key tables:\n  ${shown.join('\n  ')}`);
  }
  return { cfg, write, dropped, refiner };
}

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Same order as src/weights/safetensors.ts writes: descending dtype order, then name. */
const OUT_ORDER: Readonly<Record<OutDType, number>> = { F32: 0, BF16: 1, F16: 2 };

/**
 * Converts a checkpoint pair to one safetensors model file.
 *
 * @param options - Inputs, output and precision ({@link ConvertOptions}).
 * @returns What was written.
 * @throws ConvertError for unreadable, refused (code-carrying) or non-matching checkpoints;
 *   TypeError for invalid options. Nothing is left at `out` on failure.
 */
export async function convertCheckpoint(options: ConvertOptions): Promise<ConvertResult> {
  const dtype = options.dtype ?? 'f32';
  if (!CONVERT_DTYPES.includes(dtype))
    throw new TypeError(`Expected one of f32, f16, bf16 for dtype but received ${JSON.stringify(dtype)}`);
  if (options.patchNums !== undefined) {
    const bad = checkPatchNums(options.patchNums);
    if (bad !== undefined)
      throw new TypeError(`Expected ${bad} for patchNums but received ${JSON.stringify(options.patchNums)}`);
  }
  if (typeof options.var !== 'string' || options.var === '')
    throw new TypeError(`Expected a path for var but received ${JSON.stringify(options.var)}`);
  if (typeof options.out !== 'string' || options.out === '')
    throw new TypeError(`Expected a path for out but received ${JSON.stringify(options.out)}`);
  const inputs = await openInputs(options.var, options.vae);
  try {
    const all = new Map<string, Source>();
    for (const [k, s] of inputs.var.tensors) {
      if (isVqKey(k))
        throw new ConvertError(`${s.file}: the transformer state dict holds the VQVAE key ${JSON.stringify(k)}`);
      all.set(k, s);
    }
    for (const [k, s] of inputs.vae) {
      if (!isVqKey(k))
        throw new ConvertError(`${s.file}: the VQVAE state dict holds the non-VQVAE key ${JSON.stringify(k)}`);
      all.set(k, s);
    }
    const { cfg, write, dropped, refiner } = plan(
      all,
      options.patchNums ?? inputs.var.patchNums,
      dtype,
      options.refiner !== false,
      options.var,
    );
    const metadata = configMetadata(cfg, dtype, refiner);
    const bytes = await writeStreamed(options.out, all, write, metadata, options.signal);
    return { out: options.out, config: cfg, tensors: write.size, bytes, refiner, dropped, metadata };
  } finally {
    await inputs.close();
  }
}

async function writeStreamed(
  path: string,
  all: Map<string, Source>,
  write: Map<string, OutDType>,
  metadata: Record<string, string>,
  signal: AbortSignal | undefined,
): Promise<number> {
  const names = [...write.keys()].sort(
    (a, b) => OUT_ORDER[write.get(a)!] - OUT_ORDER[write.get(b)!] || compareUtf8(a, b),
  );
  const fields = Object.keys(metadata)
    .sort(compareUtf8)
    .map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`);
  const parts = [`"__metadata__":{${fields.join(',')}}`];
  let offset = 0;
  for (const n of names) {
    const s = all.get(n)!;
    const dt = write.get(n)!;
    const len = numel(s.shape) * TORCH_DTYPE_SIZES[dt];
    parts.push(
      `${JSON.stringify(n)}:${JSON.stringify({ dtype: dt, shape: s.shape, data_offsets: [offset, offset + len] })}`,
    );
    offset += len;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);

  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fh: FileHandle | undefined = await open(tmp, 'wx');
  try {
    let pos = 0;
    const put = async (b: Uint8Array) => {
      let done = 0;
      while (done < b.byteLength) {
        const { bytesWritten } = await fh!.write(b, done, b.byteLength - done, pos);
        done += bytesWritten;
        pos += bytesWritten;
      }
    };
    await put(head);
    for (const n of names) {
      const s = all.get(n)!;
      const dt = write.get(n)!;
      const start = pos;
      for await (const chunk of s.chunks()) {
        signal?.throwIfAborted();
        await put(convertBytes(chunk, s.dtype, dt));
      }
      const want = numel(s.shape) * TORCH_DTYPE_SIZES[dt];
      if (pos - start !== want)
        throw new ConvertError(`${s.file}: tensor ${JSON.stringify(n)}: wrote ${pos - start} bytes instead of ${want}`);
    }
    await fh.sync();
    const f = fh;
    fh = undefined;
    await f.close();
    await rename(tmp, path);
    return pos;
  } catch (err) {
    if (fh !== undefined) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

export { TorchCheckpoint } from './torch.js';
export { PickleError, unpickle, type StorageRef, type TensorRef } from './pickle.js';
