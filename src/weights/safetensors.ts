/**
 * safetensors reader and writer.
 *
 * Format (https://github.com/huggingface/safetensors, README "Format"): an unsigned 64-bit
 * little-endian header length N, then N bytes of UTF-8 JSON mapping tensor names to
 * `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data section) plus an
 * optional `__metadata__` object of strings, then the data section, which the tensors must cover
 * exactly: no gaps, no overlaps, no trailing bytes. Data is little-endian, row-major.
 *
 * The reader validates every field of the header against the file size before any tensor byte is
 * read, so native code only ever receives buffers whose length matches shape x dtype. It reads
 * one tensor at a time from a FileHandle at the tensor's offset: loading a multi-GB file never
 * holds more than the tensors the caller keeps. Every problem is a {@link WeightsError} naming
 * the file, the tensor and what is wrong.
 *
 * The writer produces the same bytes as the reference Rust/Python library (`serialize`): tensors
 * in descending dtype order (the crate's `Dtype` enum order, so each tensor's offset is a multiple
 * of its element size), then by name; `__metadata__` first; compact JSON padded with spaces to a
 * multiple of 8 bytes. Metadata keys are sorted (the reference writes them in hash order).
 */
import { randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import { describeValue, invalidOption, WeightsError } from '../errors.js';

/** Element types of the safetensors format supported here (all fixed-size ones of the spec). */
export type SafetensorsDType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U64'
  | 'U32'
  | 'U16'
  | 'U8'
  | 'BOOL'
  | 'F8_E4M3'
  | 'F8_E5M2';

/**
 * The dtypes in the order of the reference crate's `Dtype` enum (increasing alignment). The writer
 * lays tensors out in descending order of this list, then by name.
 */
const DTYPE_ORDER: readonly SafetensorsDType[] = [
  'BOOL',
  'U8',
  'I8',
  'F8_E5M2',
  'F8_E4M3',
  'I16',
  'U16',
  'F16',
  'BF16',
  'I32',
  'U32',
  'F32',
  'F64',
  'I64',
  'U64',
];

/** Bytes per element of each dtype, per the safetensors spec. */
export const DTYPE_SIZES: Readonly<Record<SafetensorsDType, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
});

/**
 * Whether `value` names a supported dtype.
 *
 * @param value - Anything.
 * @returns True for the strings of {@link SafetensorsDType}.
 */
export function isSafetensorsDType(value: unknown): value is SafetensorsDType {
  return typeof value === 'string' && Object.hasOwn(DTYPE_SIZES, value);
}

/** Default limit on the JSON header length N: 100,000,000 bytes, as in the reference crate. */
export const DEFAULT_MAX_HEADER_BYTES = 100_000_000;

/** Key of the optional string-to-string metadata object in the header. */
const METADATA_KEY = '__metadata__';
/** Bytes of the header length prefix. */
const PREFIX_BYTES = 8;
/** Largest single read or write request: fs calls reject lengths above 2 GiB - 1. */
const IO_CHUNK_BYTES = 64 * 1024 * 1024;

/** One tensor of a safetensors file, validated. */
export interface TensorInfo {
  /** Tensor name (the header key), never empty. */
  readonly name: string;
  /** Element type. */
  readonly dtype: SafetensorsDType;
  /** Row-major dimensions, each a non-negative safe integer; `[]` is a scalar (1 element). */
  readonly shape: readonly number[];
  /** First byte, relative to the start of the data section. */
  readonly begin: number;
  /** One past the last byte, relative to the start of the data section. */
  readonly end: number;
  /** `end - begin` = product(shape) x element size, in bytes. */
  readonly byteLength: number;
}

/** A validated safetensors header, as returned by {@link parseSafetensorsHeader}. */
export interface SafetensorsHeader {
  /** `__metadata__` (empty when absent), frozen. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The tensors in data-section order (by `begin`, then `end`). */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Absolute file offset of the data section: 8 + header length. */
  readonly dataStart: number;
  /** Length of the data section in bytes: file size - dataStart. */
  readonly dataLength: number;
}

/** Options of {@link SafetensorsFile.read}. */
export interface SafetensorsReadOptions {
  /**
   * When true, an F32, F16 or BF16 tensor holding a NaN or an infinity is a
   * {@link WeightsError} naming the tensor and the first bad element (one pass over the bytes
   * just read; other dtypes are not checked). Default false.
   */
  finite?: boolean;
}

