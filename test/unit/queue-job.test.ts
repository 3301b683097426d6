/**
 * Queue job data and worker options: the checks a producer and a worker share, and the output
 * files' completeness test, stale-temp removal and atomic write (no Redis, no addon).
 */
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { validateUpscalerOptions } from '../../src/options.js';
import { QUEUE_TEMP_SUFFIX, jobIdFor, validateJobData, validateRedisUrl } from '../../src/queue/index.js';
import {
  type ExpectedOutput,
  expectedOutput,
  isOutputComplete,
  removeStaleTemps,
  writeOutputAtomic,
} from '../../src/queue/output.js';

describe('validateJobData', () => {
  it('accepts absolute paths and the serialisable upscale options', () => {
    expect(
      validateJobData({
        input: '/in/a.png',
        output: '/out/x/../a.webp',
        options: { format: 'webp', quality: 80, seed: 7 },
      }),
    ).toEqual({
      input: '/in/a.png',
      output: '/out/a.webp',
      options: { format: 'webp', quality: 80, seed: 7 },
    });
    expect(validateJobData({ input: 'a.png', output: 'out/a.png' }, '/base')).toEqual({
      input: '/base/a.png',
      output: '/base/out/a.png',
    });
  });

  it('rejects invalid data with the API messages', () => {
    expect(() => validateJobData('a.png')).toThrow(
      'Expected object { input, output, options } for job data but received "a.png"',
    );
    expect(() => validateJobData({ input: 'a.png', output: '/o/a.png' })).toThrow(
      'Expected absolute path for input but received "a.png"',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '' })).toThrow(
      'Expected non-empty path string for output but received ""',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/o/a.png', extra: 1 })).toThrow(
      'Expected one of input, output, options for job data key but received "extra"',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/o/a.png', options: { quality: 0 } })).toThrow(
      'Expected integer between 1 and 100 for quality but received 0',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/o/a.png', options: { format: 'bmp' } })).toThrow(
      'Expected one of "png", "jpeg", "webp", "tiff", "avif", "gif" for format but received "bmp"',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/o/a.png', options: { raw: true } })).toThrow(
      'Expected one of "format", "quality", "seed" for options key but received "raw"',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/i/a.png' })).toThrow(
      'Expected path other than the input for output but received "/i/a.png"',
    );
  });

  it('derives one job id per output path', () => {
    expect(jobIdFor('/o/a.png')).toBe(jobIdFor('/o/a.png'));
    expect(jobIdFor('/o/a.png')).not.toBe(jobIdFor('/o/b.png'));
    expect(jobIdFor('/o/a.png')).toMatch(/^out-[0-9a-f]{32}$/);
  });
});

