/**
 * The hostile image corpus (test/helpers/hostile.ts) through the API and through the CLI, on the
 * tiny model fixture. For each case: a clear error naming the file or a correct x4 output, the
 * input unchanged, no file left in the output folder for a failure, and the rest of a batch done.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ImageError, createUpscaler, type Upscaler } from '../../src/index.js';
import { makeHostileCorpus, type HostileCase } from '../helpers/hostile.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'src', 'cli', 'main.ts');
const MODEL = join(ROOT, 'test', 'fixtures', 'golden', 'tiny-model.safetensors');
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`cli/hostile: skipped: fixture ${MODEL} does not exist`);

const sha = async (p: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(p))
    .digest('hex');

let dir: string;
let cases: HostileCase[];
let hashes: Map<string, string>;
/** Expected output size of the `'ok'` cases: the first frame/page, in display orientation, x4. */
const okSize = new Map<string, [number, number]>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'alignvar-hostile-'));
  cases = await makeHostileCorpus(join(dir, 'corpus'));
  hashes = new Map(await Promise.all(cases.map(async (c) => [c.file, await sha(c.file)] as const)));
  for (const c of cases.filter((x) => x.expect === 'ok')) {
    const m = await sharp(c.file).metadata();
    const w = m.autoOrient?.width ?? m.width;
    const h = m.autoOrient?.height ?? m.height;
    okSize.set(c.file, [w * 4, (m.pageHeight !== undefined && m.pages ? Math.min(h, m.pageHeight) : h) * 4]);
  }
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the hostile corpus', () => {
  it('has at least 30 cases with unique names, errors and legitimate inputs', () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
    expect(new Set(cases.map((c) => basename(c.file))).size).toBe(cases.length);
    expect(cases.filter((c) => c.expect === 'error').length).toBeGreaterThanOrEqual(30);
    expect(cases.filter((c) => c.expect === 'ok').length).toBeGreaterThanOrEqual(8);
  });
});

describe.skipIf(!HAVE_MODEL)('hostile images through the API', () => {
  let up: Upscaler;
  /** Outputs of the `'ok'` cases, one call at a time. */
  const serial = new Map<string, Buffer>();
  beforeAll(async () => {
    up = await createUpscaler({ model: MODEL, device: 'cpu' });
  });
  afterAll(async () => {
    await up?.dispose();
  });

  it('each case: an ImageError naming the file, or a 4x output; inputs never change', async () => {
    for (const c of cases) {
      const r = await up.upscale(c.file).then(
        (data) => ({ data }),
        (err: unknown) => ({ err }),
      );
      if (c.expect === 'error') {
        expect('err' in r, `${c.name} should be refused`).toBe(true);
        const err = (r as { err: unknown }).err;
        expect(err, c.name).toBeInstanceOf(ImageError);
        const e = err as ImageError;
        expect(e.code).toBe('ERR_INVALID_IMAGE');
        expect(e.file).toBe(c.file);
        expect(e.message.startsWith(`Cannot upscale ${c.file}: `), e.message).toBe(true);
        expect(e.message, c.name).not.toContain('\n');
      } else {
        expect('data' in r, `${c.name}: ${String((r as { err?: unknown }).err)}`).toBe(true);
        const meta = await sharp((r as { data: Buffer }).data).metadata();
        expect([meta.width, meta.height], c.name).toEqual(okSize.get(c.file));
        serial.set(c.file, (r as { data: Buffer }).data);
      }
      expect(await sha(c.file), `${c.name} input changed`).toBe(hashes.get(c.file));
    }
  });

  it('all at once on one upscaler: hostile calls fail alone, the others give the bytes of serial calls', async () => {
    expect(serial.size).toBe(cases.filter((c) => c.expect === 'ok').length);
    const settled = await Promise.allSettled(cases.map((c) => up.upscale(c.file)));
    settled.forEach((r, k) => {
      const c = cases[k]!;
      if (c.expect === 'error') {
        expect(r.status, c.name).toBe('rejected');
        expect((r as PromiseRejectedResult).reason, c.name).toBeInstanceOf(ImageError);
      } else {
        expect(r.status, c.name).toBe('fulfilled');
        expect(Buffer.compare((r as PromiseFulfilledResult<Buffer>).value, serial.get(c.file)!), c.name).toBe(0);
      }
    });
  });

  it('sizes are refused from the header, before decoding: the message gives them', async () => {
    const huge = cases.find((c) => c.name === 'huge-png-20000x20000')!;
    const err = (await up.upscale(huge.file).catch((e: unknown) => e)) as ImageError;
    expect(err.reason).toBe('too-large');
    expect(err.problem).toMatch(/^20000x20000 pixels would give a 80000x80000 output/);
    for (const name of [
      'bomb-png-100000x100000',
      'bomb-jpeg-65500x65500',
      'bomb-gif-65535x65535',
      'bomb-tiff-100000x100000',
    ]) {
      const e = (await up.upscale(cases.find((c) => c.name === name)!.file).catch((x: unknown) => x)) as ImageError;
      expect(e.reason, name).toBe('too-large');
    }
  });

  it('SVG is refused as unsupported, and truncated files of known formats are corrupt, not unsupported', async () => {
    const svg = (await up.upscale(cases.find((c) => c.name === 'vector')!.file).catch((e: unknown) => e)) as ImageError;
    expect(svg.reason).toBe('unsupported');
    expect(svg.problem).toBe(
      'SVG input is not supported: it is a vector format; render it to PNG at the size you want and upscale that',
    );
    const tiff = (await up
      .upscale(cases.find((c) => c.name === 'tiff-cut8')!.file)
      .catch((e: unknown) => e)) as ImageError;
    expect(tiff.reason).toBe('corrupt');
    expect(tiff.problem).toContain('corrupt or truncated TIFF data');
    const text = (await up
      .upscale(cases.find((c) => c.name === 'text-named-png')!.file)
      .catch((e: unknown) => e)) as ImageError;
    expect(text.reason).toBe('unsupported');
  });

  it('the same bytes as buffers give the same outcome, named <buffer>', async () => {
    for (const c of cases.filter(
      (x) => x.name.startsWith('png-') || x.name.startsWith('bomb-') || x.name === 'pixel-1x1',
    )) {
      const bytes = await readFile(c.file);
      const r = await up.upscale(bytes).then(
        () => 'ok',
        (e: unknown) =>
          e instanceof ImageError && e.message.startsWith('Cannot upscale <buffer>: ') ? 'error' : String(e),
      );
      expect(r, c.name).toBe(c.expect);
    }
  });
});