/** Options of {@link SafetensorsFile.open}. */
export interface SafetensorsOpenOptions {
  /**
   * Largest accepted JSON header, in bytes: a positive safe integer.
   * Default {@link DEFAULT_MAX_HEADER_BYTES} (100,000,000).
   */
  maxHeaderBytes?: number;
}

/** One tensor to write with {@link writeSafetensors} or {@link encodeSafetensors}. */
export interface SafetensorsTensorInput {
  /** Element type. */
  dtype: SafetensorsDType;
  /** Row-major dimensions, each a non-negative safe integer; `[]` is a scalar. */
  shape: readonly number[];
  /**
   * The tensor's bytes, written as they are in memory (little-endian on every platform Node.js
   * supports for this package): `byteLength` must equal product(shape) x element size.
   */
  data: ArrayBufferView;
}

// ---------------------------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------------------------

/** Renders `[a, b)`. */
function range(begin: number, end: number): string {
  return `[${begin}, ${end})`;
}

/** Renders a shape as `[4608, 1536]`. */
function shapeText(shape: readonly unknown[]): string {
  return `[${shape.map((d) => (typeof d === 'number' ? String(d) : describeValue(d))).join(', ')}]`;
}

/** Product of the dims times the element size, exactly (BigInt: no overflow). */
function byteSize(shape: readonly number[], elementSize: number): bigint {
  let n = BigInt(elementSize);
  for (const d of shape) n *= BigInt(d);
  return n;
}

/** Type of a parsed JSON value, for messages. */
function jsonKind(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'object':
      return 'an object';
    case 'string':
      return 'a string';
    case 'number':
      return 'a number';
    case 'boolean':
      return 'a boolean';
    default:
      return typeof value;
  }
}

/** Whether a parsed JSON value is an object (not null, not an array). */
function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A key that appears twice in one JSON object: the keys of its ancestors and the key itself. */
interface DuplicateKey {
  path: string[];
  key: string;
}

/**
 * Finds the first key that appears twice in one object anywhere in `text`. JSON.parse keeps
 * only the last of duplicate keys, which would hide a tensor (or a field of one), so the raw text
 * is scanned. `text` must be valid JSON (already checked by JSON.parse). Iterative, so deeply
 * nested input cannot overflow the call stack.
 */
function findDuplicateKey(text: string): DuplicateKey | undefined {
  interface Frame {
    isObject: boolean;
    keys: Set<string>;
    path: string[];
    expectKey: boolean;
    lastKey: string;
  }
  const stack: Frame[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    const top = stack[stack.length - 1];
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      const path = top === undefined ? [] : top.isObject ? [...top.path, top.lastKey] : top.path;
      const isObject = c === 0x7b;
      stack.push({ isObject, keys: new Set(), path, expectKey: isObject, lastKey: '' });
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      i++;
    } else if (c === 0x2c /* , */) {
      if (top?.isObject) top.expectKey = true;
      i++;
    } else if (c === 0x22 /* " */) {
      const start = i++;
      while (text.charCodeAt(i) !== 0x22) i += text.charCodeAt(i) === 0x5c /* \ */ ? 2 : 1;
      i++;
      if (top?.isObject && top.expectKey) {
        // Decode escapes so that "a" and "\u0061" count as the same key.
        const key = JSON.parse(text.slice(start, i)) as string;
        if (top.keys.has(key)) return { path: top.path, key };
        top.keys.add(key);
        top.lastKey = key;
        top.expectKey = false;
      }
    } else {
      i++;
    }
  }
  return undefined;
}

/** Builds the WeightsError for a duplicate key found by {@link findDuplicateKey}. */
function duplicateKeyError(file: string, dup: DuplicateKey): WeightsError {
  const [first, ...rest] = dup.path;
  if (first === undefined) {
    return dup.key === METADATA_KEY
      ? new WeightsError({ file, problem: `"${METADATA_KEY}" appears more than once in the header` })
      : new WeightsError({
          file,
          tensor: dup.key,
          problem: 'the tensor name appears more than once in the header',
        });
  }
  const where = rest.length === 0 ? '' : ` (inside ${rest.map((k) => JSON.stringify(k)).join(' > ')})`;
  const key = JSON.stringify(dup.key);
  return first === METADATA_KEY
    ? new WeightsError({ file, problem: `${METADATA_KEY} has the key ${key} more than once${where}` })
    : new WeightsError({ file, tensor: first, problem: `the field ${key} appears more than once${where}` });
}