describe('queue options', () => {
  it('rejects invalid Redis URLs', () => {
    expect(validateRedisUrl('redis', 'redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
    expect(() => validateRedisUrl('redis', 'http://127.0.0.1:6379')).toThrow(
      'Expected redis:// or rediss:// URL (redis://host:port) for redis but received "http://127.0.0.1:6379"',
    );
    expect(() => validateRedisUrl('redis', 6379)).toThrow('for redis but received 6379');
  });

  it('gpu: the CUDA device index, rejects invalid', () => {
    expect(validateUpscalerOptions({}).gpu).toBe(0);
    expect(validateUpscalerOptions({ gpu: 3 }).gpu).toBe(3);
    expect(() => validateUpscalerOptions({ gpu: -1 })).toThrow(
      'Expected integer between 0 and 255 for gpu but received -1',
    );
    expect(() => validateUpscalerOptions({ gpu: '1' })).toThrow(
      'Expected integer between 0 and 255 for gpu but received "1"',
    );
  });
});

/** A W x H RGB PNG of pseudo-random pixels (so that it compresses badly and truncation cuts its data). */
async function noisePng(w: number, h: number): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  for (let k = 0, x = 12345; k < raw.length; k++) {
    x = (x * 1103515245 + 12345) >>> 0;
    raw[k] = x >>> 24;
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toBuffer();
}

describe('queue output files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'alignvar-output-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('expectedOutput: the input display size x scale, EXIF orientation applied', async () => {
    const input = join(dir, 'in.png');
    await writeFile(input, await noisePng(10, 6));
    expect(await expectedOutput(input, 4, 'png')).toEqual({ width: 40, height: 24, format: 'png' });
    expect(await expectedOutput(input, 4, undefined)).toEqual({ width: 40, height: 24, format: undefined });
    // Orientation 6 (rotate 90): stored 10x6, shown 6x10.
    const rotated = join(dir, 'rotated.jpg');
    await sharp(await noisePng(10, 6))
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toFile(rotated);
    expect(await expectedOutput(rotated, 4, 'jpeg')).toEqual({ width: 24, height: 40, format: 'jpeg' });
    await expect(expectedOutput(join(dir, 'missing.png'), 4, 'png')).rejects.toThrow();
  });

  it('isOutputComplete: only a whole file of the expected size and format', async () => {
    const expected: ExpectedOutput = { width: 40, height: 24, format: 'png' };
    const png = await noisePng(40, 24);
    const complete = join(dir, 'complete.png');
    await writeFile(complete, png);
    expect(await isOutputComplete(complete, expected)).toEqual({ width: 40, height: 24 });

    // Header (and so the size) intact, pixel data cut off.
    const truncated = join(dir, 'truncated.png');
    await writeFile(truncated, png.subarray(0, Math.floor(png.length / 2)));
    expect((await sharp(truncated).metadata()).width).toBe(40);
    expect(await isOutputComplete(truncated, expected)).toBeUndefined();

    const wrongSize = join(dir, 'wrong-size.png');
    await writeFile(wrongSize, await noisePng(10, 6));
    expect(await isOutputComplete(wrongSize, expected)).toBeUndefined();

    // JPEG bytes under a .png name: the right size, the wrong format.
    const wrongFormat = join(dir, 'wrong-format.png');
    await writeFile(wrongFormat, await sharp(png).jpeg().toBuffer());
    expect(await isOutputComplete(wrongFormat, expected)).toBeUndefined();
    // With no format expected, only the size and the decoding count.
    expect(await isOutputComplete(wrongFormat, { ...expected, format: undefined })).toEqual({ width: 40, height: 24 });
    expect(await isOutputComplete(complete, { ...expected, format: 'jpeg' })).toBeUndefined();

    const empty = join(dir, 'empty.png');
    await writeFile(empty, Buffer.alloc(0));
    expect(await isOutputComplete(empty, expected)).toBeUndefined();
    expect(await isOutputComplete(join(dir, 'missing.png'), expected)).toBeUndefined();
    const folder = join(dir, 'folder.png');
    await mkdir(folder);
    expect(await isOutputComplete(folder, expected)).toBeUndefined();
  });

  it("removeStaleTemps: removes only this output's temporary files", async () => {
    const out = join(dir, 'stale');
    await mkdir(out);
    const output = join(out, 'a.png');
    const mine = [`.a.png.123.0a1b2c3d${QUEUE_TEMP_SUFFIX}`, `.a.png.9.ffffffff${QUEUE_TEMP_SUFFIX}`];
    const others = [
      'a.png',
      'b.png',
      '.a.png',
      `.b.png.123.0a1b2c3d${QUEUE_TEMP_SUFFIX}`,
      `.a.pngx.1.00000000${QUEUE_TEMP_SUFFIX}`,
      `a.png.1.00000000${QUEUE_TEMP_SUFFIX}`,
      '.a.png.123.0a1b2c3d.png',
    ];
    for (const name of [...mine, ...others]) await writeFile(join(out, name), 'x');
    expect(await removeStaleTemps(output)).toBe(2);
    expect((await readdir(out)).sort()).toEqual([...others].sort());
    expect(await removeStaleTemps(output)).toBe(0);
    expect(await removeStaleTemps(join(dir, 'no-such-folder', 'a.png'))).toBe(0);
  });

  it('writeOutputAtomic: creates the folder; on failure leaves neither a partial output nor a temp', async () => {
    const output = join(dir, 'atomic', 'deep', 'a.png');
    const data = await noisePng(8, 8);
    await writeOutputAtomic(output, data);
    expect((await readFile(output)).equals(data)).toBe(true);
    expect(await readdir(join(dir, 'atomic', 'deep'))).toEqual(['a.png']);
    // Replaces an existing file.
    const next = await noisePng(16, 16);
    await writeOutputAtomic(output, next);
    expect((await readFile(output)).equals(next)).toBe(true);
    expect(await readdir(join(dir, 'atomic', 'deep'))).toEqual(['a.png']);

    // The folder's place is taken by a file: mkdir fails, nothing is written.
    const blocked = join(dir, 'blocked');
    await writeFile(blocked, 'not a folder');
    await expect(writeOutputAtomic(join(blocked, 'a.png'), data)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(blocked, 'utf8')).toBe('not a folder');
    // The rename fails (a folder at the output path): the temp file is removed.
    const busy = join(dir, 'busy');
    await mkdir(join(busy, 'a.png'), { recursive: true });
    await expect(writeOutputAtomic(join(busy, 'a.png'), data)).rejects.toMatchObject({ code: 'EISDIR' });
    expect(await readdir(busy)).toEqual(['a.png']);
  });
});