describe.skipIf(!HAVE_MODEL)('hostile images through the CLI', () => {
  it('one batch of all cases: errors named, outputs only for the good ones, the rest done', async () => {
    const out = join(dir, 'out');
    const good = cases.filter((c) => c.expect === 'ok').map((c) => c.file);
    const args = [...cases.map((c) => c.file), '-o', out, '--model', MODEL, '--device', 'cpu', '--json'];
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', CLI, 'upscale', ...args],
        { cwd: ROOT, timeout: 600_000 },
        (err, stdout, stderr) => done({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
      );
    });
    expect(r.code, r.stderr).toBe(1);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map(
        (l) =>
          JSON.parse(l) as {
            input: string;
            output: string | null;
            status: string;
            error: { code: string; message: string } | null;
          },
      );
    expect(lines).toHaveLength(cases.length);
    const byInput = new Map(lines.map((l) => [l.input, l]));
    const written: string[] = [];
    for (const c of cases) {
      const l = byInput.get(c.file)!;
      if (c.expect === 'error') {
        expect(l.status, c.name).toBe('failed');
        expect(l.error!.code, c.name).toBe('ERR_INVALID_IMAGE');
        expect(l.error!.message.startsWith(`Cannot upscale ${c.file}: `), l.error!.message).toBe(true);
        expect(r.stderr).toContain(`alignvar: error: Cannot upscale ${c.file}: `);
      } else {
        expect(l.status, `${c.name}: ${l.error?.message}`).toBe('done');
        written.push(basename(l.output!));
        const meta = await sharp(l.output!).metadata();
        expect([meta.width, meta.height], c.name).toEqual(okSize.get(c.file));
      }
      expect(await sha(c.file), `${c.name} input changed`).toBe(hashes.get(c.file));
    }
    // Only the outputs of good inputs, and no temporary file.
    expect((await readdir(out)).sort()).toEqual(written.sort());
    expect(written).toHaveLength(good.length);
    const failed = cases.filter((c) => c.expect === 'error').length;
    expect(r.stderr).toContain(`alignvar: ${good.length} done, ${failed} failed of ${cases.length} inputs`);
  });
});