/** Whether `v` is a JSON number usable as a size or offset: a non-negative safe integer. */
function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Validates one header entry; returns its TensorInfo (offsets not yet checked against others). */
function parseEntry(file: string, name: string, entry: unknown, dataLength: number): TensorInfo {
  const fail = (problem: string): WeightsError => new WeightsError({ file, tensor: name, problem });
  if (name === '') throw fail('the tensor name is empty');
  if (!isJsonObject(entry)) {
    throw fail(`the entry must be an object with dtype, shape and data_offsets but is ${jsonKind(entry)}`);
  }
  for (const field of ['dtype', 'shape', 'data_offsets']) {
    if (!Object.hasOwn(entry, field)) throw fail(`the field "${field}" is missing`);
  }
  for (const field of Object.keys(entry)) {
    if (field !== 'dtype' && field !== 'shape' && field !== 'data_offsets') {
      throw fail(`unexpected field ${JSON.stringify(field)} (only dtype, shape and data_offsets are allowed)`);
    }
  }
  const { dtype, shape, data_offsets: offsets } = entry;
  if (!isSafetensorsDType(dtype)) {
    throw fail(`unknown dtype ${describeValue(dtype)} (supported: ${Object.keys(DTYPE_SIZES).join(', ')})`);
  }
  if (!Array.isArray(shape)) throw fail(`shape must be an array but is ${describeValue(shape)}`);
  shape.forEach((d: unknown, axis) => {
    if (!isSize(d)) {
      throw fail(
        `shape ${shapeText(shape)} has ${describeValue(d)} at axis ${axis}; ` +
          'dimensions must be non-negative integers <= 2^53 - 1',
      );
    }
  });
  if (!Array.isArray(offsets) || offsets.length !== 2 || !isSize(offsets[0]) || !isSize(offsets[1])) {
    const found = Array.isArray(offsets) ? shapeText(offsets) : describeValue(offsets);
    throw fail(`data_offsets must be two non-negative integers <= 2^53 - 1 but is ${found}`);
  }
  const begin = offsets[0];
  const end = offsets[1];
  if (begin > end) throw fail(`data offsets ${range(begin, end)} end before they begin`);
  const dims = (shape as number[]).map((d) => d + 0); // + 0 turns a JSON -0 into 0
  const expected = byteSize(dims, DTYPE_SIZES[dtype]);
  if (expected !== BigInt(end - begin)) {
    throw fail(
      `data offsets ${range(begin, end)} do not match shape ${shapeText(dims)} x ${dtype} (${expected} bytes)`,
    );
  }
  if (end > dataLength) {
    throw fail(`data offsets ${range(begin, end)} extend past the end of the data section (${dataLength} bytes)`);
  }
  return Object.freeze({ name, dtype, shape: Object.freeze(dims), begin, end, byteLength: end - begin });
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Parses and validates a safetensors JSON header against the size of its file. Pure: no I/O.
 *
 * Checks that the header is UTF-8 JSON starting with `{`; that `__metadata__`, if present, is an
 * object of strings; that every other key is a non-empty, unique tensor name whose entry has
 * exactly `dtype` (a supported dtype), `shape` (non-negative safe integers) and `data_offsets`
 * (two non-negative safe integers, begin <= end, end - begin = product(shape) x element size);
 * and that the tensors tile the data section exactly, without overlaps, gaps or trailing bytes.
 * Zero-size tensors (a 0 in the shape, begin == end) are valid.
 *
 * @param header - The N header bytes (without the 8-byte length prefix).
 * @param fileSize - Size of the whole file in bytes; the data section is
 *   `fileSize - 8 - header.length` bytes.
 * @param file - File path, for error messages.
 * @returns The validated header.
 * @throws {WeightsError} On the first problem found.
 */
export function parseSafetensorsHeader(header: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const dataStart = PREFIX_BYTES + header.byteLength;
  const dataLength = fileSize - dataStart;
  if (dataLength < 0) {
    throw new WeightsError({
      file,
      problem: `the header length ${header.byteLength} extends past the end of the file (${fileSize} bytes)`,
    });
  }
  let text: string;
  try {
    text = utf8.decode(header);
  } catch (cause) {
    throw new WeightsError({ file, problem: 'the header is not valid UTF-8', cause });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    throw new WeightsError({ file, problem: `the header is not valid JSON (${detail})`, cause });
  }
  if (!isJsonObject(parsed)) {
    throw new WeightsError({ file, problem: `the header must be a JSON object but is ${jsonKind(parsed)}` });
  }
  if (header[0] !== 0x7b) {
    // The reference reader requires the very first byte to be '{' (no leading whitespace or BOM).
    const byte = (header[0] ?? 0).toString(16).padStart(2, '0');
    throw new WeightsError({ file, problem: `the header must start with "{" but starts with byte 0x${byte}` });
  }
  const dup = findDuplicateKey(text);
  if (dup !== undefined) throw duplicateKeyError(file, dup);

  let metadata: Readonly<Record<string, string>> = Object.freeze({});
  const infos: TensorInfo[] = [];
  for (const [key, value] of Object.entries(parsed)) {
    if (key === METADATA_KEY) {
      if (!isJsonObject(value)) {
        throw new WeightsError({
          file,
          problem: `${METADATA_KEY} must be an object of strings but is ${jsonKind(value)}`,
        });
      }
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') {
          throw new WeightsError({
            file,
            problem:
              `${METADATA_KEY} must be an object of strings ` + `but ${JSON.stringify(k)} is ${describeValue(v)}`,
          });
        }
      }
      // Object.fromEntries defines own properties, so a "__proto__" key stays a plain key.
      metadata = Object.freeze(Object.fromEntries(Object.entries(value as Record<string, string>)));
      continue;
    }
    infos.push(parseEntry(file, key, value, dataLength));
  }

  // The tensors must tile [0, dataLength) in offset order, like the reference `validate`.
  infos.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: TensorInfo | undefined;
  for (const t of infos) {
    if (t.begin < cursor && previous !== undefined) {
      throw new WeightsError({
        file,
        tensor: t.name,
        problem:
          `data offsets ${range(t.begin, t.end)} overlap ` +
          `tensor ${JSON.stringify(previous.name)} ${range(previous.begin, previous.end)}`,
      });
    }
    if (t.begin > cursor) {
      throw new WeightsError({
        file,
        tensor: t.name,
        problem:
          `data offsets ${range(t.begin, t.end)} leave bytes ${range(cursor, t.begin)} ` +
          'of the data section before them covered by no tensor',
      });
    }
    cursor = t.end;
    previous = t;
  }
  if (cursor !== dataLength) {
    throw new WeightsError({
      file,
      problem:
        `the data section has ${dataLength - cursor} trailing bytes ${range(cursor, dataLength)} ` +
        `covered by no tensor (the tensors end at ${cursor}, the data section is ${dataLength} bytes)`,
    });
  }
  return {
    metadata,
    tensors: new Map(infos.map((t) => [t.name, t])),
    dataStart,
    dataLength,
  };
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/** Reads exactly `length` bytes at `position` into `target[offset...]`, in bounded chunks. */
async function readFully(
  fh: FileHandle,
  target: Uint8Array,
  offset: number,
  length: number,
  position: number,
  onShort: (got: number) => Error,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const want = Math.min(length - done, IO_CHUNK_BYTES);
    const { bytesRead } = await fh.read(target, offset + done, want, position + done);
    if (bytesRead === 0) throw onShort(done);
    done += bytesRead;
  }
}

