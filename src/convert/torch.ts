/**
 * Reads torch zip checkpoints (`torch.save` since 1.6) without Python: the zip is read with
 * yauzl, `<archive>/data.pkl` with the restricted unpickler (./pickle.ts), and tensor bytes are
 * streamed from the stored `<archive>/data/<key>` records on demand, never all at once.
 *
 * Layout written by torch: one top folder (`archive/` or the file's stem) holding `data.pkl`,
 * `data/<key>` (one record per storage, uncompressed, little-endian), `version` and, since
 * torch 1.10, `byteorder`. Legacy (pre-1.6, non-zip) pickles are refused.
 */
import { open as openFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';

import yauzl from 'yauzl';

import { AlignvarError } from '../errors.js';
import { PickleError, TORCH_DTYPE_SIZES, unpickle, type PyObject, type StorageRef, type TensorRef } from './pickle.js';

/** Largest `data.pkl` accepted (a trainer dict of a 2 GB checkpoint pickles to a few MB). */
const MAX_PICKLE_BYTES = 256 * 1024 * 1024;
/** Bytes per raw chunk handed to the caller for contiguous tensors. */
export const CHUNK_BYTES = 8 * 1024 * 1024;

/** A checkpoint that cannot be read or converted: the message names the file and what. */
export class ConvertError extends AlignvarError {
  /** @param message - What is wrong, starting with the file. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'ERR_CONVERT', options);
  }
}
Object.defineProperty(ConvertError.prototype, 'name', { value: 'ConvertError', enumerable: false, writable: true });

/** Whether the tensor's elements are one run of its storage in row-major order. */
export function isContiguous(t: Pick<TensorRef, 'shape' | 'stride'>): boolean {
  let expect = 1;
  for (let i = t.shape.length - 1; i >= 0; i--) {
    const d = t.shape[i]!;
    if (d !== 1 && t.stride[i] !== expect) return false;
    expect *= d;
  }
  return true;
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

async function collect(stream: Readable, expected: number, what: string): Promise<Buffer> {
  const out = Buffer.alloc(expected);
  let n = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    if (n + chunk.length > expected) throw new ConvertError(`${what}: more bytes than expected`);
    chunk.copy(out, n);
    n += chunk.length;
  }
  if (n !== expected) throw new ConvertError(`${what}: ${n} bytes instead of ${expected}`);
  return out;
}

/** A Python-like subscript for messages: `['trainer']`, `[0]`. */
function subscript(k: unknown): string {
  return typeof k === 'string' ? `['${k.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}']` : `[${String(k)}]`;
}

/**
 * Every storage an unpickled tree references, with where its first user sits
 * (`['trainer']['var_wo_ddp']['head.weight']`). Iterative, and each object is visited once: the
 * memo can make the tree share nodes or hold cycles, and a hostile pickle can nest deeply.
 */
function storagesOf(root: unknown): Map<StorageRef, string> {
  const out = new Map<StorageRef, string>();
  const seen = new Set<object>();
  const todo: [unknown, string][] = [[root, '']];
  for (let next = todo.pop(); next !== undefined; next = todo.pop()) {
    const [v, where] = next;
    if (typeof v !== 'object' || v === null || seen.has(v)) continue;
    seen.add(v);
    // Children are pushed last to first so that the first user named is the first in file order.
    if (v instanceof Map) {
      const kids = [...v];
      for (let i = kids.length - 1; i >= 0; i--) todo.push([kids[i]![1], where + subscript(kids[i]![0])]);
    } else if (Array.isArray(v)) for (let i = v.length - 1; i >= 0; i--) todo.push([v[i], where + subscript(i)]);
    else {
      const kind = (v as { kind?: unknown }).kind;
      const s = kind === 'tensor' ? (v as TensorRef).storage : kind === 'storage' ? (v as StorageRef) : undefined;
      if (s !== undefined && !out.has(s)) out.set(s, where);
      else if (kind === 'object') todo.push([(v as PyObject).attrs, where]);
    }
  }
  return out;
}

/** An open torch zip checkpoint: its unpickled tree and on-demand access to tensor bytes. */
export class TorchCheckpoint {
  /** The top-level unpickled value (dicts are `Map`s, tensors {@link TensorRef}s). */
  readonly root: unknown;
  /** Path as given. */
  readonly path: string;
  private readonly zip: yauzl.ZipFile;
  private readonly records: Map<string, yauzl.Entry>;
  private readonly prefix: string;

  private constructor(
    path: string,
    zip: yauzl.ZipFile,
    records: Map<string, yauzl.Entry>,
    prefix: string,
    root: unknown,
  ) {
    this.path = path;
    this.zip = zip;
    this.records = records;
    this.prefix = prefix;
    this.root = root;
  }

  /**
   * Opens a checkpoint and unpickles its `data.pkl`.
   *
   * @param path - A `.pth` / `.pt` file written by `torch.save`.
   * @throws ConvertError for a file that is not a torch zip, a refused global or malformed data.
   */
  static async open(path: string): Promise<TorchCheckpoint> {
    const fh = await openFile(path, 'r');
    try {
      const magic = Buffer.alloc(4);
      await fh.read(magic, 0, 4, 0);
      if (magic.readUInt32LE(0) !== 0x04034b50) {
        const legacy = magic[0] === 0x80;
        throw new ConvertError(
          `${path}: not a torch zip checkpoint${legacy ? ' (a legacy pre-1.6 pickle: re-save it with a current torch.save)' : ' (no zip signature)'}`,
        );
      }
    } finally {
      await fh.close();
    }
    let zip: yauzl.ZipFile;
    try {
      zip = await yauzl.openPromise(path, { lazyEntries: true, autoClose: false, validateEntrySizes: true });
    } catch (err) {
      throw new ConvertError(`${path}: unreadable zip: ${(err as Error).message}`, { cause: err });
    }
    try {
      const records = new Map<string, yauzl.Entry>();
      for await (const e of zip.eachEntry()) records.set(e.fileName, e);
      const pkl = [...records.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
      if (pkl.length !== 1)
        throw new ConvertError(`${path}: expected one <archive>/data.pkl record in the zip, found ${pkl.length}`);
      const prefix = pkl[0]!.slice(0, -'data.pkl'.length);
      const order = records.get(`${prefix}byteorder`);
      if (order !== undefined) {
        const s = (
          await collect(await zip.openReadStreamPromise(order), order.uncompressedSize, `${path}: byteorder`)
        ).toString();
        if (s.trim() !== 'little')
          throw new ConvertError(`${path}: byteorder ${JSON.stringify(s)} is not supported (expected little)`);
      }
      const entry = records.get(pkl[0]!)!;
      if (entry.uncompressedSize > MAX_PICKLE_BYTES)
        throw new ConvertError(`${path}: ${pkl[0]} is ${entry.uncompressedSize} bytes (limit ${MAX_PICKLE_BYTES})`);
      const data = await collect(await zip.openReadStreamPromise(entry), entry.uncompressedSize, `${path}: ${pkl[0]}`);
      let root: unknown;
      try {
        root = unpickle(data, { source: `${path}: ${pkl[0]}` });
      } catch (err) {
        if (err instanceof PickleError) throw new ConvertError(err.message, { cause: err });
        throw err;
      }
      // Every storage the pickle references is checked here, before any output is written, and
      // also those of tensors that are never read (optimizer state, dropped buffers): torch.load
      // would fail on such a file too.
      for (const [s, where] of storagesOf(root)) {
        const name = `${prefix}data/${s.key}`;
        const used = `(used by ${where === '' ? 'the top-level value' : where})`;
        const e = records.get(name);
        if (e === undefined) throw new ConvertError(`${path}: storage record ${name} ${used} is missing from the zip`);
        // Tensor views are read by byte range, which needs the bytes as they are (yauzl cannot
        // seek inside a deflate stream); torch always writes storage records stored.
        if (e.compressionMethod !== 0)
          throw new ConvertError(
            `${path}: storage record ${name} ${used} is compressed (zip method ${e.compressionMethod}); torch writes storage records uncompressed`,
          );
        if (e.compressedSize !== e.uncompressedSize)
          throw new ConvertError(
            `${path}: storage record ${name} ${used} takes ${e.compressedSize} bytes in the zip but declares ${e.uncompressedSize}`,
          );
        const want = s.numel * TORCH_DTYPE_SIZES[s.dtype];
        if (e.uncompressedSize < want)
          throw new ConvertError(
            `${path}: storage record ${name} ${used} holds ${e.uncompressedSize} bytes but its ${s.numel} x ${s.dtype} elements need ${want}`,
          );
      }
      return new TorchCheckpoint(path, zip, records, prefix, root);
    } catch (err) {
      zip.close();
      if (err instanceof ConvertError) throw err;
      throw new ConvertError(`${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The zip entry of a storage of this checkpoint's tree (checked by {@link TorchCheckpoint.open}). */
  private record(s: StorageRef): yauzl.Entry {
    const e = this.records.get(`${this.prefix}data/${s.key}`);
    if (e === undefined) throw new Error(`internal: storage data/${s.key} is not one of ${this.path}'s`);
    return e;
  }

  /**
   * The tensor's bytes in row-major element order (its storage dtype), in chunks of at most
   * {@link CHUNK_BYTES} bytes (each a whole number of elements). Contiguous tensors are streamed;
   * strided ones read the storage span they touch once and gather from it.
   *
   * @param t - A tensor of this checkpoint.
   * @param name - Its key, for messages.
   */
  async *chunks(t: TensorRef, name: string): AsyncGenerator<Buffer> {
    try {
      yield* this.storageChunks(t, name);
    } catch (err) {
      if (err instanceof ConvertError) throw err;
      // A read error of yauzl (a corrupt local header, a size that does not match): name where.
      throw new ConvertError(
        `${this.path}: tensor ${JSON.stringify(name)}: storage record ${this.prefix}data/${t.storage.key}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  private async *storageChunks(t: TensorRef, name: string): AsyncGenerator<Buffer> {
    const esz = TORCH_DTYPE_SIZES[t.storage.dtype];
    const n = numel(t.shape);
    if (n === 0) return;
    const entry = this.record(t.storage);
    if (isContiguous(t)) {
      const start = t.offset * esz;
      const stream = await this.zip.openReadStreamPromise(entry, { start, end: start + n * esz });
      // Chunks are gathered in a list and joined once per CHUNK_BYTES (joining on every read
      // would copy each byte many times).
      let parts: Buffer[] = [];
      let have = 0;
      let got = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        got += chunk.length;
        parts.push(chunk);
        have += chunk.length;
        if (have >= CHUNK_BYTES) {
          const joined = Buffer.concat(parts, have);
          const cut = have - (have % esz);
          yield joined.subarray(0, cut);
          parts = cut < have ? [joined.subarray(cut)] : [];
          have -= cut;
        }
      }
      if (got !== n * esz)
        throw new ConvertError(`${this.path}: tensor ${JSON.stringify(name)}: read ${got} of ${n * esz} bytes`);
      const pending = Buffer.concat(parts, have);
      if (pending.length > 0) yield pending;
      return;
    }
    // Strided view: the span [lo, hi] of storage elements it touches (strides are >= 0).
    let hi = t.offset;
    for (let i = 0; i < t.shape.length; i++) hi += (t.shape[i]! - 1) * t.stride[i]!;
    const lo = t.offset;
    const stream = await this.zip.openReadStreamPromise(entry, { start: lo * esz, end: (hi + 1) * esz });
    const span = await collect(stream, (hi + 1 - lo) * esz, `${this.path}: tensor ${JSON.stringify(name)}`);
    // Gather with element-sized typed arrays (span is freshly allocated, so aligned), one output
    // chunk at a time, yielding between chunks so that the event loop is never held for long.
    const typed = (buf: Buffer): Uint8Array | Uint16Array | Uint32Array | Float64Array => {
      const ab = buf.buffer;
      const off = buf.byteOffset;
      const len = buf.byteLength / esz;
      return esz === 8
        ? new Float64Array(ab, off, len)
        : esz === 4
          ? new Uint32Array(ab, off, len)
          : esz === 2
            ? new Uint16Array(ab, off, len)
            : new Uint8Array(ab, off, len);
    };
    const from = typed(span);
    const dims = t.shape.length;
    const idx = new Array<number>(dims).fill(0);
    const per = Math.max(1, Math.floor(CHUNK_BYTES / esz));
    let src = 0;
    for (let k0 = 0; k0 < n; k0 += per) {
      const m = Math.min(per, n - k0);
      const chunk = Buffer.alloc(m * esz);
      const to = typed(chunk);
      for (let k = 0; k < m; k++) {
        to[k] = from[src]!;
        // Odometer increment of idx, updating the source element.
        for (let d = dims - 1; d >= 0; d--) {
          idx[d]!++;
          src += t.stride[d]!;
          if (idx[d]! < t.shape[d]!) break;
          src -= t.stride[d]! * t.shape[d]!;
          idx[d] = 0;
        }
      }
      yield chunk;
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  /** The whole tensor's bytes (row-major, storage dtype); for small tensors and tests. */
  async read(t: TensorRef, name: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of this.chunks(t, name)) parts.push(Buffer.from(c));
    return Buffer.concat(parts);
  }

  /** Closes the zip file. */
  close(): void {
    this.zip.close();
  }
}
