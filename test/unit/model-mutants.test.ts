/**
 * Model files that used to hang the loader or mislead it (issue 10: a fuzz of the tiny golden
 * model), each made here from test/fixtures/golden/tiny-model.safetensors and loaded with
 * inspectModel (metadata parsing and the shape checks of src/model/config.ts, the path checks of
 * src/weights/safetensors.ts). Loads run in a child process with a watchdog of
 * {@link MUTANT_TIMEOUT_MS} per file: a hang fails that mutant (and only it) instead of freezing
 * the suite. Non-finite weights are checked on the read path the engine uses
 * (`SafetensorsFile.read(name, { finite: true })`).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { expectedTensors } from '../../src/model/config.js';
import { escapeControl, quoteText } from '../../src/text.js';
import {
  SafetensorsFile,
  type SafetensorsTensorInput,
  firstNonFinite,
  writeSafetensors,
} from '../../src/weights/safetensors.js';

const MODEL = fileURLToPath(new URL('../fixtures/golden/tiny-model.safetensors', import.meta.url));
/** Longest one load may take before it counts as a hang (a valid load takes ~10 ms). */
const MUTANT_TIMEOUT_MS = 10_000;
/** Extra time for the child's start (tsx, imports) before its first result. */
const STARTUP_MS = 30_000;

/** A metadata mutant: keys replaced in the fixture's metadata, and what the error must say. */
interface MetaMutant {
  name: string;
  meta: Record<string, string>;
  error: string;
}

const BLOCKS = 'the file has 2 transformer blocks (blocks.0 to blocks.1)';
const MUTANTS: MetaMutant[] = [
  // The five hangs: numbers the loader looped on.
  {
    name: 'depth=1e9',
    meta: { depth: '1000000000' },
    error: `Expected an integer in [1, 1000] for metadata depth but received "1000000000"; ${BLOCKS}`,
  },
  {
    name: 'depth=1e8',
    meta: { depth: '100000000' },
    error: `Expected an integer in [1, 1000] for metadata depth but received "100000000"; ${BLOCKS}`,
  },
  {
    name: 'depth=99999999999999999999',
    meta: { depth: '99999999999999999999' },
    error: `Expected an integer in [1, 1000] for metadata depth but received "99999999999999999999"; ${BLOCKS}`,
  },
  {
    name: 'vq_num_res=1e9',
    meta: { vq_num_res: '1000000000' },
    error:
      'Expected an integer in [0, 64] for metadata vq_num_res but received "1000000000"; ' +
      'the decoder has 2 blocks at level 0 (decoder.up.0.block.0 to decoder.up.0.block.1)',
  },
  {
    name: 'share_quant_resi=1e9',
    meta: { share_quant_resi: '1000000000' },
    error:
      'Expected an integer in [1, 64] for metadata share_quant_resi but received "1000000000"; ' +
      'the file has 4 Phi convs (quantize.quant_resi.qresi_ls.0 to quantize.quant_resi.qresi_ls.3)',
  },
  // Metadata that contradicts the tensors.
  {
    name: 'depth=1 with 2 blocks',
    meta: { depth: '1' },
    error: `metadata depth="1" contradicts the tensors: ${BLOCKS}`,
  },
  {
    name: 'vq_num_res=0 with 2 decoder blocks per level',
    meta: { vq_num_res: '0' },
    error:
      'metadata vq_num_res="0" contradicts the tensors: the decoder has 2 blocks at level 0 ' +
      '(decoder.up.0.block.0 to decoder.up.0.block.1), i.e. vq_num_res + 1 = 2',
  },
  {
    name: 'vq_attn_at_lowest=0 with attention tensors',
    meta: { vq_attn_at_lowest: '0' },
    error:
      'metadata vq_attn_at_lowest="0" contradicts the tensors: the lowest decoder level has 2 attention blocks ' +
      '(decoder.up.4.attn.0 to decoder.up.4.attn.1)',
  },
  {
    name: 'share_quant_resi=1 with 4 Phi convs',
    meta: { share_quant_resi: '1' },
    error:
      'metadata share_quant_resi="1" contradicts the tensors: the file has 4 Phi convs ' +
      '(quantize.quant_resi.qresi_ls.0 to quantize.quant_resi.qresi_ls.3)',
  },
  {
    name: 'patch_nums with the same K and another last scale',
    meta: { patch_nums: '1,2,3,4,6,9,13,18,24,32' },
    error:
      'metadata patch_nums="1,2,3,4,6,9,13,18,24,32" contradicts the tensors: pos_start is [1, 257, 64]: ' +
      'a prefix of 257 tokens, not 32^2 + 1 = 1025 for a last scale of 32',
  },
  {
    name: 'patch_nums with another K',
    meta: { patch_nums: '1,2,3,4,5,6,8,10,16' },
    error:
      'metadata patch_nums="1,2,3,4,5,6,8,10,16" contradicts the tensors: lvl_embed.weight is [10, 64]: 10 scales, not 9',
  },
  {
    name: 'quant_resi=1e30',
    meta: { quant_resi: '1e30' },
    error: 'Expected a number in [0, 1] for metadata quant_resi but received "1e30"',
  },
  {
    name: 'quant_resi=-5',
    meta: { quant_resi: '-5' },
    error: 'Expected a number in [0, 1] for metadata quant_resi but received "-5"',
  },
  ...['1e308', '0', '-1', '1e-300'].map((v) => ({
    name: `rope_base=${v}`,
    meta: { rope_base: v },
    error: `Expected a number in (1, 10000000] for metadata rope_base but received "${v}"`,
  })),
  ...['abc', '1e9', '-1'].map((v) => ({
    name: `cfg=${v}`,
    meta: { cfg: v },
    error: `Expected a number in [0, 100] for metadata cfg but received "${v}"`,
  })),
  {
    name: 'color_fix=bogus',
    meta: { color_fix: 'bogus' },
    error: 'Expected one of "adain", "wavelet", "none" for metadata color_fix but received "bogus"',
  },
  {
    name: 'format=notalignvar',
    meta: { format: 'notalignvar' },
    error: 'Expected one of "alignvar" for metadata format but received "notalignvar"',
  },
  {
    name: 'dtype=bf16 on F32 tensors',
    meta: { dtype: 'bf16' },
    error: 'metadata dtype="bf16" contradicts the tensors: the tensors are 206 F32',
  },
  {
    name: 'a control character in a value is escaped in the message',
    meta: { depth: '2\u001b[2J' },
    error: `Expected an integer in [1, 1000] for metadata depth but received "2\\x1b[2J"; ${BLOCKS}`,
  },
];