/** What a non-regular file is, for messages; undefined for a regular file. */
function fileKind(st: Stats): string | undefined {
  if (st.isFile()) return undefined;
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'another kind of file';
}

/** 32-bit words scanned between yields to the event loop by {@link firstNonFinite} (64 MiB). */
const SCAN_CHUNK = 16 * 1024 * 1024;

/** First F32 word in [start, end) whose exponent bits are all ones (Inf or NaN), or -1. */
function scanF32(w: Uint32Array, start: number, end: number): number {
  for (let i = start; i < end; i++) if ((w[i]! & 0x7f800000) === 0x7f800000) return i;
  return -1;
}

/**
 * Whether some 16-bit half of the words in [start, end) has all the bits of `exp` set (`exp` =
 * the exponent bits of both halves, e.g. 0x7f807f80 for BF16). SWAR: t = (w & exp) ^ exp is 0 in
 * a half exactly when that half is Inf or NaN; with a guard bit (0x8000) set in each half,
 * subtracting the half's lowest exponent bit clears the guard only where t was 0, and no borrow
 * crosses halves. The AND of all words keeps a guard bit only if no word cleared it.
 */
function anyHalfAllOnes(w: Uint32Array, start: number, end: number, exp: number, lowest: number): boolean {
  let acc = 0x80008000 | 0;
  for (let i = start; i < end; i++) acc &= (((w[i]! & exp) ^ exp) | 0x80008000) - lowest;
  return (acc & 0x80008000) !== (0x80008000 | 0);
}

