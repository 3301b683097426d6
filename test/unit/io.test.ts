/** Image decoding and encoding (src/image/io.ts) with sharp on generated images; no addon. */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp, { type Metadata, type PngOptions } from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  ImageError,
  composePixels,
  decodeImage,
  defaultOutputFormat,
  encodeImage,
  transplantPngMetadata,
  type DecodedImage,
} from '../../src/image/io.js';

const W = 7;
const H = 5;
const LIMIT = { maxOutputPixels: 16384 * 16384, scale: 4 };

/** Deterministic samples: channel c of pixel i. */
const sample8 = (i: number, c: number) => (i * 37 + c * 71 + 13) % 256;
const sample16 = (i: number, c: number) => (i * 2311 + c * 9973 + 100) % 65536;

function raw8(channels: number, w = W, h = H): Uint8Array {
  return Uint8Array.from({ length: w * h * channels }, (_, k) => sample8(Math.floor(k / channels), k % channels));
}

function raw16(channels: number): Uint16Array {
  return Uint16Array.from({ length: W * H * channels }, (_, k) => sample16(Math.floor(k / channels), k % channels));
}

async function png(
  data: Uint8Array | Uint16Array,
  channels: 1 | 2 | 3 | 4,
  space: string,
  options: PngOptions = {},
): Promise<Buffer> {
  return sharp(data, { raw: { width: W, height: H, channels } })
    .toColourspace(space)
    .png(options)
    .toBuffer();
}

/** Re-decodes an encoded image to raw samples at its own depth and layout. */
async function samples(buf: Buffer): Promise<{ meta: Metadata; data: Uint8Array | Uint16Array; channels: number }> {
  const meta = await sharp(buf).metadata();
  const is16 = meta.depth === 'ushort';
  // Decoded as RGB(A) (sharp's 'b-w' output would drop the alpha), gray folded back below.
  const p = sharp(buf)
    .keepIccProfile()
    .toColourspace(is16 ? 'rgb16' : 'srgb');
  const { data, info } = await (is16 ? p.raw({ depth: 'ushort' }) : p.raw()).toBuffer({ resolveWithObject: true });
  const arr = is16 ? new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2) : new Uint8Array(data);
  if (meta.channels > 2) return { meta, data: arr, channels: info.channels };
  const n = info.width * info.height;
  const gray = is16 ? new Uint16Array(n * meta.channels) : new Uint8Array(n * meta.channels);
  for (let i = 0; i < n; i++) {
    gray[i * meta.channels] = arr[i * info.channels]!;
    if (meta.channels === 2) gray[i * 2 + 1] = arr[i * info.channels + 3]!;
  }
  return { meta, data: gray, channels: meta.channels };
}

/** Encodes a decoded image back at 1x (no upscaling) in `format`. */
function roundTrip(img: DecodedImage, format: 'png' | 'jpeg' | 'webp' | 'tiff'): Promise<Buffer> {
  return encodeImage(composePixels(img.rgb, img.width, img.height, img.alpha, img.gray, img.depth), format, {
    metadata: img.metadata,
  });
}

