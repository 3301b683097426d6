/**
 * The public API end to end on the tiny model fixture (test/fixtures/golden/tiny-model.safetensors,
 * LR tile 64 -> HR 256, random weights): image layouts, determinism, progress, abort, errors.
 * Skipped, with the reason printed, while the fixture does not exist.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  AlignvarError,
  DEFAULT_MODEL_PATH,
  ImageError,
  createUpscaler,
  inspectModel,
  type UpscaleProgress,
  type Upscaler,
} from '../../src/index.js';
import { resizeInto } from '../../src/image/resample.js';
import { SafetensorsFile, type SafetensorsTensorInput, writeSafetensors } from '../../src/weights/safetensors.js';

/** Copies `src` with extra `__metadata__` keys (tensors unchanged) to `dst`. */
async function withMetadata(src: string, dst: string, extra: Record<string, string>): Promise<void> {
  const f = await SafetensorsFile.open(src);
  try {
    const t: Record<string, SafetensorsTensorInput> = {};
    for (const [name, info] of f.tensors) {
      t[name] = { dtype: info.dtype as SafetensorsTensorInput['dtype'], shape: info.shape, data: await f.read(name) };
    }
    await writeSafetensors(dst, t, { ...f.metadata, ...extra });
  } finally {
    await f.close();
  }
}

const MODEL = fileURLToPath(new URL('../fixtures/golden/tiny-model.safetensors', import.meta.url));
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`golden/upscale: skipped: fixture ${MODEL} does not exist yet`);

/** A smooth RGBA test image with an alpha ramp, as raw pixels and PNG. */
async function rgbaImage(w: number, h: number): Promise<{ raw: Uint8Array; png: Buffer }> {
  const raw = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 4;
      raw[i] = Math.round((255 * x) / (w - 1));
      raw[i + 1] = Math.round((255 * y) / (h - 1));
      raw[i + 2] = Math.round(128 + 100 * Math.sin(x / 9) * Math.cos(y / 13));
      raw[i + 3] = x < w / 3 ? 255 : Math.round((255 * (w - x)) / w);
    }
  return {
    raw,
    png: await sharp(raw, { raw: { width: w, height: h, channels: 4 } })
      .png()
      .toBuffer(),
  };
}