/** First 16-bit element in [start, end) with all the bits of `mask` set, or -1. */
function scanHalf(h: Uint16Array, start: number, end: number, mask: number): number {
  for (let i = start; i < end; i++) if ((h[i]! & mask) === mask) return i;
  return -1;
}

/**
 * Index of the first NaN or infinity in an F32, F16 or BF16 tensor's bytes, or -1 (also for
 * other dtypes). Tests the exponent bits (all ones means Inf or NaN) in one pass over 32-bit
 * words (two halves at a time for F16/BF16, and the exact element only in a chunk that has
 * one), yielding to the event loop between chunks of 64 MiB. `bytes` must start at a multiple
 * of 4 bytes, as {@link SafetensorsFile.read} returns them.
 *
 * @param dtype - The tensor's dtype.
 * @param bytes - Its little-endian bytes.
 * @returns The element index, or -1 when every element is finite.
 */
export async function firstNonFinite(dtype: SafetensorsDType, bytes: Uint8Array): Promise<number> {
  if (dtype !== 'F32' && dtype !== 'BF16' && dtype !== 'F16') return -1;
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 4));
  const halves = dtype === 'F32' ? undefined : new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  const mask = dtype === 'BF16' ? 0x7f80 : 0x7c00;
  const exp = dtype === 'BF16' ? 0x7f807f80 : 0x7c007c00;
  const lowest = dtype === 'BF16' ? 0x00800080 : 0x04000400;
  for (let start = 0; start < words.length; start += SCAN_CHUNK) {
    if (start > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    const end = Math.min(words.length, start + SCAN_CHUNK);
    if (halves === undefined) {
      const at = scanF32(words, start, end);
      if (at >= 0) return at;
    } else if (anyHalfAllOnes(words, start, end, exp | 0, lowest)) {
      return scanHalf(halves, 2 * start, 2 * end, mask);
    }
  }
  // An odd number of halves leaves one after the last whole word.
  if (halves !== undefined && halves.length % 2 === 1) return scanHalf(halves, halves.length - 1, halves.length, mask);
  return -1;
}

/**
 * An open, validated safetensors file. {@link SafetensorsFile.open} reads and validates the
 * header only; tensor bytes are read on demand, one tensor at a time, at their offsets.
 * Call {@link SafetensorsFile.close} when done.
 */
export class SafetensorsFile {
  /** The path as given to {@link SafetensorsFile.open}. */
  readonly path: string;
  /** `__metadata__` of the header (empty when absent), frozen. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The tensors in data-section order, validated. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Absolute file offset of the data section (8 + header length), in bytes. */
  readonly dataStart: number;
  /** Size of the file when it was opened, in bytes. */
  readonly fileSize: number;

  #fh: FileHandle | undefined;

  private constructor(path: string, fh: FileHandle, header: SafetensorsHeader, fileSize: number) {
    this.path = path;
    this.#fh = fh;
    this.metadata = header.metadata;
    this.tensors = header.tensors;
    this.dataStart = header.dataStart;
    this.fileSize = fileSize;
  }