describe('decode and encode round trips', () => {
  it('RGBA PNG: RGB and alpha separated exactly, re-assembled exactly', async () => {
    const src = raw8(4);
    const img = await decodeImage(await png(src, 4, 'srgb'), LIMIT);
    expect(img).toMatchObject({ width: W, height: H, gray: false, depth: 8, format: 'png' });
    expect(img.alpha).toBeInstanceOf(Uint8Array);
    for (let i = 0; i < W * H; i++) {
      for (let c = 0; c < 3; c++) expect(img.rgb[i * 3 + c]).toBe(src[i * 4 + c]);
      expect(img.alpha![i]).toBe(src[i * 4 + 3]);
    }
    const back = await samples(await roundTrip(img, 'png'));
    expect(back.meta).toMatchObject({ format: 'png', channels: 4, depth: 'uchar', hasAlpha: true });
    expect(Array.from(back.data)).toEqual(Array.from(src));
  });

  it('grayscale PNG: processed as RGB, written back as one channel', async () => {
    const src = raw8(1);
    const img = await decodeImage(await png(src, 1, 'b-w'), LIMIT);
    expect(img).toMatchObject({ gray: true, depth: 8, alpha: undefined });
    for (let i = 0; i < W * H; i++) for (let c = 0; c < 3; c++) expect(img.rgb[i * 3 + c]).toBe(src[i]);
    const back = await samples(await roundTrip(img, 'png'));
    expect(back.meta).toMatchObject({ channels: 1, space: 'b-w' });
    expect(Array.from(back.data)).toEqual(Array.from(src));
  });

  it('grayscale + alpha PNG keeps two channels', async () => {
    const src = raw8(2);
    const img = await decodeImage(await png(src, 2, 'b-w'), LIMIT);
    expect(img.gray).toBe(true);
    expect(Array.from(img.alpha!)).toEqual(Array.from({ length: W * H }, (_, i) => src[i * 2 + 1]));
    const back = await samples(await roundTrip(img, 'png'));
    expect(back.meta).toMatchObject({ channels: 2, hasAlpha: true });
    expect(Array.from(back.data)).toEqual(Array.from(src));
  });

  it('16-bit RGBA PNG: colour at 8 bits for the model, 16-bit alpha and 16-bit output', async () => {
    const src = raw16(4);
    const img = await decodeImage(await png(src, 4, 'rgb16'), LIMIT);
    expect(img.depth).toBe(16);
    expect(img.alpha).toBeInstanceOf(Uint16Array);
    for (let i = 0; i < W * H; i++) {
      for (let c = 0; c < 3; c++) expect(img.rgb[i * 3 + c]).toBe(Math.round(src[i * 4 + c]! / 257));
      expect(img.alpha![i]).toBe(src[i * 4 + 3]);
    }
    const back = await samples(await roundTrip(img, 'png'));
    expect(back.meta).toMatchObject({ depth: 'ushort', channels: 4 });
    for (let i = 0; i < W * H; i++) {
      for (let c = 0; c < 3; c++) expect(back.data[i * 4 + c]).toBe(img.rgb[i * 3 + c]! * 257);
      expect(back.data[i * 4 + 3]).toBe(src[i * 4 + 3]);
    }
    // TIFF keeps 16 bits too; JPEG cannot and is written at 8.
    expect((await sharp(await roundTrip(img, 'tiff')).metadata()).depth).toBe('ushort');
    expect((await sharp(await roundTrip(img, 'jpeg')).metadata()).depth).toBe('uchar');
  });

  it('16-bit grayscale PNG stays 16-bit grayscale', async () => {
    const src = raw16(1);
    const img = await decodeImage(await png(src, 1, 'grey16'), LIMIT);
    expect(img).toMatchObject({ gray: true, depth: 16 });
    const back = await samples(await roundTrip(img, 'png'));
    expect(back.meta).toMatchObject({ channels: 1, depth: 'ushort', space: 'grey16' });
    for (let i = 0; i < W * H; i++) expect(back.data[i]).toBe(Math.round(src[i]! / 257) * 257);
  });

  it('palette PNG (with transparency) is expanded exactly', async () => {
    // Few colours so the palette is lossless.
    const colours = [
      [255, 0, 0, 255],
      [0, 128, 255, 128],
      [10, 200, 30, 0],
      [250, 250, 250, 255],
    ];
    const src = Uint8Array.from({ length: W * H * 4 }, (_, k) => colours[Math.floor(k / 4) % 4]![k % 4]!);
    const buf = await png(src, 4, 'srgb', { palette: true });
    expect((await sharp(buf).metadata()).isPalette).toBe(true);
    const img = await decodeImage(buf, LIMIT);
    for (let i = 0; i < W * H; i++) {
      const col = colours[i % 4]!;
      if (col[3] !== 0) for (let c = 0; c < 3; c++) expect(img.rgb[i * 3 + c]).toBe(col[c]);
      expect(img.alpha![i]).toBe(col[3]);
    }
    const back = await sharp(await roundTrip(img, 'png')).metadata();
    expect(back).toMatchObject({ isPalette: false, channels: 4 });
  });

  it('EXIF orientation 6 JPEG is rotated upright and the output orientation is reset', async () => {
    // Left half black, right half white; orientation 6 = rotate 90 degrees clockwise to display.
    const w = 32;
    const h = 16;
    const src = Uint8Array.from({ length: w * h * 3 }, (_, k) => (Math.floor(k / 3) % w < w / 2 ? 0 : 255));
    const jpg = await sharp(src, { raw: { width: w, height: h, channels: 3 } })
      .withMetadata({ orientation: 6 })
      .withExifMerge({ IFD0: { Copyright: 'alignvar test' } })
      .jpeg({ quality: 100 })
      .toBuffer();
    expect((await sharp(jpg).metadata()).orientation).toBe(6);
    const img = await decodeImage(jpg, LIMIT);
    expect([img.width, img.height]).toEqual([h, w]);
    // After the rotation the stored left (black) half is on top.
    expect(img.rgb[(2 * h + 8) * 3]).toBeLessThan(30);
    expect(img.rgb[((w - 3) * h + 8) * 3]).toBeGreaterThan(225);
    const out = await roundTrip(img, 'jpeg');
    const meta = await sharp(out).metadata();
    expect([meta.width, meta.height]).toEqual([h, w]);
    expect(meta.orientation ?? 1).toBe(1);
    expect(meta.exif?.includes('alignvar test')).toBe(true);
  });

  it('keeps the ICC profile and does not convert pixel values (PNG, JPEG, WebP, TIFF output)', async () => {
    const src = raw8(3);
    const p3 = await sharp(src, { raw: { width: W, height: H, channels: 3 } })
      .withIccProfile('p3')
      .withExifMerge({ IFD0: { Artist: 'icc test' } })
      .png()
      .toBuffer();
    const inMeta = await sharp(p3).metadata();
    expect(inMeta.icc?.length).toBeGreaterThan(100);
    const stored = await samples(p3);
    const img = await decodeImage(p3, LIMIT);
    expect(Array.from(img.rgb)).toEqual(Array.from(stored.data));
    for (const format of ['png', 'jpeg', 'webp', 'tiff'] as const) {
      const out = await roundTrip(img, format);
      const meta = await sharp(out).metadata();
      expect(meta.icc && Buffer.compare(meta.icc, inMeta.icc!), format).toBe(0);
      if (format !== 'tiff') expect(meta.exif?.includes('icc test'), format).toBe(true);
      if (format === 'png') expect(Array.from((await samples(out)).data)).toEqual(Array.from(stored.data));
    }
  });

  it('converts CMYK to sRGB', async () => {
    const cmyk = await sharp(raw8(3), { raw: { width: W, height: H, channels: 3 } })
      .toColourspace('cmyk')
      .jpeg()
      .toBuffer();
    expect((await sharp(cmyk).metadata()).space).toBe('cmyk');
    const img = await decodeImage(cmyk, LIMIT);
    expect(img).toMatchObject({ width: W, height: H, gray: false, depth: 8 });
    const back = await sharp(await roundTrip(img, 'jpeg')).metadata();
    expect(back.space).toBe('srgb');
  });

  it('decodes a sharp instance with its own operations, without auto-orienting it', async () => {
    const buf = await png(raw8(3), 3, 'srgb');
    const img = await decodeImage(sharp(buf).extract({ left: 1, top: 1, width: 4, height: 3 }), LIMIT);
    expect([img.width, img.height, img.name]).toEqual([4, 3, '<sharp instance>']);
    expect(img.rgb[0]).toBe(sample8(W + 1, 0));
  });
});