/** One load's outcome, as the child reports it. */
interface LoadResult {
  ok?: boolean;
  message?: string;
  code?: string;
  status?: string;
  hang?: boolean;
}

const upscalerTs = fileURLToPath(new URL('../../src/upscaler.ts', import.meta.url));
const CHILD = `
import { inspectModel } from ${JSON.stringify(upscalerTs)};
const paths = JSON.parse(process.env.AV_MUTANTS);
for (let i = 0; i < paths.length; i++) {
  let r;
  try {
    const info = await inspectModel(paths[i]);
    r = { ok: true, status: info.metadata.status };
  } catch (e) {
    r = { ok: false, message: e.message, code: e.code };
  }
  process.stdout.write(JSON.stringify({ i, ...r }) + '\\n');
}
process.exit(0);
`;

/**
 * Loads each path with inspectModel in a child process. A load that reports nothing within
 * MUTANT_TIMEOUT_MS is a hang: the child is killed and a new one continues with the next path.
 */
async function loadAll(paths: string[]): Promise<LoadResult[]> {
  const results: LoadResult[] = [];
  let next = 0;
  while (next < paths.length) {
    const start = next;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD], {
      env: { ...process.env, AV_MUTANTS: JSON.stringify(paths.slice(start)) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let killed = false;
    await new Promise<void>((resolve) => {
      let timer = setTimeout(onHang, STARTUP_MS + MUTANT_TIMEOUT_MS);
      function onHang(): void {
        results[next] = { hang: true };
        next += 1;
        killed = true;
        child.kill('SIGKILL');
      }
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        for (let nl = out.indexOf('\n'); nl >= 0; nl = out.indexOf('\n')) {
          const r = JSON.parse(out.slice(0, nl)) as LoadResult & { i: number };
          out = out.slice(nl + 1);
          results[start + r.i] = r;
          next = start + r.i + 1;
          clearTimeout(timer);
          timer = setTimeout(onHang, MUTANT_TIMEOUT_MS);
        }
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (!killed && next < paths.length) {
      results[next] = { ok: false, message: `the child exited before reporting: ${err.slice(-2000)}` };
      next += 1;
    }
  }
  return results;
}

const FIFO_OK = process.platform !== 'win32' && spawnSync('mkfifo', ['--version']).status === 0;

describe('model files that hung or misled the loader (issue 10)', () => {
  let dir: string;
  let tensors: Record<string, SafetensorsTensorInput>;
  let meta: Record<string, string>;
  const extra: { name: string; path: string }[] = [];
  const results = new Map<string, LoadResult>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'alignvar-mutants-'));
    const f = await SafetensorsFile.open(MODEL);
    tensors = {};
    for (const [name, info] of f.tensors)
      tensors[name] = { dtype: info.dtype, shape: info.shape, data: await f.read(name) };
    meta = { ...f.metadata };
    await f.close();
    const paths: string[] = [];
    const names: string[] = [];
    for (const [i, m] of MUTANTS.entries()) {
      const path = join(dir, `meta-${i}.safetensors`);
      await writeSafetensors(path, tensors, { ...meta, ...m.meta });
      paths.push(path);
      names.push(m.name);
    }
    // A status with ANSI escapes, a bell and line breaks: it must come back escaped.
    const statusPath = join(dir, 'status.safetensors');
    await writeSafetensors(statusPath, tensors, {
      ...meta,
      status: 'ok\u001b[31m red\r\nfake: line\u0007\u009b2J\u202e',
    });
    extra.push({ name: 'status', path: statusPath });
    const folder = join(dir, 'folder.safetensors');
    await mkdir(folder);
    extra.push({ name: 'directory', path: folder });
    extra.push({ name: 'device', path: '/dev/null' });
    if (FIFO_OK) {
      const fifo = join(dir, 'fifo.safetensors');
      expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
      extra.push({ name: 'fifo', path: fifo });
    }
    for (const e of extra) {
      paths.push(e.path);
      names.push(e.name);
    }
    const loaded = await loadAll(paths);
    names.forEach((n, i) => results.set(n, loaded[i]!));
  }, 300_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The load result of a mutant; a hang or a success is a failure with a message. */
  function rejection(name: string): string {
    const r = results.get(name);
    expect(r, `no result for ${name}`).toBeDefined();
    expect(r!.hang, `${name}: no result within ${MUTANT_TIMEOUT_MS} ms (a hang)`).not.toBe(true);
    expect(r!.ok, `${name} loaded without an error`).toBe(false);
    expect(r!.code).toBe('ERR_INVALID_WEIGHTS');
    return r!.message!;
  }

  for (const m of MUTANTS) {
    it(`rejects ${m.name}, naming the key, the value and what the tensors say`, () => {
      const msg = rejection(m.name);
      expect(msg).toMatch(/^Invalid safetensors file \S*meta-\d+\.safetensors: /);
      expect(msg).toContain(m.error);
    });
  }

  it('accepts the unmodified fixture metadata (the checks are not over-strict)', async () => {
    const path = join(dir, 'same.safetensors');
    await writeSafetensors(path, tensors, meta);
    const [r] = await loadAll([path]);
    expect(r).toMatchObject({ ok: true });
  });

  it('returns a status string with its control characters escaped', () => {
    const r = results.get('status');
    expect(r?.ok).toBe(true);
    expect(r!.status).toBe('ok\\x1b[31m red\\r\\nfake: line\\x07\\x9b2J\\u202e');
    // nothing left that a terminal interprets
    // eslint-disable-next-line no-control-regex
    expect(r!.status).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202e]/);
  });

  it('refuses a directory and a device before reading', () => {
    expect(rejection('directory')).toContain('not a regular file but a directory');
    expect(rejection('device')).toContain('/dev/null: not a regular file but a character device');
  });

  it.skipIf(!FIFO_OK)('refuses a FIFO with no writer without blocking', () => {
    expect(rejection('fifo')).toContain('fifo.safetensors: not a regular file but a FIFO (named pipe)');
  });
});

