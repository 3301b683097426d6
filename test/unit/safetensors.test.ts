/**
 * safetensors reader and writer: round trips, byte layout, every header rejection, partial reads
 * and the atomic writer. Malformed files are built by hand in a temporary folder.
 */
import { mkdir, mkdtemp, open, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';

import { WeightsError } from '../../src/errors.js';
import {
  DEFAULT_MAX_HEADER_BYTES,
  DTYPE_SIZES,
  SafetensorsFile,
  encodeSafetensors,
  isSafetensorsDType,
  parseSafetensorsHeader,
  toFloat32,
  writeSafetensors,
  type SafetensorsDType,
  type SafetensorsTensorInput,
} from '../../src/weights/safetensors.js';

let dir: string;
let counter = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'alignvar-safetensors-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** A fresh path in the temporary folder. */
function freshPath(name = 'w'): string {
  counter++;
  return join(dir, `${name}-${counter}.safetensors`);
}

/** The 8-byte little-endian length prefix. */
function prefix(n: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** A file made of a length prefix (the header's byte length unless given), a header and data. */
function rawFile(header: string | Buffer | object, data: number | Uint8Array = 0, length?: bigint): Buffer {
  const h = Buffer.isBuffer(header)
    ? header
    : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const d = typeof data === 'number' ? Buffer.alloc(data) : Buffer.from(data);
  return Buffer.concat([prefix(length ?? BigInt(h.byteLength)), h, d]);
}

/** Writes bytes to a fresh path and returns the path. */
async function put(bytes: Uint8Array): Promise<string> {
  const path = freshPath();
  await writeFile(path, bytes);
  return path;
}

/** Opens `path`, expecting a WeightsError; returns it. */
async function openError(path: string, options?: { maxHeaderBytes?: number }): Promise<WeightsError> {
  let file: SafetensorsFile | undefined;
  try {
    file = await SafetensorsFile.open(path, options);
  } catch (err) {
    expect(err).toBeInstanceOf(WeightsError);
    return err as WeightsError;
  }
  await file.close();
  throw new Error(`expected SafetensorsFile.open(${path}) to reject`);
}

/** Asserts that the error names the file, the tensor (or none) and a matching problem. */
function expectNames(err: WeightsError, file: string, tensor: string | undefined, problem: RegExp): void {
  expect(err.code).toBe('ERR_INVALID_WEIGHTS');
  expect(err.file).toBe(file);
  expect(err.tensor).toBe(tensor);
  expect(err.problem).toMatch(problem);
  const where = tensor === undefined ? '' : `tensor ${JSON.stringify(tensor)}: `;
  expect(err.message).toBe(`Invalid safetensors file ${file}: ${where}${err.problem}`);
}

/** Writes a malformed file and expects open() to name file, tensor and problem. */
async function expectRejected(bytes: Uint8Array, tensor: string | undefined, problem: RegExp): Promise<WeightsError> {
  const path = await put(bytes);
  const err = await openError(path);
  expectNames(err, path, tensor, problem);
  return err;
}

const f32Entry = (begin: number, end: number, shape = [(end - begin) / 4]) => ({
  dtype: 'F32',
  shape,
  data_offsets: [begin, end],
});

/** Random bytes from a seeded generator, so failures reproduce. */
function seededBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

describe('dtypes', () => {
  it('has the element sizes of the safetensors spec', () => {
    expect(DTYPE_SIZES).toEqual({
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
    expect(isSafetensorsDType('BF16')).toBe(true);
    expect(isSafetensorsDType('bf16')).toBe(false);
    expect(isSafetensorsDType('toString')).toBe(false);
    expect(isSafetensorsDType(4)).toBe(false);
  });
});

describe('writer -> reader round trip', () => {
  it('round-trips every dtype, metadata, a scalar, a zero-size tensor and odd sizes', async () => {
    const dtypes = Object.keys(DTYPE_SIZES) as SafetensorsDType[];
    const tensors: Record<string, SafetensorsTensorInput> = {};
    // Odd element counts (3 x 5 = 15) make the 1-byte tensors end at odd offsets.
    dtypes.forEach((dtype, i) => {
      tensors[`t.${dtype}`] = { dtype, shape: [3, 5], data: seededBytes(15 * DTYPE_SIZES[dtype], i + 1) };
    });
    tensors['scalar'] = { dtype: 'F32', shape: [], data: new Float32Array([2.5]) };
    tensors['empty'] = { dtype: 'F32', shape: [4, 0, 3], data: new Float32Array(0) };
    tensors['odd'] = { dtype: 'U8', shape: [7], data: seededBytes(7, 99) };
    // A view into the middle of a larger buffer: only its own bytes must be written.
    const big = new Float32Array([9, 1, 2, 3, 9]);
    tensors['sub'] = { dtype: 'F32', shape: [3], data: big.subarray(1, 4) };
    const metadata = Object.fromEntries([
      ['format', 'pt'],
      ['patch_nums', '1,2,3,4,6,9,13,18,24,32'],
      ['unicode', 'é ✓ 日本'],
      ['__proto__', 'stays a plain key'],
    ]) as Record<string, string>;

    const path = freshPath();
    await writeSafetensors(path, tensors, metadata);
    const file = await SafetensorsFile.open(path);
    try {
      expect(file.path).toBe(path);
      expect({ ...file.metadata }).toEqual(metadata);
      expect(Object.hasOwn(file.metadata, '__proto__')).toBe(true);
      expect(Object.isFrozen(file.metadata)).toBe(true);
      expect([...file.tensors.keys()].sort()).toEqual(Object.keys(tensors).sort());
      for (const [name, input] of Object.entries(tensors)) {
        const info = file.tensors.get(name)!;
        expect(info.name).toBe(name);
        expect(info.dtype).toBe(input.dtype);
        expect(info.shape).toEqual(input.shape);
        expect(info.byteLength).toBe(input.data.byteLength);
        expect(info.end - info.begin).toBe(info.byteLength);
        const bytes = await file.read(name);
        expect(bytes.byteLength).toBe(input.data.byteLength);
        expect(bytes.byteOffset).toBe(0);
        expect(bytes.buffer.byteLength).toBe(input.data.byteLength);
        expect(Buffer.compare(bytes, Buffer.from(input.data.buffer, input.data.byteOffset, input.data.byteLength))).toBe(0);
      }
      expect([...(await file.read('sub'))]).toEqual([...Buffer.from(new Float32Array([1, 2, 3]).buffer)]);
      expect(file.tensors.get('empty')!.byteLength).toBe(0);
      expect(file.tensors.get('scalar')!.shape).toEqual([]);
    } finally {
      await file.close();
    }
  });

  it('reads into a caller-provided buffer', async () => {
    const values = new Float32Array([1.5, -2, 3.25, 1e-3]);
    const path = freshPath();
    await writeSafetensors(path, { w: { dtype: 'F32', shape: [2, 2], data: values } });
    const file = await SafetensorsFile.open(path);
    const out = new Float32Array(4);
    await file.readInto('w', new Uint8Array(out.buffer));
    await file.close();
    expect([...out]).toEqual([...values]);
  });

  it('lays tensors out like the reference library: dtype order, then name; header padded to 8', async () => {
    const tensors: Record<string, SafetensorsTensorInput> = {
      b8: { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
      a8: { dtype: 'I8', shape: [1], data: new Int8Array([-1]) },
      z16: { dtype: 'BF16', shape: [1], data: new Uint16Array([0x3f80]) },
      y16: { dtype: 'F16', shape: [1], data: new Uint16Array([0x3c00]) },
      w32: { dtype: 'F32', shape: [1], data: new Float32Array([1]) },
      v64: { dtype: 'I64', shape: [1], data: new BigInt64Array([-5n]) },
      u64: { dtype: 'F64', shape: [1], data: new Float64Array([0.5]) },
      '10': { dtype: 'U8', shape: [1], data: new Uint8Array([10]) },
      '9': { dtype: 'U8', shape: [1], data: new Uint8Array([9]) },
    };
    const bytes = encodeSafetensors(tensors);
    const n = Number(bytes.readBigUInt64LE(0));
    expect((8 + n) % 8).toBe(0);
    const text = bytes.subarray(8, 8 + n).toString('utf8');
    expect(text).toMatch(/^\{.*\} *$/);
    const order = [...text.matchAll(/"([^"]+)":\{"dtype"/g)].map((m) => m[1]);
    // I64 > F64 > F32 > BF16 > F16 > I8 > U8 in the reference Dtype enum; names by UTF-8 bytes.
    expect(order).toEqual(['v64', 'u64', 'w32', 'z16', 'y16', 'a8', '10', '9', 'b8']);
    const header = parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.byteLength, 'mem');
    expect([...header.tensors.keys()]).toEqual(order);
    for (const t of header.tensors.values()) expect(t.begin % DTYPE_SIZES[t.dtype]).toBe(0);
    expect(header.dataStart).toBe(8 + n);
    expect(header.dataLength).toBe(8 + 8 + 4 + 2 + 2 + 1 + 1 + 1 + 3);
    expect(bytes.readBigInt64LE(header.dataStart)).toBe(-5n);
  });

  it('produces the same bytes as the reference library for its test vectors', () => {
    // From safetensors' tensor.rs tests (test_empty, test_serialization_forced_alignement).
    expect([...encodeSafetensors({})]).toEqual([8, 0, 0, 0, 0, 0, 0, 0, ...Buffer.from('{}      ')]);
    expect(encodeSafetensors({}, { framework: 'pt' })).toEqual(
      Buffer.concat([prefix(40), Buffer.from('{"__metadata__":{"framework":"pt"}}     ')]),
    );
    const data = new Float32Array([0, 1, 2, 3, 4, 5]);
    expect(encodeSafetensors({ attn0: { dtype: 'F32', shape: [1, 1, 2, 3], data } })).toEqual(
      Buffer.concat([
        prefix(72),
        Buffer.from('{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       '),
        Buffer.from(data.buffer),
      ]),
    );
  });

  it('writes metadata keys sorted, integer-like keys included', () => {
    const bytes = encodeSafetensors({}, { b: '1', '10': '2', '9': '3', a: '4' });
    const n = Number(bytes.readBigUInt64LE(0));
    expect(bytes.subarray(8, 8 + n).toString().trimEnd()).toBe('{"__metadata__":{"10":"2","9":"3","a":"4","b":"1"}}');
  });

  it('accepts zero-size tensors anywhere they do not split another tensor', () => {
    const header = Buffer.from(
      JSON.stringify({
        z0: { dtype: 'F32', shape: [0], data_offsets: [0, 0] },
        a: f32Entry(0, 8),
        z1: { dtype: 'BF16', shape: [2, 0], data_offsets: [8, 8] },
        b: f32Entry(8, 12),
        z2: { dtype: 'U8', shape: [0, 0], data_offsets: [12, 12] },
      }),
    );
    const h = parseSafetensorsHeader(header, 8 + header.byteLength + 12, 'mem');
    expect([...h.tensors.keys()]).toEqual(['z0', 'a', 'z1', 'b', 'z2']);
    expect(h.tensors.get('z1')).toEqual({ name: 'z1', dtype: 'BF16', shape: [2, 0], begin: 8, end: 8, byteLength: 0 });
  });
});

describe('rejects malformed files, naming the file, the tensor and the problem', () => {
  it('rejects an empty file and a file shorter than 8 bytes', async () => {
    await expectRejected(new Uint8Array(0), undefined, /^the file is 0 bytes, too short for the 8-byte header length$/);
    await expectRejected(new Uint8Array(5), undefined, /^the file is 5 bytes, too short/);
  });

  it('rejects a header length of 0', async () => {
    await expectRejected(prefix(0), undefined, /^the header length is 0$/);
  });

  it('rejects a header length beyond the end of the file (truncated file)', async () => {
    const full = rawFile({ a: f32Entry(0, 4) }, 4);
    await expectRejected(full.subarray(0, 20), undefined, /^the header length \d+ extends past the end of the file \(20 bytes\)$/);
    await expectRejected(rawFile('{}', 0, 3n), undefined, /^the header length 3 extends past the end of the file \(10 bytes\)$/);
  });

  it('rejects a header larger than the limit (default 100 MB, configurable)', async () => {
    expect(DEFAULT_MAX_HEADER_BYTES).toBe(100_000_000);
    await expectRejected(rawFile('{}', 0, 100_000_001n), undefined, /^the header length 100000001 exceeds the limit of 100000000 bytes$/);
    await expectRejected(rawFile('{}', 0, 0xffff_ffff_ffff_ffffn), undefined, /^the header length 18446744073709551615 exceeds the limit/);
    const path = await put(rawFile({ a: f32Entry(0, 4) }, 4));
    expectNames(await openError(path, { maxHeaderBytes: 16 }), path, undefined, /^the header length \d+ exceeds the limit of 16 bytes$/);
    await (await SafetensorsFile.open(path, { maxHeaderBytes: 1000 })).close();
    await expect(SafetensorsFile.open(path, { maxHeaderBytes: 0 })).rejects.toThrow(
      'Expected a positive integer for options.maxHeaderBytes but received 0',
    );
  });

  it('rejects a header that is not UTF-8', async () => {
    const header = Buffer.concat([Buffer.from('{"a'), Buffer.from([0xff, 0xfe]), Buffer.from('":1}')]);
    await expectRejected(rawFile(header), undefined, /^the header is not valid UTF-8$/);
  });

  it('rejects a header that is not JSON', async () => {
    await expectRejected(rawFile('{"a": {"dtype": '), undefined, /^the header is not valid JSON \(.+\)$/);
    await expectRejected(rawFile('{"a": 1} x'), undefined, /^the header is not valid JSON/);
  });

  it('rejects a header that is not an object or does not start with "{"', async () => {
    await expectRejected(rawFile('[1, 2]'), undefined, /^the header must be a JSON object but is an array$/);
    await expectRejected(rawFile('"text"'), undefined, /^the header must be a JSON object but is a string$/);
    await expectRejected(rawFile('null    '), undefined, /^the header must be a JSON object but is null$/);
    await expectRejected(rawFile(' {}'), undefined, /^the header must start with "\{" but starts with byte 0x20$/);
    await expectRejected(rawFile('\ufeff{}'), undefined, /^the header is not valid JSON/);
  });

  it('accepts trailing spaces after the header object (the writer pads with them)', async () => {
    const path = await put(rawFile('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}      ', new Uint8Array([7, 8])));
    const file = await SafetensorsFile.open(path);
    expect([...(await file.read('a'))]).toEqual([7, 8]);
    await file.close();
  });

  it('rejects __metadata__ that is not an object of strings', async () => {
    await expectRejected(
      rawFile({ __metadata__: { format: 'pt', epochs: 3 } }),
      undefined,
      /^__metadata__ must be an object of strings but "epochs" is 3$/,
    );
    await expectRejected(rawFile({ __metadata__: 'pt' }), undefined, /^__metadata__ must be an object of strings but is a string$/);
    await expectRejected(rawFile({ __metadata__: ['pt'] }), undefined, /^__metadata__ must be an object of strings but is an array$/);
    await expectRejected(rawFile({ __metadata__: { k: null } }), undefined, /"k" is null$/);
  });

  it('rejects an entry that is not an object', async () => {
    await expectRejected(rawFile({ a: 5 }), 'a', /^the entry must be an object with dtype, shape and data_offsets but is a number$/);
    await expectRejected(rawFile({ a: [1] }), 'a', /but is an array$/);
  });

  it('rejects an entry with a missing field', async () => {
    await expectRejected(rawFile({ a: { dtype: 'F32', shape: [1] } }, 4), 'a', /^the field "data_offsets" is missing$/);
    await expectRejected(rawFile({ a: { dtype: 'F32', data_offsets: [0, 4] } }, 4), 'a', /^the field "shape" is missing$/);
    await expectRejected(rawFile({ a: { shape: [1], data_offsets: [0, 4] } }, 4), 'a', /^the field "dtype" is missing$/);
  });

  it('rejects an entry with an extra field', async () => {
    await expectRejected(
      rawFile({ a: { ...f32Entry(0, 4), offset: 0 } }, 4),
      'a',
      /^unexpected field "offset" \(only dtype, shape and data_offsets are allowed\)$/,
    );
  });

  it('rejects an unknown dtype', async () => {
    await expectRejected(rawFile({ w: { dtype: 'F128', shape: [1], data_offsets: [0, 16] } }, 16), 'w', /^unknown dtype "F128" \(supported: F64, F32, /);
    await expectRejected(rawFile({ w: { dtype: 'f32', shape: [1], data_offsets: [0, 4] } }, 4), 'w', /^unknown dtype "f32"/);
    await expectRejected(rawFile({ w: { dtype: 4, shape: [1], data_offsets: [0, 4] } }, 4), 'w', /^unknown dtype 4 /);
    await expectRejected(rawFile({ w: { dtype: 'F4', shape: [2], data_offsets: [0, 1] } }, 1), 'w', /^unknown dtype "F4"/);
  });

  it('rejects a negative dimension', async () => {
    await expectRejected(
      rawFile({ w: { dtype: 'F32', shape: [-1, 2], data_offsets: [0, 0] } }),
      'w',
      /^shape \[-1, 2\] has -1 at axis 0; dimensions must be non-negative integers <= 2\^53 - 1$/,
    );
  });

  it('rejects a non-integer, non-number or unsafe dimension', async () => {
    await expectRejected(rawFile({ w: { dtype: 'F32', shape: [2, 1.5], data_offsets: [0, 12] } }, 12), 'w', /^shape \[2, 1\.5\] has 1\.5 at axis 1;/);
    await expectRejected(rawFile({ w: { dtype: 'F32', shape: ['2'], data_offsets: [0, 8] } }, 8), 'w', /^shape \["2"\] has "2" at axis 0;/);
    await expectRejected(rawFile({ w: { dtype: 'F32', shape: [null], data_offsets: [0, 4] } }, 4), 'w', /has null at axis 0;/);
    await expectRejected(
      rawFile('{"w":{"dtype":"U8","shape":[9007199254740993],"data_offsets":[0,0]}}'),
      'w',
      /^shape \[9007199254740992\] has 9007199254740992 at axis 0;/,
    );
    await expectRejected(rawFile('{"w":{"dtype":"U8","shape":[1e400],"data_offsets":[0,0]}}'), 'w', /has Infinity at axis 0;/);
    await expectRejected(rawFile({ w: { dtype: 'F32', shape: 4, data_offsets: [0, 16] } }, 16), 'w', /^shape must be an array but is 4$/);
  });

  it('rejects malformed data_offsets', async () => {
    await expectRejected(rawFile({ w: { dtype: 'U8', shape: [4], data_offsets: [4] } }, 4), 'w', /^data_offsets must be two non-negative integers <= 2\^53 - 1 but is \[4\]$/);
    await expectRejected(rawFile({ w: { dtype: 'U8', shape: [4], data_offsets: [-4, 0] } }, 4), 'w', /but is \[-4, 0\]$/);
    await expectRejected(rawFile({ w: { dtype: 'U8', shape: [4], data_offsets: [0, 4.5] } }, 4), 'w', /but is \[0, 4\.5\]$/);
    await expectRejected(rawFile({ w: { dtype: 'U8', shape: [4], data_offsets: '0,4' } }, 4), 'w', /but is "0,4"$/);
    await expectRejected(rawFile({ w: { dtype: 'U8', shape: [0], data_offsets: [4, 0] } }, 4), 'w', /^data offsets \[4, 0\) end before they begin$/);
  });

  it('rejects data offsets that do not match shape x dtype', async () => {
    const err = await expectRejected(
      rawFile({ 'blocks.0.attn.mat_qkv.weight': { dtype: 'BF16', shape: [4608, 1536], data_offsets: [0, 10] } }, 10),
      'blocks.0.attn.mat_qkv.weight',
      /^data offsets \[0, 10\) do not match shape \[4608, 1536\] x BF16 \(14155776 bytes\)$/,
    );
    expect(err.message).toBe(
      `Invalid safetensors file ${err.file}: tensor "blocks.0.attn.mat_qkv.weight": data offsets [0, 10) do not match shape [4608, 1536] x BF16 (14155776 bytes)`,
    );
    await expectRejected(rawFile({ w: f32Entry(0, 12, [2]) }, 12), 'w', /^data offsets \[0, 12\) do not match shape \[2\] x F32 \(8 bytes\)$/);
  });

  it('computes byte sizes exactly (no 64-bit or float overflow)', async () => {
    // 2^32 x 2^32 wraps to 0 in 64-bit arithmetic; the exact size is 2^64.
    await expectRejected(
      rawFile({ w: { dtype: 'U8', shape: [4294967296, 4294967296], data_offsets: [0, 0] } }),
      'w',
      /^data offsets \[0, 0\) do not match shape \[4294967296, 4294967296\] x U8 \(18446744073709551616 bytes\)$/,
    );
    // Products past 2^53 must not round to the stated length.
    await expectRejected(
      rawFile({ w: { dtype: 'U8', shape: [9007199254740991, 2], data_offsets: [0, 9007199254740991] } }),
      'w',
      /\(18014398509481982 bytes\)$/,
    );
  });

  it('rejects offsets past the end of the data section', async () => {
    await expectRejected(rawFile({ w: f32Entry(0, 8) }, 4), 'w', /^data offsets \[0, 8\) extend past the end of the data section \(4 bytes\)$/);
    await expectRejected(
      rawFile({ a: f32Entry(0, 4), b: f32Entry(4, 8) }, 6),
      'b',
      /^data offsets \[4, 8\) extend past the end of the data section \(6 bytes\)$/,
    );
  });

  it('rejects overlapping tensors', async () => {
    await expectRejected(rawFile({ a: f32Entry(0, 8), b: f32Entry(4, 12) }, 12), 'b', /^data offsets \[4, 12\) overlap tensor "a" \[0, 8\)$/);
    // Same range twice.
    await expectRejected(rawFile({ a: f32Entry(0, 4), b: f32Entry(0, 4) }, 4), 'b', /^data offsets \[0, 4\) overlap tensor "a" \[0, 4\)$/);
    // A zero-size tensor placed inside another one.
    await expectRejected(
      rawFile({ a: f32Entry(0, 8), z: { dtype: 'F32', shape: [0], data_offsets: [4, 4] } }, 8),
      'z',
      /^data offsets \[4, 4\) overlap tensor "a" \[0, 8\)$/,
    );
  });

  it('rejects a gap between tensors or before the first one', async () => {
    await expectRejected(
      rawFile({ a: f32Entry(0, 4), b: f32Entry(8, 12) }, 12),
      'b',
      /^data offsets \[8, 12\) leave bytes \[4, 8\) of the data section before them covered by no tensor$/,
    );
    await expectRejected(rawFile({ a: f32Entry(4, 8) }, 8), 'a', /leave bytes \[0, 4\) of the data section/);
  });

  it('rejects trailing bytes after the last tensor, and data with no tensors', async () => {
    await expectRejected(
      rawFile({ a: f32Entry(0, 4) }, 6),
      undefined,
      /^the data section has 2 trailing bytes \[4, 6\) covered by no tensor \(the tensors end at 4, the data section is 6 bytes\)$/,
    );
    await expectRejected(rawFile('{}', 3), undefined, /^the data section has 3 trailing bytes \[0, 3\)/);
  });

  it('rejects duplicate tensor names (JSON.parse would keep only the last)', async () => {
    const entry = JSON.stringify(f32Entry(0, 4));
    await expectRejected(rawFile(`{"a":${entry},"a":${entry}}`, 4), 'a', /^the tensor name appears more than once in the header$/);
    // The same name spelled with an escape.
    await expectRejected(rawFile(`{"ab":${entry},"\\u0061b":${entry}}`, 4), 'ab', /^the tensor name appears more than once/);
    // Nested objects may reuse keys of other objects; only repeats within one object count.
    await expectRejected(
      rawFile(`{"__metadata__":{"a":"x"},"b":${JSON.stringify(f32Entry(0, 4))},"b":${JSON.stringify(f32Entry(4, 8))}}`, 8),
      'b',
      /^the tensor name appears more than once/,
    );
  });

  it('rejects duplicate fields and duplicate metadata keys', async () => {
    await expectRejected(
      rawFile('{"a":{"dtype":"F64","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4),
      'a',
      /^the field "dtype" appears more than once$/,
    );
    await expectRejected(rawFile('{"__metadata__":{"k":"1","k":"2"}}'), undefined, /^__metadata__ has the key "k" more than once$/);
    await expectRejected(rawFile('{"__metadata__":{},"__metadata__":{}}'), undefined, /^"__metadata__" appears more than once in the header$/);
  });

  it('rejects an empty tensor name', async () => {
    await expectRejected(rawFile({ '': f32Entry(0, 4) }, 4), '', /^the tensor name is empty$/);
  });

  it('survives deeply nested input without overflowing the stack', async () => {
    const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;
    const err = await expectRejected(rawFile(`{"a":${deep},"a":1}`), 'a', /^the tensor name appears more than once/);
    expect(err).toBeInstanceOf(WeightsError);
  });

  it('rejects a path that is not a regular file', async () => {
    const sub = join(dir, `folder-${++counter}`);
    await mkdir(sub);
    expectNames(await openError(sub), sub, undefined, /^not a regular file but a directory$/);
  });

  it('passes the fs error through for a missing file', async () => {
    await expect(SafetensorsFile.open(join(dir, 'missing.safetensors'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('parseSafetensorsHeader (pure)', () => {
  it('checks the header against the file size', () => {
    const header = Buffer.from(JSON.stringify({ a: f32Entry(0, 8) }));
    const ok = parseSafetensorsHeader(header, 8 + header.byteLength + 8, '/x/y.safetensors');
    expect(ok.tensors.get('a')).toEqual({ name: 'a', dtype: 'F32', shape: [2], begin: 0, end: 8, byteLength: 8 });
    expect(ok.metadata).toEqual({});
    expect(() => parseSafetensorsHeader(header, 8 + header.byteLength + 4, '/x/y.safetensors')).toThrow(
      'Invalid safetensors file /x/y.safetensors: tensor "a": data offsets [0, 8) extend past the end of the data section (4 bytes)',
    );
    expect(() => parseSafetensorsHeader(header, 10, '/x/y.safetensors')).toThrow(
      `Invalid safetensors file /x/y.safetensors: the header length ${header.byteLength} extends past the end of the file (10 bytes)`,
    );
  });

  it('returns frozen infos', () => {
    const header = Buffer.from(JSON.stringify({ a: f32Entry(0, 8) }));
    const info = parseSafetensorsHeader(header, 8 + header.byteLength + 8, 'mem').tensors.get('a')!;
    expect(Object.isFrozen(info)).toBe(true);
    expect(Object.isFrozen(info.shape)).toBe(true);
  });
});

describe('reading', () => {
  let path: string;
  const small = new Float32Array([1, 2, 3, 4]);

  beforeAll(async () => {
    path = freshPath('partial');
    // 4 MiB of other data around the small tensor: reading `small` must not touch it.
    await writeSafetensors(path, {
      a_big: { dtype: 'F32', shape: [1024, 1024], data: new Float32Array(1024 * 1024).fill(7) },
      small: { dtype: 'F32', shape: [4], data: small },
      z_big: { dtype: 'F32', shape: [1024, 1024], data: new Float32Array(1024 * 1024).fill(9) },
    });
  });

  /** Spies on FileHandle.prototype.read and returns the spy. */
  async function spyOnRead() {
    const probe = await open(path, 'r');
    const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    return vi.spyOn(proto, 'read');
  }

  it('open() reads only the length prefix and the header', async () => {
    const spy = await spyOnRead();
    const file = await SafetensorsFile.open(path);
    const requested = spy.mock.calls.reduce((sum, c) => sum + (c[2] as number), 0);
    expect(requested).toBe(file.dataStart);
    expect(spy.mock.calls.every((c) => (c[3] as number) + (c[2] as number) <= file.dataStart)).toBe(true);
    await file.close();
  });

  it('read() reads only the tensor\'s own bytes, at its offset', async () => {
    const file = await SafetensorsFile.open(path);
    const info = file.tensors.get('small')!;
    const spy = await spyOnRead();
    const buf = await file.read('small');
    expect(spy).toHaveBeenCalled();
    let total = 0;
    for (const [, offset, length, position] of spy.mock.calls as [Uint8Array, number, number, number][]) {
      expect(position).toBe(file.dataStart + info.begin + offset);
      expect(position + length).toBeLessThanOrEqual(file.dataStart + info.end);
      total += length;
    }
    expect(total).toBe(16);
    expect([...new Float32Array(buf.buffer, buf.byteOffset, 4)]).toEqual([...small]);
    await file.close();
  });

  it('rejects a target of the wrong size', async () => {
    const file = await SafetensorsFile.open(path);
    await expect(file.readInto('small', new Uint8Array(3))).rejects.toThrow(
      'Expected a Uint8Array of 16 bytes (tensor "small") for target but received Uint8Array(3) [ 0, 0, 0 ]',
    );
    await expect(file.readInto('small', new Float32Array(4) as unknown as Uint8Array)).rejects.toThrow(TypeError);
    await file.close();
  });

  it('names a missing tensor', async () => {
    const file = await SafetensorsFile.open(path);
    const err = await file.read('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WeightsError);
    expectNames(err as WeightsError, path, 'nope', /^no such tensor \(the file has 3\)$/);
    await file.close();
  });

  it('refuses to read after close; close is idempotent', async () => {
    const file = await SafetensorsFile.open(path);
    await file.close();
    await file.close();
    const err = await file.read('small').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WeightsError);
    expectNames(err as WeightsError, path, 'small', /^cannot read: the file has been closed$/);
  });

  it('reports a file truncated after it was opened', async () => {
    const copy = freshPath('trunc');
    await writeFile(copy, await readFile(path));
    const file = await SafetensorsFile.open(copy);
    await truncate(copy, file.dataStart + file.tensors.get('z_big')!.begin + 100);
    await expect(file.read('a_big')).resolves.toHaveLength(4 * 1024 * 1024);
    const err = await file.read('z_big').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WeightsError);
    expectNames(err as WeightsError, copy, 'z_big', /^the file ended after 100 of 4194304 bytes/);
    await file.close();
  });
});

describe('atomic writer', () => {
  it('validates before writing: a data view whose length mismatches the shape creates nothing', async () => {
    const sub = await mkdtemp(join(dir, 'w-'));
    const target = join(sub, 'out.safetensors');
    const bad = { w: { dtype: 'F32' as const, shape: [2, 3], data: new Float32Array(5) } };
    await expect(writeSafetensors(target, bad)).rejects.toThrow(
      'Expected a view of 24 bytes (shape [2, 3] x F32) for tensors["w"].data but received Float32Array(5) [ 0, 0, 0, 0, 0 ]',
    );
    expect(() => encodeSafetensors(bad)).toThrow(TypeError);
    expect(await readdir(sub)).toEqual([]);
  });

  it('rejects invalid inputs with "Expected ... for ... but received ..." messages', () => {
    const data = new Uint8Array(1);
    expect(() => encodeSafetensors({ w: { dtype: 'Q4' as SafetensorsDType, shape: [1], data } })).toThrow(
      /^Expected one of F64, F32, .* for tensors\["w"\]\.dtype but received "Q4"$/,
    );
    expect(() => encodeSafetensors({ w: { dtype: 'U8', shape: [-1], data } })).toThrow(
      'Expected an array of non-negative integers <= 2^53 - 1 for tensors["w"].shape but received [ -1 ]',
    );
    expect(() => encodeSafetensors({ w: { dtype: 'U8', shape: [1], data: [1] as unknown as Uint8Array } })).toThrow(
      'for tensors["w"].data but received [ 1 ]',
    );
    expect(() => encodeSafetensors({ __metadata__: { dtype: 'U8', shape: [1], data } })).toThrow(
      'Expected a non-empty, well-formed name other than "__metadata__" for a tensor name but received "__metadata__"',
    );
    expect(() => encodeSafetensors({ '': { dtype: 'U8', shape: [1], data } })).toThrow('for a tensor name but received ""');
    expect(() => encodeSafetensors({ '\ud800': { dtype: 'U8', shape: [1], data } })).toThrow(TypeError);
    expect(() => encodeSafetensors({}, { k: 1 as unknown as string })).toThrow('Expected a string for metadata["k"] but received 1');
  });

  it('leaves no partial file and keeps the old one when a write fails midway', async () => {
    const sub = await mkdtemp(join(dir, 'w-'));
    const target = join(sub, 'out.safetensors');
    await writeSafetensors(target, { old: { dtype: 'U8', shape: [2], data: new Uint8Array([1, 2]) } });
    const before = await readFile(target);

    const probe = await open(target, 'r');
    const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    const original = proto.write;
    let calls = 0;
    const spy = vi.spyOn(proto, 'write').mockImplementation(function (this: unknown, ...args: unknown[]) {
      calls++;
      if (calls === 2) return Promise.reject(new Error('ENOSPC: simulated disk full'));
      return original.apply(this, args);
    });
    await expect(
      writeSafetensors(target, {
        a: { dtype: 'F32', shape: [1000], data: new Float32Array(1000) },
        b: { dtype: 'F32', shape: [1000], data: new Float32Array(1000) },
      }),
    ).rejects.toThrow('ENOSPC: simulated disk full');
    expect(spy).toHaveBeenCalledTimes(2);
    spy.mockRestore();
    expect(await readdir(sub)).toEqual(['out.safetensors']);
    expect(Buffer.compare(await readFile(target), before)).toBe(0);
  });

  it('removes the temporary file when the final rename fails', async () => {
    const sub = await mkdtemp(join(dir, 'w-'));
    const target = join(sub, 'taken');
    await mkdir(join(target, 'child'), { recursive: true }); // rename onto a non-empty folder fails
    await expect(writeSafetensors(target, { a: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } })).rejects.toThrow();
    expect(await readdir(sub)).toEqual(['taken']);
  });

  it('fails cleanly when the target folder does not exist', async () => {
    const sub = await mkdtemp(join(dir, 'w-'));
    const target = join(sub, 'gone', 'out.safetensors');
    await expect(writeSafetensors(target, {})).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(sub)).toEqual([]);
  });

  it('replaces an existing file', async () => {
    const sub = await mkdtemp(join(dir, 'w-'));
    const target = join(sub, 'out.safetensors');
    await writeSafetensors(target, { a: { dtype: 'U8', shape: [1], data: new Uint8Array([1]) } });
    await writeSafetensors(target, { b: { dtype: 'U8', shape: [1], data: new Uint8Array([2]) } });
    const file = await SafetensorsFile.open(target);
    expect([...file.tensors.keys()]).toEqual(['b']);
    await file.close();
    expect(await readdir(sub)).toEqual(['out.safetensors']);
  });
});

describe('toFloat32', () => {
  const info = (dtype: SafetensorsDType, byteLength: number) => ({ name: 't', dtype, byteLength });

  it('copies F32 from an unaligned buffer', () => {
    const values = new Float32Array([1.5, -0, Infinity, 3e-42]);
    const raw = new Uint8Array(17);
    raw.set(new Uint8Array(values.buffer), 1);
    const out = toFloat32(info('F32', 16), raw.subarray(1));
    expect([...out]).toEqual([...values]);
    expect(Object.is(out[1], -0)).toBe(true);
  });

  it('converts BF16 exactly', () => {
    const bits = new Uint16Array([0x3f80, 0xc000, 0x7f80, 0xff80, 0x0001, 0x3eaa, 0x8000]);
    const out = toFloat32(info('BF16', 14), new Uint8Array(bits.buffer));
    expect([...out]).toEqual([1, -2, Infinity, -Infinity, 2 ** -133, 0.33203125, -0]);
    expect(Object.is(out[6], -0)).toBe(true);
    expect(Number.isNaN(toFloat32(info('BF16', 2), new Uint8Array(new Uint16Array([0x7fc0]).buffer))[0])).toBe(true);
  });

  it('converts F16 exactly, subnormals and specials included', () => {
    const bits = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x7c00, 0xfc00, 0x8000, 0x3555]);
    const out = toFloat32(info('F16', 20), new Uint8Array(bits.buffer));
    expect([...out]).toEqual([1, -2, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, 65504, Infinity, -Infinity, -0, 0.333251953125]);
    expect(Number.isNaN(toFloat32(info('F16', 2), new Uint8Array(new Uint16Array([0x7e00]).buffer))[0])).toBe(true);
  });

  it('rejects other dtypes and length mismatches', () => {
    expect(() => toFloat32(info('I32', 4), new Uint8Array(4))).toThrow(
      'Expected F32, F16 or BF16 for the dtype of tensor "t" but received "I32"',
    );
    expect(() => toFloat32(info('F32', 8), new Uint8Array(4))).toThrow(/^Expected a Uint8Array of 8 bytes \(tensor "t"\) for buf/);
  });
});