describe('errors', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'alignvar-io-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function problem(input: string | Buffer, options = LIMIT): Promise<ImageError> {
    try {
      await decodeImage(input, options);
    } catch (err) {
      expect(err).toBeInstanceOf(ImageError);
      return err as ImageError;
    }
    throw new Error('decodeImage did not throw');
  }

  it('names a missing file', async () => {
    const path = join(dir, 'nope.png');
    const err = await problem(path);
    expect(err.message).toBe(`Cannot upscale ${path}: file not found`);
    expect(err.code).toBe('ERR_INVALID_IMAGE');
    expect(err.file).toBe(path);
  });

  it('names an unsupported format', async () => {
    const path = join(dir, 'text.png');
    await writeFile(path, 'this is not an image');
    expect((await problem(path)).message).toBe(`Cannot upscale ${path}: unsupported or unrecognised image format`);
    expect((await problem(Buffer.from('GIF89a nope'))).message).toMatch(/^Cannot upscale <buffer>: /);
  });

  it('names a truncated file, and leaves it untouched', async () => {
    for (const [ext, buf] of [
      [
        'jpg',
        await sharp(raw8(3, 64, 64), { raw: { width: 64, height: 64, channels: 3 } })
          .jpeg()
          .toBuffer(),
      ],
      [
        'png',
        await sharp(raw8(3, 64, 64), { raw: { width: 64, height: 64, channels: 3 } })
          .png()
          .toBuffer(),
      ],
    ] as const) {
      const path = join(dir, `cut.${ext}`);
      const cut = buf.subarray(0, Math.floor(buf.length * 0.6));
      await writeFile(path, cut);
      const err = await problem(path);
      expect(err.message).toMatch(
        new RegExp(
          `^Cannot upscale ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: corrupt or truncated ${ext === 'jpg' ? 'JPEG' : 'PNG'} data$`,
        ),
      );
      expect(Buffer.compare(await readFile(path), cut)).toBe(0);
    }
  });

  it('rejects images whose output would exceed the pixel limit, before decoding', async () => {
    const buf = await png(raw8(3), 3, 'srgb');
    const err = await problem(buf, { maxOutputPixels: 500, scale: 4 });
    expect(err.message).toBe(
      'Cannot upscale <buffer>: 7x5 pixels would give a 28x20 output (560 pixels), more than the limit of 500 pixels (maxOutputPixels)',
    );
  });

  it('refuses outputs larger than the format allows', async () => {
    const pixels = composePixels(new Uint8Array(16384 * 3), 16384, 1, undefined, false, 8);
    await expect(encodeImage(pixels, 'webp', { name: 'big.png' })).rejects.toThrow(
      'Cannot upscale big.png: the 16384x1 output is too large for WEBP (at most 16383 pixels a side); choose another format',
    );
  });
});