  /**
   * Opens a safetensors file and validates its whole header against its size
   * (see {@link parseSafetensorsHeader}). Reads 8 + N bytes, nothing of the data section.
   *
   * @param path - Path of the file.
   * @param options - `maxHeaderBytes` (default 100,000,000).
   * @returns The open file; the caller must {@link SafetensorsFile.close} it.
   * @throws {WeightsError} When the file is not a valid safetensors file.
   * @throws {TypeError} When an option is invalid.
   * @throws The fs error (e.g. ENOENT) when the file cannot be opened.
   */
  static async open(path: string, options: SafetensorsOpenOptions = {}): Promise<SafetensorsFile> {
    const maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
    if (!Number.isSafeInteger(maxHeaderBytes) || maxHeaderBytes < 1) {
      throw invalidOption('options.maxHeaderBytes', 'a positive integer', maxHeaderBytes);
    }
    // Refused before opening: opening a FIFO for reading blocks until a writer appears, and a
    // device can stream without end. O_NONBLOCK makes the open return at once if the path is
    // swapped for a FIFO after the stat (the type is checked again on the handle); it changes
    // nothing for a regular file.
    const kind = fileKind(await stat(path));
    if (kind !== undefined) throw new WeightsError({ file: path, problem: `not a regular file but ${kind}` });
    const fh = await open(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
    try {
      const st = await fh.stat();
      const kindNow = fileKind(st);
      if (kindNow !== undefined) throw new WeightsError({ file: path, problem: `not a regular file but ${kindNow}` });
      const fileSize = st.size;
      const truncated = (what: string) => (got: number) =>
        new WeightsError({
          file: path,
          problem: `the file ended while reading the ${what} (got ${got} bytes)`,
        });
      if (fileSize < PREFIX_BYTES) {
        throw new WeightsError({
          file: path,
          problem: `the file is ${fileSize} bytes, too short for the 8-byte header length`,
        });
      }
      const prefix = Buffer.alloc(PREFIX_BYTES);
      await readFully(fh, prefix, 0, PREFIX_BYTES, 0, truncated('header length'));
      const n = prefix.readBigUInt64LE(0);
      if (n === 0n) throw new WeightsError({ file: path, problem: 'the header length is 0' });
      if (n > BigInt(maxHeaderBytes)) {
        throw new WeightsError({
          file: path,
          problem: `the header length ${n} exceeds the limit of ${maxHeaderBytes} bytes`,
        });
      }
      const headerBytes = Number(n);
      if (PREFIX_BYTES + headerBytes > fileSize) {
        throw new WeightsError({
          file: path,
          problem: `the header length ${headerBytes} extends past the end of the file (${fileSize} bytes)`,
        });
      }
      const header = Buffer.alloc(headerBytes);
      await readFully(fh, header, 0, headerBytes, PREFIX_BYTES, truncated('header'));
      return new SafetensorsFile(path, fh, parseSafetensorsHeader(header, fileSize, path), fileSize);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Returns the tensor's info or throws a WeightsError naming the missing tensor. */
  #info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (info === undefined) {
      throw new WeightsError({
        file: this.path,
        tensor: name,
        problem: `no such tensor (the file has ${this.tensors.size})`,
      });
    }
    return info;
  }

  /** Returns the open handle or throws if closed. */
  #handle(name: string): FileHandle {
    if (this.#fh === undefined) {
      throw new WeightsError({
        file: this.path,
        tensor: name,
        problem: 'cannot read: the file has been closed',
      });
    }
    return this.#fh;
  }

  /**
   * Reads one tensor's bytes from disk (only those bytes).
   *
   * @param name - Tensor name.
   * @param options - `finite: true` checks that a float tensor holds no NaN or infinity.
   * @returns A new Buffer of exactly `byteLength` bytes with its own ArrayBuffer at offset 0, so
   *   typed-array views of any element size are aligned.
   * @throws {WeightsError} When the tensor does not exist, the file is closed or was truncated,
   *   or (with `finite`) the tensor holds a non-finite value.
   */
  async read(name: string, options: SafetensorsReadOptions = {}): Promise<Buffer> {
    const info = this.#info(name);
    const buf = Buffer.allocUnsafeSlow(info.byteLength);
    await this.readInto(name, buf);
    if (options.finite === true) {
      const at = await firstNonFinite(info.dtype, buf);
      if (at >= 0) {
        const n = info.byteLength / DTYPE_SIZES[info.dtype];
        const value = toFloat32(
          { name, dtype: info.dtype, byteLength: DTYPE_SIZES[info.dtype] },
          buf.subarray(at * DTYPE_SIZES[info.dtype], (at + 1) * DTYPE_SIZES[info.dtype]),
        )[0];
        throw new WeightsError({
          file: this.path,
          tensor: name,
          problem: `element ${at} of ${n} is ${value} (${info.dtype}); weights must be finite`,
        });
      }
    }
    return buf;
  }

