/**
 * The `.pth` converter without the addon: the restricted unpickler, the zip/storage reader on
 * torch-written fixtures (test/fixtures/pth, made by training/avtrain/pth_fixtures.py), dtype
 * roundings against torch's, key/shape validation, the safetensors-pair path and atomic output.
 */
import { createWriteStream, existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import yauzl from 'yauzl';
import yazl from 'yazl';

import { convertBytes } from '../../src/convert/dtype.js';
import {
  ConvertError,
  PickleError,
  TorchCheckpoint,
  convertCheckpoint,
  unpickle,
  type TensorRef,
} from '../../src/convert/index.js';
import { SafetensorsFile, encodeSafetensors, type SafetensorsTensorInput } from '../../src/weights/safetensors.js';

const DIR = new URL('../fixtures/pth/', import.meta.url).pathname;
const VARSR = `${DIR}varsr-tiny.pth`;
const PLAIN_VAE = `${DIR}vae-plain-tiny.pth`;
const MARKER = '/tmp/alignvar-pth-fixture-pwned';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'av-convert-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A protocol-2 pickle from opcodes and strings. */
function pk(...parts: (number[] | string)[]): Uint8Array {
  const out: number[] = [0x80, 2];
  for (const p of parts) out.push(...(typeof p === 'string' ? Buffer.from(p, 'latin1') : p));
  return Uint8Array.from(out);
}

async function readAll(path: string): Promise<Map<string, { dtype: string; shape: number[]; data: Buffer }>> {
  const f = await SafetensorsFile.open(path);
  try {
    const m = new Map<string, { dtype: string; shape: number[]; data: Buffer }>();
    for (const [n, info] of f.tensors) m.set(n, { dtype: info.dtype, shape: [...info.shape], data: await f.read(n) });
    return m;
  } finally {
    await f.close();
  }
}

describe('restricted unpickler', () => {
  it('builds plain data: dicts, lists, tuples, ints, floats, strings, bools, None', () => {
    // {'a': [1, 300, -5, 2**40], 'b': (1.5, True, None), 'c': 'x'}
    const long40 = [0x8a, 6, 0, 0, 0, 0, 0, 1];
    const data = pk(
      [0x7d, 0x28], // EMPTY_DICT MARK
      [0x58, 1, 0, 0, 0],
      'a',
      [0x5d, 0x28, 0x4b, 1, 0x4d, 0x2c, 0x01, 0x4a, 0xfb, 0xff, 0xff, 0xff],
      long40,
      [0x65],
      [0x58, 1, 0, 0, 0],
      'b',
      [0x47, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0x88, 0x4e, 0x87],
      [0x58, 1, 0, 0, 0],
      'c',
      [0x58, 1, 0, 0, 0],
      'x',
      [0x75, 0x2e], // SETITEMS STOP
    );
    const v = unpickle(data, { source: 't' }) as Map<string, unknown>;
    expect(v.get('a')).toEqual([1, 300, -5, 2 ** 40]);
    expect(v.get('b')).toEqual([1.5, true, null]);
    expect(v.get('c')).toBe('x');
  });

  it('reads torch.device and torch.Size as inert data', () => {
    const dev = pk('c', 'torch\ndevice\n', [0x58, 4, 0, 0, 0], 'cuda', [0x4b, 0, 0x86, 0x52, 0x2e]);
    expect(unpickle(dev, { source: 't' })).toEqual({
      kind: 'object',
      cls: 'torch.device',
      attrs: new Map<unknown, unknown>([
        [0, 'cuda'],
        [1, 0],
      ]),
    });
    const size = pk('c', 'torch\nSize\n', [0x4b, 2, 0x4b, 3, 0x86, 0x85, 0x52, 0x2e]);
    expect(unpickle(size, { source: 't' })).toEqual([2, 3]);
  });

  it.each([
    ['posix', 'system'],
    ['os', 'system'],
    ['builtins', 'eval'],
    ['subprocess', 'Popen'],
    ['torch', 'load'],
    ['numpy.core.multiarray', '_reconstruct'],
  ])('refuses the global %s.%s, naming it', (mod, name) => {
    const data = pk('c', `${mod}\n${name}\n`, [0x58, 2, 0, 0, 0], 'ls', [0x85, 0x52, 0x2e]);
    expect(() => unpickle(data, { source: 'evil' })).toThrow(
      new RegExp(`refused global ${mod.replace(/\./g, '\\.')}\\.${name}`),
    );
  });

  it('refuses STACK_GLOBAL of a refused name and unknown opcodes', () => {
    const sg = pk([0x8c, 5], 'posix', [0x8c, 6], 'system', [0x93, 0x2e]);
    expect(() => unpickle(sg, { source: 's' })).toThrow(/refused global posix\.system/);
    expect(() => unpickle(pk([0x82, 1, 0x2e]), { source: 's' })).toThrow(/unsupported pickle opcode 0x82/);
    expect(() => unpickle(pk([0x52]), { source: 's' })).toThrow(PickleError);
    expect(() => unpickle(pk([0x4a, 1]), { source: 's' })).toThrow(/ends in the middle/);
  });
});

describe('torch zip reader on torch.save fixtures', () => {
  let ck: TorchCheckpoint;
  let root: Map<string, TensorRef>;
  beforeAll(async () => {
    ck = await TorchCheckpoint.open(`${DIR}views.pth`);
    root = ck.root as Map<string, TensorRef>;
  });
  afterAll(() => ck.close());

  const base = Float32Array.from({ length: 48 }, (_, i) => (i - 20) / 4);
  const f32 = (b: Buffer) => Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
  const asF32 = (b: Buffer, dtype: 'F16' | 'BF16' | 'F64' | 'F32') => f32(Buffer.from(convertBytes(b, dtype, 'F32')));

  it('reads contiguous, transposed, strided, offset, expanded and scalar views', async () => {
    const m = (r: number, c: number) => base[r * 8 + c]!;
    expect(f32(await ck.read(root.get('contig')!, 'contig'))).toEqual(Array.from(base));
    const tr: number[] = [];
    for (let c = 0; c < 8; c++) for (let r = 0; r < 6; r++) tr.push(m(r, c));
    expect(root.get('transposed')!.stride).toEqual([1, 8]);
    expect(f32(await ck.read(root.get('transposed')!, 'transposed'))).toEqual(tr);
    const st: number[] = [];
    for (let r = 0; r < 6; r++) for (const c of [0, 3, 6]) st.push(m(r, c));
    expect(f32(await ck.read(root.get('strided')!, 'strided'))).toEqual(st);
    expect(root.get('offset')!.offset).toBe(10);
    expect(f32(await ck.read(root.get('offset')!, 'offset'))).toEqual(Array.from(base.subarray(10, 20)));
    expect(root.get('expanded')!.stride).toEqual([1, 0]);
    expect(f32(await ck.read(root.get('expanded')!, 'expanded'))).toEqual(
      [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2].map((i) => base[i]!),
    );
    expect(root.get('scalar')!.shape).toEqual([]);
    expect(f32(await ck.read(root.get('scalar')!, 'scalar'))).toEqual([base[5]!]);
  });

  it("reads the official trainer dict's args (argparse.Namespace) and optimizer state as inert data", async () => {
    const v = await TorchCheckpoint.open(VARSR);
    try {
      const top = v.root as Map<string, unknown>;
      expect([...top.keys()]).toEqual(['epoch', 'iter', 'trainer', 'args']);
      const args = top.get('args') as { kind: string; cls: string; attrs: Map<string, unknown> };
      expect(args.cls).toBe('argparse.Namespace');
      expect(args.attrs.get('patch_nums')).toBe('1_2_3_4');
      const trainer = top.get('trainer') as Map<string, unknown>;
      expect([...trainer.keys()]).toEqual(['config', 'var_wo_ddp', 'vae_local', 'var_opt']);
      const optim = (trainer.get('var_opt') as Map<string, Map<string, unknown>>).get('optim')!;
      const groups = optim.get('param_groups') as Map<string, unknown>[];
      expect(groups[0]!.get('betas')).toEqual([0.9, 0.95]);
    } finally {
      v.close();
    }
  });

  it('keeps shared storages shared', () => {
    for (const k of ['transposed', 'strided', 'offset', 'expanded', 'scalar'])
      expect(root.get(k)!.storage, k).toBe(root.get('contig')!.storage);
  });

  it('reads bf16, f16 (transposed), f64 and int64 storages', async () => {
    expect(asF32(await ck.read(root.get('bf16')!, 'bf16'), 'BF16')).toEqual(Array.from(base));
    const tr: number[] = [];
    for (let c = 0; c < 8; c++) for (let r = 0; r < 6; r++) tr.push(base[r * 8 + c]!);
    expect(asF32(await ck.read(root.get('f16_t')!, 'f16_t'), 'F16')).toEqual(tr);
    expect(asF32(await ck.read(root.get('f64')!, 'f64'), 'F64')).toEqual(Array.from(base));
    const i64 = await ck.read(root.get('i64')!, 'i64');
    expect(Array.from(new BigInt64Array(i64.buffer.slice(i64.byteOffset, i64.byteOffset + 40)))).toEqual([
      0n,
      1n,
      2n,
      3n,
      4n,
    ]);
  });

  it("rounds f32 to bf16 and f16 exactly as torch's .to() (ties, subnormals, overflow edge)", async () => {
    const src = await ck.read(root.get('src_f32')!, 'src_f32');
    expect(Buffer.from(convertBytes(src, 'F32', 'BF16')).equals(await ck.read(root.get('src_bf16')!, 'src_bf16'))).toBe(
      true,
    );
    expect(Buffer.from(convertBytes(src, 'F32', 'F16')).equals(await ck.read(root.get('src_f16')!, 'src_f16'))).toBe(
      true,
    );
  });
});

describe('refusing malicious and malformed files', () => {
  it('refuses a pickle whose __reduce__ runs a command, and the command does not run', async () => {
    await rm(MARKER, { force: true });
    const out = join(tmp, 'evil.safetensors');
    const err = await convertCheckpoint({ var: `${DIR}evil.pth`, out }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConvertError);
    expect(String((err as Error).message)).toMatch(/evil\.pth: evil\/data\.pkl: refused global posix\.system/);
    expect(existsSync(MARKER)).toBe(false);
    expect(existsSync(out)).toBe(false);
  });

  it('refuses a file that is not a zip, a truncated zip and a missing file, naming them', async () => {
    const notZip = join(tmp, 'not.pth');
    await writeFile(notZip, Buffer.from('\x80\x02}q\x00.', 'latin1'));
    await expect(convertCheckpoint({ var: notZip, out: join(tmp, 'o1.safetensors') })).rejects.toThrow(
      /not.pth: neither a torch zip nor a valid safetensors file/,
    );
    const trunc = join(tmp, 'trunc.pth');
    const bytes = await readFile(VARSR);
    await writeFile(trunc, bytes.subarray(0, bytes.length >> 1));
    await expect(convertCheckpoint({ var: trunc, out: join(tmp, 'o2.safetensors') })).rejects.toThrow(
      /trunc\.pth: unreadable zip/,
    );
    await expect(convertCheckpoint({ var: join(tmp, 'nope.pth'), out: join(tmp, 'o3.safetensors') })).rejects.toThrow(
      /ENOENT/,
    );
  });

  it('rejects invalid options before reading anything', async () => {
    await expect(
      convertCheckpoint({ var: VARSR, out: join(tmp, 'x.safetensors'), dtype: 'f8' as never }),
    ).rejects.toThrow('Expected one of f32, f16, bf16 for dtype but received "f8"');
    await expect(convertCheckpoint({ var: VARSR, out: join(tmp, 'x.safetensors'), patchNums: [2, 3] })).rejects.toThrow(
      'Expected a first scale of 1 for patchNums but received [2,3]',
    );
  });
});

/** One zip record: its name, bytes, and whether to write it deflated. */
interface ZipRecord {
  name: string;
  data: Buffer;
  compress?: boolean;
}

/** The records of a zip, in order, with their (inflated) bytes. */
async function zipRecords(path: string): Promise<ZipRecord[]> {
  const zip = await yauzl.openPromise(path, { lazyEntries: true, autoClose: false });
  try {
    const out: ZipRecord[] = [];
    for await (const e of zip.eachEntry()) {
      const parts: Buffer[] = [];
      for await (const c of (await zip.openReadStreamPromise(e)) as AsyncIterable<Buffer>) parts.push(c);
      out.push({ name: e.fileName, data: Buffer.concat(parts) });
    }
    return out;
  } finally {
    zip.close();
  }
}

/** Writes records as a zip (stored unless `compress`), as torch's writer would lay them out. */
async function writeZip(path: string, records: readonly ZipRecord[]): Promise<void> {
  const z = new yazl.ZipFile();
  for (const r of records) z.addBuffer(r.data, r.name, { compress: r.compress ?? false });
  z.end();
  await pipeline(z.outputStream, createWriteStream(path));
}

describe('refusing malformed records and pickles (derived from varsr-tiny.pth at test time)', () => {
  const PKL = 'varsr-tiny/data.pkl';
  let records: ZipRecord[];
  let head: TensorRef;
  let expAvg: TensorRef;
  let n = 0;
  beforeAll(async () => {
    records = await zipRecords(VARSR);
    const ck = await TorchCheckpoint.open(VARSR);
    try {
      const trainer = (ck.root as Map<string, Map<string, unknown>>).get('trainer')!;
      head = (trainer.get('var_wo_ddp') as Map<string, TensorRef>).get('head.weight')!;
      const optim = (trainer.get('var_opt') as Map<string, Map<string, unknown>>).get('optim')!;
      expAvg = ((optim.get('state') as Map<number, Map<string, TensorRef>>).get(28) as Map<string, TensorRef>).get(
        'exp_avg',
      )!;
    } finally {
      ck.close();
    }
  });

  const record = (t: TensorRef) => `varsr-tiny/data/${t.storage.key}`;

  /** Writes the edited records as a .pth, converts it into an empty folder, returns the error. */
  async function refused(edit: (r: ZipRecord[]) => ZipRecord[]): Promise<{ file: string; message: string }> {
    const dir = join(tmp, `malformed-${n++}`);
    await mkdir(join(dir, 'out'), { recursive: true });
    const file = join(dir, 'bad.pth');
    await writeZip(file, edit(records.map((r) => ({ ...r }))));
    const err = await convertCheckpoint({ var: file, out: join(dir, 'out', 'model.safetensors') }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConvertError);
    expect((err as ConvertError).code).toBe('ERR_CONVERT');
    // Neither the output nor a temporary file is left.
    expect(await readdir(join(dir, 'out'))).toEqual([]);
    return { file, message: (err as Error).message };
  }

  /** Replaces the one occurrence of `from` in data.pkl by `to` (byte strings, latin1). */
  const patchPickle = (from: string, to: string) => (r: ZipRecord[]) => {
    const pkl = r.find((x) => x.name === PKL)!;
    const a = Buffer.from(from, 'latin1');
    const at = pkl.data.indexOf(a);
    expect(at).toBeGreaterThan(0);
    expect(pkl.data.lastIndexOf(a)).toBe(at);
    pkl.data = Buffer.concat([pkl.data.subarray(0, at), Buffer.from(to, 'latin1'), pkl.data.subarray(at + a.length)]);
    return r;
  };

  it('converts the re-zipped fixture unchanged (the control for the cases below)', async () => {
    const file = join(tmp, 'rezipped.pth');
    await writeZip(file, records);
    const out = join(tmp, 'rezipped.safetensors');
    await convertCheckpoint({ var: file, out });
    const ref = join(tmp, 'rezipped-ref.safetensors');
    await convertCheckpoint({ var: VARSR, out: ref });
    expect((await readFile(out)).equals(await readFile(ref))).toBe(true);
  });

  it('refuses a storage record that the pickle references but the zip lacks, naming it and its tensor', async () => {
    const { file, message } = await refused((r) => r.filter((x) => x.name !== record(head)));
    expect(message).toBe(
      `${file}: storage record ${record(head)} (used by ['trainer']['var_wo_ddp']['head.weight']) is missing from the zip`,
    );
  });

  it('refuses a missing storage record even of a tensor that is never converted (optimizer state)', async () => {
    const { file, message } = await refused((r) => r.filter((x) => x.name !== record(expAvg)));
    expect(message).toBe(
      `${file}: storage record ${record(expAvg)} (used by ['trainer']['var_opt']['optim']['state'][28]['exp_avg']) is missing from the zip`,
    );
  });

  it('refuses a deflate-compressed storage record (views are read by byte range), naming it', async () => {
    const { file, message } = await refused((r) => {
      r.find((x) => x.name === record(head))!.compress = true;
      return r;
    });
    expect(message).toBe(
      `${file}: storage record ${record(head)} (used by ['trainer']['var_wo_ddp']['head.weight']) is compressed (zip method 8); torch writes storage records uncompressed`,
    );
  });

  it('refuses a storage record shorter than its storage (the view spans past its end), naming it', async () => {
    const want = head.storage.numel * 4;
    const { file, message } = await refused((r) => {
      const x = r.find((y) => y.name === record(head))!;
      expect(x.data.length).toBe(want);
      x.data = x.data.subarray(0, want - 4);
      return r;
    });
    expect(message).toBe(
      `${file}: storage record ${record(head)} (used by ['trainer']['var_wo_ddp']['head.weight']) holds ${want - 4} bytes but its 512 x F32 elements need ${want}`,
    );
  });

  it('refuses a zip without any data.pkl', async () => {
    const { file, message } = await refused((r) => r.filter((x) => !x.name.endsWith('/data.pkl')));
    expect(message).toBe(`${file}: expected one <archive>/data.pkl record in the zip, found 0`);
  });

  it.each([
    ['in the middle', 0.5],
    ['just before STOP', -1],
  ])('refuses a data.pkl truncated %s, naming the record and the byte', async (where, cut) => {
    const { file, message } = await refused((r) => {
      const pkl = r.find((x) => x.name === PKL)!;
      expect(pkl.data[pkl.data.length - 1]).toBe(0x2e); // STOP
      pkl.data = pkl.data.subarray(0, cut < 0 ? pkl.data.length + cut : Math.floor(pkl.data.length * cut));
      return r;
    });
    // Cut inside an opcode's argument or between two opcodes; just before STOP is the latter.
    const what =
      where === 'in the middle'
        ? '(in the middle of an opcode|before its STOP opcode \\(truncated\\))'
        : 'before its STOP opcode \\(truncated\\)';
    expect(message.startsWith(`${file}: ${PKL}: the pickle ends `)).toBe(true);
    expect(message).toMatch(new RegExp(`: the pickle ends ${what} \\(pickle byte \\d+\\)$`));
  });

  // pos_start, the first tensor of the pickle: storage '0' (544 f32), BINPERSID, offset 0,
  // size (1, 17, 32), stride (544, 32, 1).
  const POS_START = 'QK\x00K\x01K\x11K \x87q\x19M \x02K K\x01\x87';
  it.each([
    ['offset', 'QK\xffK\x01K\x11K \x87q\x19M \x02K K\x01\x87', '[1, 17, 32] (offset 255, strides [544, 32, 1])', 798],
    ['shape', 'QK\x00K\x01K\x12K \x87q\x19M \x02K K\x01\x87', '[1, 18, 32] (offset 0, strides [544, 32, 1])', 575],
    ['stride', 'QK\x00K\x01K\x11K \x87q\x19M \x02K!K\x01\x87', '[1, 17, 32] (offset 0, strides [544, 33, 1])', 559],
  ])('refuses a tensor whose %s points past its storage, naming the storage record', async (_, bad, view, last) => {
    const { file, message } = await refused(patchPickle(POS_START, bad));
    expect(message).toMatch(/ \(pickle byte \d+\)$/);
    expect(message.replace(/ \(pickle byte \d+\)$/, '')).toBe(
      `${file}: ${PKL}: a tensor view ${view} reaching element ${last} of storage record data/0, which holds 544 elements`,
    );
  });
});

describe('convertCheckpoint', () => {
  let ref: Map<string, { dtype: string; shape: number[]; data: Buffer }>;
  let refPath: string;
  beforeAll(async () => {
    refPath = join(tmp, 'varsr.safetensors');
    await convertCheckpoint({ var: VARSR, vae: VARSR, out: refPath });
    ref = await readAll(refPath);
  });

  it('reads the official nesting, takes patch_nums from the trainer config, drops buffers and the encoder', async () => {
    const r = await convertCheckpoint({ var: VARSR, out: join(tmp, 'one.safetensors') });
    expect(r.config.patchNums).toEqual([1, 2, 3, 4]);
    expect(r.config.depth).toBe(1);
    expect(r.refiner).toBe(true);
    expect(r.dropped).toEqual(
      expect.arrayContaining([
        'lvl_1L',
        'attn_bias_for_masking',
        'blocks.0.attn.zero_k_bias',
        'encoder.conv_in.weight',
        'quant_conv.weight',
        'quantize.ema_vocab_hit_SV',
      ]),
    );
    expect(r.metadata).toMatchObject({
      format: 'alignvar',
      sca: '0',
      refiner: '1',
      dtype: 'f32',
      patch_nums: '1,2,3,4',
      mlp_ratio: '4.0',
    });
    // --var alone and --var + --vae on the same trainer file give the same bytes.
    expect((await readFile(join(tmp, 'one.safetensors'))).equals(await readFile(refPath))).toBe(true);
    expect([...ref.keys()].some((k) => k.startsWith('diffloss.net.res_blocks.1.'))).toBe(true);
    expect(ref.get('head.weight')!.shape).toEqual([16, 32]);
  });

  it('--no-refiner leaves the refiner out', async () => {
    const r = await convertCheckpoint({ var: VARSR, out: join(tmp, 'noref.safetensors'), refiner: false });
    expect(r.refiner).toBe(false);
    const t = await readAll(join(tmp, 'noref.safetensors'));
    expect([...t.keys()].filter((k) => k.startsWith('diffloss.') || k.startsWith('decoder_norm.'))).toEqual([]);
    expect(t.size).toBe(
      ref.size - r.dropped.filter((k) => k.startsWith('diffloss.') || k.startsWith('decoder_norm.')).length,
    );
  });

  it("reads VAR's plain VQVAE state dict (f16) as --vae", async () => {
    const out = join(tmp, 'plain.safetensors');
    await convertCheckpoint({ var: VARSR, vae: PLAIN_VAE, out });
    const t = await readAll(out);
    const ck = await TorchCheckpoint.open(PLAIN_VAE);
    try {
      const w = (ck.root as Map<string, TensorRef>).get('decoder.conv_out.weight')!;
      expect(w.storage.dtype).toBe('F16');
      expect(
        t.get('decoder.conv_out.weight')!.data.equals(Buffer.from(convertBytes(await ck.read(w, 'w'), 'F16', 'F32'))),
      ).toBe(true);
    } finally {
      ck.close();
    }
    expect(t.get('head.weight')!.data.equals(ref.get('head.weight')!.data)).toBe(true);
  });

  it('--dtype bf16 casts the weight matrices only', async () => {
    const out = join(tmp, 'bf16.safetensors');
    await convertCheckpoint({ var: VARSR, out, dtype: 'bf16' });
    const t = await readAll(out);
    expect(t.get('blocks.0.attn.mat_qkv.weight')!.dtype).toBe('BF16');
    expect(t.get('diffloss.net.input_proj.weight')!.dtype).toBe('BF16');
    for (const k of [
      'blocks.0.attn.q_bias',
      'class_emb.weight',
      'quantize.embedding.weight',
      'pos_start',
      'decoder_norm.weight',
    ])
      expect(t.get(k)!.dtype, k).toBe('F32');
    const q = ref.get('blocks.0.attn.mat_qkv.weight')!.data;
    expect(t.get('blocks.0.attn.mat_qkv.weight')!.data.equals(Buffer.from(convertBytes(q, 'F32', 'BF16')))).toBe(true);
  });

  /** Writes the converted tensors as a transformer/VQVAE safetensors pair, with edits. */
  async function pair(
    name: string,
    edit: (t: Record<string, SafetensorsTensorInput>) => void = () => undefined,
  ): Promise<[string, string]> {
    const v: Record<string, SafetensorsTensorInput> = {};
    const q: Record<string, SafetensorsTensorInput> = {};
    for (const [k, x] of ref) {
      const isVq = /^(encoder|decoder|quantize|quant_conv|post_quant_conv)\./.test(k);
      (isVq ? q : v)[k] = { dtype: x.dtype as 'F32', shape: x.shape, data: x.data };
    }
    edit(v);
    const pv = join(tmp, `${name}-var.safetensors`);
    const pq = join(tmp, `${name}-vae.safetensors`);
    await writeFile(pv, encodeSafetensors(v, { patch_nums: '1,2,3,4' }));
    await writeFile(pq, encodeSafetensors(q));
    return [pv, pq];
  }

  it('converts a .safetensors pair to the same bytes', async () => {
    const [pv, pq] = await pair('ok');
    const out = join(tmp, 'pair.safetensors');
    await convertCheckpoint({ var: pv, vae: pq, out });
    expect((await readFile(out)).equals(await readFile(refPath))).toBe(true);
  });

  it('names the key, the expected and the found shape of a mismatch', async () => {
    const [pv, pq] = await pair('badshape', (t) => {
      t['head.bias'] = { dtype: 'F32', shape: [17], data: new Float32Array(17) };
    });
    await expect(convertCheckpoint({ var: pv, vae: pq, out: join(tmp, 'bad.safetensors') })).rejects.toThrow(
      `${pv}: tensor "head.bias": expected shape [16] but found [17]`,
    );
    const [rv, rq] = await pair('badref', (t) => {
      t['diffloss.net.res_blocks.1.mlp.2.weight'] = { dtype: 'F32', shape: [16, 15], data: new Float32Array(240) };
      delete t['diffloss.net.final_layer.linear.bias'];
      t['vae_proxy.0.weight'] = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
    });
    const err = (await convertCheckpoint({ var: rv, vae: rq, out: join(tmp, 'bad.safetensors') }).catch(
      (e: unknown) => e,
    )) as Error;
    expect(err).toBeInstanceOf(ConvertError);
    expect(err.message).toContain(
      'the refiner: tensor "diffloss.net.final_layer.linear.bias" is missing (expected shape [8])',
    );
    expect(err.message).toContain(
      'tensor "diffloss.net.res_blocks.1.mlp.2.weight": expected shape [16, 16] but found [16, 15]',
    );
    expect(err.message).toContain('unexpected tensor "vae_proxy.0.weight"');
    const [bv, bq] = await pair('badbuf', (t) => {
      t['attn_bias_for_masking'] = { dtype: 'F32', shape: [1, 1, 45, 45], data: new Float32Array(45 * 45) };
    });
    await expect(convertCheckpoint({ var: bv, vae: bq, out: join(tmp, 'bad.safetensors') })).rejects.toThrow(
      'tensor "attn_bias_for_masking": expected shape [1, 1, 46, 46] but found [1, 1, 45, 45]',
    );
    // Dropped buffers are checked for their dtype too (varsr-tiny.pth's int64 lvl_1L converts).
    const [dv, dq] = await pair('badbufdtype', (t) => {
      t['lvl_1L'] = { dtype: 'F32', shape: [1, 46], data: new Float32Array(46) };
    });
    await expect(convertCheckpoint({ var: dv, vae: dq, out: join(tmp, 'bad.safetensors') })).rejects.toThrow(
      `${dv}: buffer "lvl_1L": dtype F32, expected an integer type`,
    );
  });

  it('leaves an existing output untouched and no temp file when conversion fails', async () => {
    const out = join(tmp, 'keep', 'model.safetensors');
    await rm(join(tmp, 'keep'), { recursive: true, force: true });
    await (await import('node:fs/promises')).mkdir(join(tmp, 'keep'));
    await writeFile(out, 'old');
    await expect(convertCheckpoint({ var: `${DIR}evil.pth`, out })).rejects.toThrow(ConvertError);
    const ac = new AbortController();
    ac.abort();
    await expect(convertCheckpoint({ var: VARSR, out, signal: ac.signal })).rejects.toThrow();
    expect(await readFile(out, 'utf8')).toBe('old');
    expect(await readdir(join(tmp, 'keep'))).toEqual(['model.safetensors']);
  });

  it('does not modify its inputs', async () => {
    const copy = join(tmp, 'copy.pth');
    await copyFile(VARSR, copy);
    const before = await readFile(copy);
    const m0 = (await stat(copy)).mtimeMs;
    await convertCheckpoint({ var: copy, out: join(tmp, 'c.safetensors') });
    expect((await readFile(copy)).equals(before)).toBe(true);
    expect((await stat(copy)).mtimeMs).toBe(m0);
  });
});