describe('non-finite weights (issue 10)', () => {
  let dir: string;
  let tensors: Record<string, SafetensorsTensorInput>;
  let meta: Record<string, string>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'alignvar-nonfinite-'));
    const f = await SafetensorsFile.open(MODEL);
    tensors = {};
    for (const [name, info] of f.tensors)
      tensors[name] = { dtype: info.dtype, shape: info.shape, data: await f.read(name) };
    meta = { ...f.metadata };
    await f.close();
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Reads every tensor the engine loads, as Engine.create does; returns the first error. */
  async function loadError(path: string): Promise<Error | undefined> {
    const f = await SafetensorsFile.open(path);
    try {
      const { detectConfig } = await import('../../src/model/config.js');
      for (const e of expectedTensors(detectConfig(f, path))) await f.read(e.name, { finite: true });
      return undefined;
    } catch (err) {
      return err as Error;
    } finally {
      await f.close();
    }
  }

  const F32_CASES: [string, number, number, string][] = [
    ['head.weight', 5, NaN, 'NaN'],
    ['word_embed.weight', 0, Infinity, 'Infinity'],
    ['pos_start', 100, -Infinity, '-Infinity'],
    ['quantize.embedding.weight', 1023, NaN, 'NaN'],
    ['decoder.conv_out.weight', 7, Infinity, 'Infinity'],
    ['sca.gamma', 9, NaN, 'NaN'],
    ['blocks.1.attn.mask_lambda', 1, -Infinity, '-Infinity'],
  ];
  for (const [name, at, value, shown] of F32_CASES) {
    it(`rejects ${shown} in ${name} (F32), naming the tensor and the element`, async () => {
      const src = tensors[name]!;
      const data = new Float32Array(new Float32Array(src.data.buffer, src.data.byteOffset, src.data.byteLength / 4));
      data[at] = value;
      const path = join(dir, `${name}.safetensors`);
      await writeSafetensors(path, { ...tensors, [name]: { ...src, data } }, meta);
      const err = await loadError(path);
      expect(err?.message).toBe(
        `Invalid safetensors file ${path}: tensor "${name}": element ${at} of ${data.length} is ${shown} (F32); weights must be finite`,
      );
    });
  }

  for (const [dtype, bits, shown] of [
    ['BF16', 0x7fc0, 'NaN'],
    ['BF16', 0xff80, '-Infinity'],
    ['F16', 0x7c00, 'Infinity'],
    ['F16', 0x7e00, 'NaN'],
  ] as const) {
    it(`rejects ${shown} in a ${dtype} weight`, async () => {
      const name = 'blocks.0.ffn.fc1.weight';
      const shape = tensors[name]!.shape;
      const data = new Uint16Array(shape.reduce((a, b) => a * b, 1)).fill(dtype === 'BF16' ? 0x3f80 : 0x3c00); // 1.0
      data[77] = bits;
      const path = join(dir, `${dtype}-${bits}.safetensors`);
      await writeSafetensors(
        path,
        { ...tensors, [name]: { dtype, shape, data } },
        { ...meta, dtype: dtype.toLowerCase() },
      );
      const err = await loadError(path);
      expect(err?.message).toContain(
        `tensor "${name}": element 77 of ${data.length} is ${shown} (${dtype}); weights must be finite`,
      );
      // the largest finite values pass
      data[77] = dtype === 'BF16' ? 0x7f7f : 0x7bff;
      await writeSafetensors(
        path,
        { ...tensors, [name]: { dtype, shape, data } },
        { ...meta, dtype: dtype.toLowerCase() },
      );
      expect(await loadError(path)).toBeUndefined();
    });
  }

  it('firstNonFinite finds the first bad element at every position, for odd and even lengths', async () => {
    // bit patterns: [a finite value, the largest finite, +Inf, -Inf, a NaN]
    const cases = {
      BF16: [0x3f80, 0x7f7f, 0x7f80, 0xff80, 0x7fc1],
      F16: [0x3c00, 0x7bff, 0x7c00, 0xfc00, 0x7e01],
      F32: [0x3f800000, 0x7f7fffff, 0x7f800000, 0xff800000, 0x7fc00001],
    } as const;
    for (const [dtype, [one, big, ...bad]] of Object.entries(cases) as [keyof typeof cases, readonly number[]][]) {
      for (const n of [1, 2, 3, 4, 5, 17]) {
        const words = dtype === 'F32' ? new Uint32Array(n) : new Uint16Array(n);
        words.fill(one!);
        words[n - 1] = big!;
        const bytes = new Uint8Array(words.buffer);
        expect(await firstNonFinite(dtype, bytes), `${dtype} n=${n} all finite`).toBe(-1);
        for (let p = 0; p < n; p++) {
          for (const b of bad) {
            words[p] = b;
            if (p + 1 < n) words[n - 1] = b; // a later bad element must not win
            expect(await firstNonFinite(dtype, bytes), `${dtype} n=${n} bad 0x${b.toString(16)} at ${p}`).toBe(p);
            words[p] = one!;
            words[n - 1] = big!;
          }
        }
      }
    }
    expect(await firstNonFinite('I32', new Uint8Array(new Int32Array([0x7f800000]).buffer))).toBe(-1);
  });

  it('accepts the fixture (every weight finite)', async () => {
    expect(await loadError(MODEL)).toBeUndefined();
  });
});

describe('escapeControl / quoteText', () => {
  it('escapes C0, DEL, C1, line separators and bidi controls, and nothing else', () => {
    expect(escapeControl('a\tb\nc\rd\u0000e\u001bf\u007fg\u0085h\u2028i\u202ej\u2066k')).toBe(
      'a\\tb\\nc\\rd\\x00e\\x1bf\\x7fg\\x85h\\u2028i\\u202ej\\u2066k',
    );
    const plain = 'C:\\models\\x.safetensors — ünïcödé 模型 "quoted"';
    expect(escapeControl(plain)).toBe(plain);
  });

  it('quotes with backslashes and quotes escaped once, and cuts long text', () => {
    expect(quoteText('a"b\\c\u001b')).toBe('"a\\"b\\\\c\\x1b"');
    expect(quoteText('x'.repeat(300))).toBe(`"${'x'.repeat(200)}"... (300 characters)`);
  });
});