  /**
   * Reads one tensor's bytes from disk into `target`, which must be exactly `byteLength` bytes.
   *
   * @param name - Tensor name.
   * @param target - Destination, e.g. a Uint8Array view over a Float32Array.
   * @throws {WeightsError} When the tensor does not exist, the file is closed or was truncated.
   * @throws {TypeError} When `target` is not a Uint8Array of the tensor's byte length.
   */
  async readInto(name: string, target: Uint8Array): Promise<void> {
    const info = this.#info(name);
    if (!(target instanceof Uint8Array) || target.byteLength !== info.byteLength) {
      const expected = `a Uint8Array of ${info.byteLength} bytes (tensor ${JSON.stringify(name)})`;
      throw invalidOption('target', expected, target);
    }
    const fh = this.#handle(name);
    await readFully(
      fh,
      target,
      0,
      info.byteLength,
      this.dataStart + info.begin,
      (got) =>
        new WeightsError({
          file: this.path,
          tensor: name,
          problem: `the file ended after ${got} of ${info.byteLength} bytes (was it truncated after opening?)`,
        }),
    );
  }

  /** Closes the file handle. Idempotent; reads after closing throw. */
  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/** A validated write: the 8-byte prefix + padded header, then the tensors' bytes in order. */
interface WritePlan {
  head: Buffer;
  chunks: Uint8Array[];
  dataLength: number;
}

/** Compares strings by their UTF-8 bytes, like Rust's `String` ordering. */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Validates the inputs and lays out the file; throws invalidOption TypeErrors before any I/O. */
function planSafetensors(
  tensors: Readonly<Record<string, SafetensorsTensorInput>>,
  metadata: Readonly<Record<string, string>> | undefined,
): WritePlan {
  if (!isJsonObject(tensors)) throw invalidOption('tensors', 'an object of tensors', tensors);
  if (metadata !== undefined) {
    if (!isJsonObject(metadata)) throw invalidOption('metadata', 'an object of strings', metadata);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw invalidOption(`metadata[${JSON.stringify(k)}]`, 'a string', v);
    }
  }
  const entries: { name: string; dtype: SafetensorsDType; shape: number[]; bytes: Uint8Array }[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const at = `tensors[${JSON.stringify(name)}]`;
    if (name === '' || name === METADATA_KEY || Buffer.from(name, 'utf8').toString('utf8') !== name) {
      const expected = `a non-empty, well-formed name other than "${METADATA_KEY}"`;
      throw invalidOption('a tensor name', expected, name);
    }
    if (!isJsonObject(t)) throw invalidOption(at, 'an object with dtype, shape and data', t);
    if (!isSafetensorsDType(t.dtype)) {
      throw invalidOption(`${at}.dtype`, `one of ${Object.keys(DTYPE_SIZES).join(', ')}`, t.dtype);
    }
    if (!Array.isArray(t.shape) || !t.shape.every(isSize)) {
      throw invalidOption(`${at}.shape`, 'an array of non-negative integers <= 2^53 - 1', t.shape);
    }
    if (!ArrayBuffer.isView(t.data)) {
      throw invalidOption(`${at}.data`, 'an ArrayBufferView (typed array, Buffer or DataView)', t.data);
    }
    const shape = t.shape.map((d) => d + 0);
    const expected = byteSize(shape, DTYPE_SIZES[t.dtype]);
    if (BigInt(t.data.byteLength) !== expected) {
      const what = `a view of ${expected} bytes (shape ${shapeText(shape)} x ${t.dtype})`;
      throw invalidOption(`${at}.data`, what, t.data);
    }
    entries.push({
      name,
      dtype: t.dtype,
      shape,
      bytes: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    });
  }
  // Descending dtype enum order, then name: each tensor starts at a multiple of its element size.
  entries.sort((a, b) => DTYPE_ORDER.indexOf(b.dtype) - DTYPE_ORDER.indexOf(a.dtype) || compareUtf8(a.name, b.name));