describe.skipIf(!HAVE_MODEL)('Upscaler (tiny model)', () => {
  let up: Upscaler;
  beforeAll(async () => {
    up = await createUpscaler({ model: MODEL, device: 'cpu' });
  });
  afterAll(async () => {
    await up?.dispose();
  });

  it('reports its model, device and resolved options', async () => {
    expect(up.device).toBe('cpu');
    expect(up.scale).toBe(4);
    expect(up.modelConfig.lrSize).toBe(64);
    expect(up.options).toMatchObject({
      model: MODEL,
      seed: 0,
      cfg: 6,
      topK: 1,
      topP: 0.75,
      tileBatch: 4,
      colorFix: 'adain',
    });
    expect((await inspectModel(MODEL)).config.hrSize).toBe(256);
  });

  it('turns a 300x200 RGBA PNG into a 1200x800 RGBA PNG with the alpha resampled centre-aligned', async () => {
    const { raw, png } = await rgbaImage(300, 200);
    const seen: UpscaleProgress[] = [];
    const out = await up.upscale(png, { onProgress: (p) => seen.push({ ...p }) });
    const meta = await sharp(out).metadata();
    expect(meta).toMatchObject({ format: 'png', width: 1200, height: 800, channels: 4, hasAlpha: true });
    // Alpha is the input alpha enlarged with lanczos3, not touched by the model.
    const alpha = Uint8Array.from({ length: 300 * 200 }, (_, i) => raw[i * 4 + 3]!);
    const want = new Uint8Array(1200 * 800);
    resizeInto(alpha, 300, 200, 1, want, 1200, 800, 'lanczos3');
    const { data } = await sharp(out).extractChannel(3).raw().toBuffer({ resolveWithObject: true });
    expect(Buffer.compare(data, Buffer.from(want))).toBe(0);
    // 6 x 4 tiles of 64 with overlap >= 8, 10 scales each, counted per tile; batches of 4.
    const last = seen[seen.length - 1]!;
    expect(last).toEqual({ tilesDone: 24, tilesTotal: 24, scalesDone: 240, scalesTotal: 240 });
    expect(seen.filter((p) => p.tilesDone > 0 && p.scalesDone === p.tilesDone * 10).map((p) => p.tilesDone)).toEqual([
      4, 8, 12, 16, 20, 24,
    ]);
  });

  it("takes cfg and colorFix defaults from the model's metadata; options override them", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'alignvar-meta-'));
    try {
      const path = join(dir, 'wavelet.safetensors');
      await withMetadata(MODEL, path, { cfg: '0', color_fix: 'wavelet' });
      const info = await inspectModel(path);
      expect(info).toMatchObject({ defaultCfg: 0, defaultColorFix: 'wavelet' });
      const { png } = await rgbaImage(70, 40);
      const w = await createUpscaler({ model: path, device: 'cpu' });
      const a = await createUpscaler({ model: path, device: 'cpu', colorFix: 'adain' });
      try {
        expect(w.options).toMatchObject({ cfg: 0, colorFix: 'wavelet' });
        expect(a.options).toMatchObject({ cfg: 0, colorFix: 'adain' });
        const outW = await w.upscale(png);
        const outA = await a.upscale(png);
        expect(outW.equals(outA)).toBe(false);
        expect((await w.upscale(png, {})).equals(outW)).toBe(true);
      } finally {
        await w.dispose();
        await a.dispose();
      }
      // an unknown value is an error naming the key, not a silent fallback to AdaIN (issue 10)
      await withMetadata(MODEL, join(dir, 'odd.safetensors'), { color_fix: 'lab' });
      await expect(inspectModel(join(dir, 'odd.safetensors'))).rejects.toThrow(
        'Expected one of "adain", "wavelet", "none" for metadata color_fix but received "lab"',
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('serves concurrent calls on one upscaler (a server pattern) with the results of sequential ones', async () => {
    const a = (await rgbaImage(70, 40)).png;
    const b = (await rgbaImage(40, 90)).png;
    const seqA = await up.upscale(a);
    const seqB = await up.upscale(b);
    const [parA, parB, parA2] = await Promise.all([up.upscale(a), up.upscale(b), up.upscale(a)]);
    expect(parA.equals(seqA)).toBe(true);
    expect(parB.equals(seqB)).toBe(true);
    expect(parA2.equals(seqA)).toBe(true);
  });

  it('is deterministic: same seed, same bytes, whatever the tile batch size', async () => {
    const { png } = await rgbaImage(150, 90);
    const sampled = await createUpscaler({ model: MODEL, device: 'cpu', topK: 0, topP: 0, seed: 11, tileBatch: 1 });
    try {
      const a = await sampled.upscale(png);
      const b = await sampled.upscale(png);
      expect(a.equals(b)).toBe(true);
      const c = await sampled.upscale(png, { seed: 12 });
      expect(c.equals(a)).toBe(false);
      const batched = await createUpscaler({ model: MODEL, device: 'cpu', topK: 0, topP: 0, seed: 11, tileBatch: 5 });
      try {
        expect((await batched.upscale(png)).equals(a)).toBe(true);
      } finally {
        await batched.dispose();
      }
    } finally {
      await sampled.dispose();
    }
  });

  it('aborts between scales with an AbortError and stays usable', async () => {
    const { png } = await rgbaImage(130, 70);
    const ac = new AbortController();
    let calls = 0;
    const run = up.upscale(png, {
      signal: ac.signal,
      onProgress: () => {
        calls++;
        if (calls === 2) ac.abort();
      },
    });
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    // It stopped at the next scale boundary, long before the 2 x 10 scale steps of the image.
    expect(calls).toBe(2);
    const pre = new AbortController();
    pre.abort();
    await expect(up.upscale(png, { signal: pre.signal })).rejects.toMatchObject({ name: 'AbortError' });
    const out = await up.upscale(png);
    expect((await sharp(out).metadata()).width).toBe(520);
  });

  it('returns raw pixels on request', async () => {
    const gray = await sharp(new Uint8Array(20 * 10).fill(90), { raw: { width: 20, height: 10, channels: 1 } })
      .toColourspace('b-w')
      .png()
      .toBuffer();
    const { data, info } = await up.upscale(gray, { raw: true });
    expect(info).toEqual({ width: 80, height: 40, channels: 1, depth: 'uchar' });
    expect(data.length).toBe(80 * 40);
  });

  it('handles images smaller than a tile, grayscale, 16-bit, JPEG and sharp instances', async () => {
    const small = await sharp(new Uint8Array(10 * 7 * 3).fill(200), { raw: { width: 10, height: 7, channels: 3 } })
      .jpeg()
      .toBuffer();
    const jpg = await sharp(await up.upscale(small)).metadata();
    expect(jpg).toMatchObject({ format: 'jpeg', width: 40, height: 28 });

    const g16 = await sharp(
      Uint16Array.from({ length: 30 * 20 }, (_, i) => i * 97),
      { raw: { width: 30, height: 20, channels: 1 } },
    )
      .toColourspace('grey16')
      .png()
      .toBuffer();
    const m16 = await sharp(await up.upscale(g16)).metadata();
    expect(m16).toMatchObject({ width: 120, height: 80, channels: 1, depth: 'ushort' });

    const webp = await up.upscale(sharp(small).extract({ left: 0, top: 0, width: 5, height: 5 }), { format: 'webp' });
    expect(await sharp(webp).metadata()).toMatchObject({ format: 'webp', width: 20, height: 20 });
  });

  it('rejects invalid input and options with exact messages', async () => {
    await expect(up.upscale(42 as never)).rejects.toThrow(
      'Expected file path, Buffer, Uint8Array or sharp instance for input but received 42',
    );
    await expect(up.upscale(Buffer.alloc(1), { format: 'bmp' as never })).rejects.toThrow(
      'Expected one of "png", "jpeg", "webp", "tiff", "avif", "gif" for format but received "bmp"',
    );
  });

  it('reports corrupt images as ImageError naming the problem', async () => {
    const { png } = await rgbaImage(40, 40);
    const err = await up.upscale(png.subarray(0, png.length - 30)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageError);
    expect((err as ImageError).message).toBe('Cannot upscale <buffer>: corrupt or truncated PNG data');
  });

  it('enforces maxOutputPixels', async () => {
    const limited = await createUpscaler({ model: MODEL, device: 'cpu', maxOutputPixels: 1000 });
    try {
      const { png } = await rgbaImage(10, 10);
      await expect(limited.upscale(png)).rejects.toThrow(
        'Cannot upscale <buffer>: 10x10 pixels would give a 40x40 output (1600 pixels), more than the limit of 1000 pixels (maxOutputPixels)',
      );
    } finally {
      await limited.dispose();
    }
  });

  it('refuses work after dispose', async () => {
    const other = await createUpscaler({ model: MODEL, device: 'cpu' });
    await other.dispose();
    await other.dispose();
    const err = await other.upscale(Buffer.alloc(1)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AlignvarError);
    expect(err).toMatchObject({ code: 'ERR_DISPOSED', message: 'The upscaler has been disposed' });
  });
});

describe('model file errors', () => {
  it('names a missing model file', async () => {
    await expect(createUpscaler({ model: '/nonexistent/model.safetensors' })).rejects.toMatchObject({
      code: 'ERR_NO_MODEL',
      message: 'Model file not found: /nonexistent/model.safetensors',
    });
  });

  it('loads the embedded default model when no model is given', async () => {
    const up = await createUpscaler({ device: 'cpu' });
    try {
      expect(up.model).toBe(DEFAULT_MODEL_PATH);
      expect(up.scale).toBe(4);
    } finally {
      await up.dispose();
    }
  });

  it('rejects invalid options before touching the model', async () => {
    await expect(createUpscaler({ tileBatch: 0 })).rejects.toThrow(
      'Expected integer between 1 and 64 for tileBatch but received 0',
    );
  });
});