describe('helpers', () => {
  it('maps input formats to output formats', () => {
    expect(['jpeg', 'png', 'webp', 'tiff', 'gif', 'svg', 'jp2'].map((f) => defaultOutputFormat(f))).toEqual([
      'jpeg',
      'png',
      'webp',
      'tiff',
      'gif',
      'png',
      'png',
    ]);
    expect(defaultOutputFormat('heif', 'av1')).toBe('avif');
    expect(defaultOutputFormat('heif', 'hevc')).toBe('png');
  });

  it('composes gray (Rec. 601 luma), 16-bit and alpha layouts', () => {
    const rgb = Uint8Array.from([255, 0, 0, 0, 255, 0, 10, 20, 30]);
    expect(Array.from(composePixels(rgb, 3, 1, undefined, true, 8).data)).toEqual([76, 150, 18]);
    const c = composePixels(rgb, 3, 1, Uint16Array.from([1, 2, 65535]), false, 16);
    expect(c).toMatchObject({ channels: 4, depth: 16 });
    expect(Array.from(c.data)).toEqual([65535, 0, 0, 1, 0, 65535, 0, 2, 2570, 5140, 7710, 65535]);
  });

  it('copies metadata chunks after IHDR, replacing existing ones', async () => {
    const carrier = await sharp(raw8(3), { raw: { width: W, height: H, channels: 3 } })
      .withIccProfile('p3')
      .withExifMerge({ IFD0: { Software: 'carrier' } })
      .png()
      .toBuffer();
    const target = await png(raw8(3), 3, 'srgb');
    const out = transplantPngMetadata(target, carrier);
    const types: string[] = [];
    for (let p = 8; p < out.length; p += 12 + out.readUInt32BE(p)) types.push(out.toString('latin1', p + 4, p + 8));
    expect(types[0]).toBe('IHDR');
    expect(types.slice(1, 4).sort()).toEqual(['eXIf', 'iCCP', 'pHYs']);
    expect(types.filter((t) => t === 'pHYs')).toHaveLength(1);
    expect(types[types.length - 1]).toBe('IEND');
    const meta = await sharp(out).metadata();
    expect(meta.exif?.includes('carrier')).toBe(true);
    expect(Buffer.compare(meta.icc!, (await sharp(carrier).metadata()).icc!)).toBe(0);
  });
});