  // The JSON text is built by hand: JSON.stringify would enumerate integer-like keys ("0", "12")
  // first, whatever the planned order.
  const parts: string[] = [];
  if (metadata !== undefined) {
    const fields = Object.keys(metadata)
      .sort(compareUtf8)
      .map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`);
    parts.push(`${JSON.stringify(METADATA_KEY)}:{${fields.join(',')}}`);
  }
  let offset = 0;
  for (const e of entries) {
    const end = offset + e.bytes.byteLength;
    if (!Number.isSafeInteger(end)) throw invalidOption('tensors', 'less than 2^53 bytes in all', tensors);
    const info = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, end] };
    parts.push(`${JSON.stringify(e.name)}:${JSON.stringify(info)}`);
    offset = end;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const head = Buffer.alloc(PREFIX_BYTES + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, PREFIX_BYTES);
  return { head, chunks: entries.map((e) => e.bytes), dataLength: offset };
}

/**
 * Serialises tensors to safetensors bytes in memory (for tests and small files). Same layout as
 * {@link writeSafetensors}.
 *
 * @param tensors - Tensors by name; names must be non-empty and not `__metadata__`.
 * @param metadata - Optional `__metadata__` strings; written (keys sorted) when given.
 * @returns The whole file.
 * @throws {TypeError} When an input is invalid, e.g. a data length that does not match the shape.
 */
export function encodeSafetensors(
  tensors: Readonly<Record<string, SafetensorsTensorInput>>,
  metadata?: Readonly<Record<string, string>>,
): Buffer {
  const plan = planSafetensors(tensors, metadata);
  const out = Buffer.allocUnsafe(plan.head.byteLength + plan.dataLength);
  plan.head.copy(out, 0);
  let at = plan.head.byteLength;
  for (const c of plan.chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/**
 * Writes tensors to a safetensors file atomically: everything is validated first (nothing is
 * created on invalid input), then written to a temporary file in the same folder, flushed to
 * disk and renamed over `path`. On failure the temporary file is removed and an existing file at
 * `path` is left as it was. Tensor bytes are streamed from the given views, not copied.
 *
 * Layout equals the reference library's: tensors in descending dtype order then by name,
 * `__metadata__` first, header padded with spaces to a multiple of 8 bytes.
 *
 * @param path - Destination path.
 * @param tensors - Tensors by name; names must be non-empty and not `__metadata__`.
 * @param metadata - Optional `__metadata__` strings; written (keys sorted) when given.
 * @throws {TypeError} When an input is invalid, before anything is written.
 * @throws The fs error when writing or renaming fails.
 */
export async function writeSafetensors(
  path: string,
  tensors: Readonly<Record<string, SafetensorsTensorInput>>,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const plan = planSafetensors(tensors, metadata);
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx');
  let closed = false;
  try {
    let position = 0;
    for (const chunk of [plan.head, ...plan.chunks]) {
      let done = 0;
      while (done < chunk.byteLength) {
        const want = Math.min(chunk.byteLength - done, IO_CHUNK_BYTES);
        const { bytesWritten } = await fh.write(chunk, done, want, position);
        done += bytesWritten;
        position += bytesWritten;
      }
    }
    await fh.sync();
    closed = true;
    await fh.close();
    await rename(tmp, path);
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Conversion
// ---------------------------------------------------------------------------------------------

let f16Table: Float32Array | undefined;

/** All 65536 half-precision values as f32, built on first use (256 KiB). */
function halfTable(): Float32Array {
  if (f16Table !== undefined) return f16Table;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0)
      table[h] = sign * mant * 2 ** -24; // zero and subnormals
    else if (exp === 31) table[h] = mant ? Number.NaN : sign * Infinity;
    else table[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  f16Table = table;
  return table;
}

/**
 * Converts a tensor's raw little-endian bytes to a new Float32Array (for tests and tools).
 * BF16 and F16 convert exactly; F32 is copied. `buf` may have any alignment.
 *
 * @param info - The tensor's info (`dtype` F32, F16 or BF16, and `byteLength`).
 * @param buf - Its bytes, exactly `info.byteLength` of them.
 * @returns `info.byteLength / element size` values.
 * @throws {TypeError} For another dtype or a length mismatch.
 */
export function toFloat32(info: Pick<TensorInfo, 'name' | 'dtype' | 'byteLength'>, buf: Uint8Array): Float32Array {
  if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16') {
    throw invalidOption(`the dtype of tensor ${JSON.stringify(info.name)}`, 'F32, F16 or BF16', info.dtype);
  }
  if (!(buf instanceof Uint8Array) || buf.byteLength !== info.byteLength) {
    const expected = `a Uint8Array of ${info.byteLength} bytes (tensor ${JSON.stringify(info.name)})`;
    throw invalidOption('buf', expected, buf);
  }
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = buf.byteLength / DTYPE_SIZES[info.dtype];
  const out = new Float32Array(n);
  if (info.dtype === 'F32') {
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
  } else if (info.dtype === 'BF16') {
    // bf16 is the top half of an f32: shift its bits into place (exact, NaN payloads kept).
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = view.getUint16(2 * i, true) << 16;
  } else {
    const table = halfTable();
    for (let i = 0; i < n; i++) out[i] = table[view.getUint16(2 * i, true)]!;
  }
  return out;
}
