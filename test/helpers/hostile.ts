/**
 * A corpus of malformed and hostile images, made here (nothing is downloaded): truncated files
 * of every input format at several offsets, empty and non-image files with image names,
 * decompression bombs (tiny files declaring huge sizes), a complete 20000x20000 image, and
 * unusual but legitimate inputs (CMYK, animation, multi-page, 1x1, 1xN, 16-bit, palette, ...).
 *
 * Each case says what the upscaler must do with it:
 * - `'error'`: reject it with an `ImageError` naming the file; write nothing.
 * - `'ok'`: upscale it x4 (first frame/page of animations and multi-page files; CMYK converted
 *   to sRGB). 1x1 and 1xN images are legitimate: their tile is padded by reflection.
 *
 * The same corpus is used through the API, the CLI and the HTTP server.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';

import sharp, { type Sharp } from 'sharp';

/** One file of the corpus. */
export interface HostileCase {
  /** Short unique name (also the file's base name, before its extension). */
  name: string;
  /** Absolute path of the file. */
  file: string;
  /** What the upscaler must do with it. */
  expect: 'error' | 'ok';
}

/** A small RGB test pattern (a gradient with a square), so that frames and pages differ. */
async function pattern(w: number, h: number, shift = 0): Promise<Sharp> {
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      const inSquare = x > w / 4 && x < w / 2 && y > h / 4 && y < h / 2;
      raw[i] = ((x * 255) / Math.max(1, w - 1) + shift) & 255;
      raw[i + 1] = (y * 255) / Math.max(1, h - 1);
      raw[i + 2] = inSquare ? 255 : 40;
    }
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } });
}

/** One PNG chunk with its length and CRC. */
function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG from its IHDR fields and (already filtered) scanline bytes. */
function png(width: number, height: number, bitDepth: number, colourType: number, idat: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colourType;
  return Buffer.concat([
    PNG_SIGNATURE,
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', idat),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A minimal little-endian TIFF header + one IFD declaring `width` x `height` 8-bit RGB. */
function tiffHeader(width: number, height: number): Buffer {
  const entries: Array<[number, number, number, number]> = [
    // tag, type (3 SHORT, 4 LONG), count, value
    [256, 4, 1, width],
    [257, 4, 1, height],
    [258, 3, 1, 8],
    [259, 3, 1, 1],
    [262, 3, 1, 2],
    [273, 4, 1, 8 + 2 + 12 * 10 + 4],
    [277, 3, 1, 3],
    [278, 4, 1, height],
    [279, 4, 1, 16],
    [284, 3, 1, 1],
  ];
  const b = Buffer.alloc(8 + 2 + entries.length * 12 + 4 + 16);
  b.write('II*\0', 0, 'latin1');
  b.writeUInt32LE(8, 4);
  b.writeUInt16LE(entries.length, 8);
  entries.forEach(([tag, type, count, value], k) => {
    const o = 10 + k * 12;
    b.writeUInt16LE(tag, o);
    b.writeUInt16LE(type, o + 2);
    b.writeUInt32LE(count, o + 4);
    if (type === 3) b.writeUInt16LE(value, o + 8);
    else b.writeUInt32LE(value, o + 8);
  });
  return b;
}

/** Replaces the width and height of the first SOF marker of a JPEG. */
function patchJpegSize(jpeg: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(jpeg);
  let p = 2;
  while (p + 4 < out.length) {
    if (out[p] !== 0xff) throw new Error('bad JPEG marker walk');
    const marker = out[p + 1]!;
    const len = out.readUInt16BE(p + 2);
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      out.writeUInt16BE(height, p + 5);
      out.writeUInt16BE(width, p + 7);
      return out;
    }
    p += 2 + len;
  }
  throw new Error('no SOF marker');
}

/** Sets the logical screen and the first frame of a GIF to `width` x `height`. */
function patchGifSize(gif: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(gif);
  out.writeUInt16LE(width, 6);
  out.writeUInt16LE(height, 8);
  let p = 13 + (out[10]! & 0x80 ? 3 * 2 ** ((out[10]! & 7) + 1) : 0);
  while (p < out.length && out[p] === 0x21) {
    p += 2; // extension introducer and label, then sub-blocks
    while (out[p]! !== 0) p += out[p]! + 1;
    p += 1;
  }
  if (out[p] !== 0x2c) throw new Error('no GIF image descriptor');
  out.writeUInt16LE(width, p + 5);
  out.writeUInt16LE(height, p + 7);
  return out;
}

/**
 * Writes the hostile corpus into `dir` (created if missing).
 *
 * @param dir - An empty folder.
 * @returns The cases, in a fixed order.
 */
export async function makeHostileCorpus(dir: string): Promise<HostileCase[]> {
  await mkdir(dir, { recursive: true });
  const cases: HostileCase[] = [];
  const add = async (name: string, ext: string, data: Buffer | string, expect: 'error' | 'ok'): Promise<void> => {
    const file = join(dir, `${name}.${ext}`);
    await writeFile(file, data);
    cases.push({ name, file, expect });
  };

  const goodPng = await (await pattern(64, 48)).png().toBuffer();
  const goodJpeg = await (await pattern(64, 48)).jpeg({ quality: 90 }).toBuffer();
  const goodWebp = await (await pattern(64, 48)).webp({ quality: 90 }).toBuffer();
  const goodGif = await (await pattern(64, 48)).gif().toBuffer();
  const goodTiff = await (await pattern(64, 48)).tiff({ compression: 'none' }).toBuffer();
  const goodAvif = await (await pattern(64, 48)).avif({ quality: 60, effort: 0 }).toBuffer();

  // Truncated files: the signature only, inside the header, in the middle of the pixel data,
  // and without the last bytes (the end marker and the end of the data).
  const cut = async (name: string, ext: string, good: Buffer, at: number[]): Promise<void> => {
    for (const n of at) await add(`${name}-cut${n}`, ext, good.subarray(0, n), 'error');
  };
  await cut('png', 'png', goodPng, [8, 30, Math.floor(goodPng.length / 2), goodPng.length - 20]);
  await cut('jpeg', 'jpg', goodJpeg, [2, 100, Math.floor(goodJpeg.length / 2), goodJpeg.length - 40]);
  await cut('webp', 'webp', goodWebp, [12, 30, Math.floor(goodWebp.length / 2)]);
  await cut('gif', 'gif', goodGif, [6, 13, Math.floor(goodGif.length / 2)]);
  await cut('tiff', 'tif', goodTiff, [8, Math.floor(goodTiff.length / 2)]);
  await cut('avif', 'avif', goodAvif, [40, Math.floor(goodAvif.length / 2)]);

  // Not images, with image names.
  await add('empty', 'png', Buffer.alloc(0), 'error');
  await add('empty', 'jpg', Buffer.alloc(0), 'error');
  await add('text-named-png', 'png', 'This is not an image.\n', 'error');
  await add('html-named-jpg', 'jpg', '<!doctype html><title>x</title><p>hello</p>\n', 'error');
  await add('zeros-named-webp', 'webp', Buffer.alloc(4096), 'error');
  await add(
    'png-signature-then-garbage',
    'png',
    Buffer.concat([PNG_SIGNATURE, Buffer.from('garbage'.repeat(50))]),
    'error',
  );

  // Malformed structure.
  const badCrc = Buffer.from(goodPng);
  badCrc[29] = badCrc[29]! ^ 0xff; // IHDR CRC
  await add('png-bad-ihdr-crc', 'png', badCrc, 'error');
  await add('png-zero-width', 'png', png(0, 16, 8, 2, deflateSync(Buffer.alloc(16))), 'error');
  await add('png-garbage-idat', 'png', png(32, 32, 8, 2, Buffer.from('not zlib data at all'.repeat(10))), 'error');
  await add('png-short-idat', 'png', png(32, 32, 8, 2, deflateSync(Buffer.alloc(100))), 'error');
  await add('jpeg-zero-size', 'jpg', patchJpegSize(goodJpeg, 0, 0), 'error');

  // Decompression bombs: tiny files declaring huge sizes. Refused from the header.
  await add('bomb-png-100000x100000', 'png', png(100000, 100000, 8, 2, deflateSync(Buffer.alloc(1000))), 'error');
  await add('bomb-jpeg-65500x65500', 'jpg', patchJpegSize(goodJpeg, 65500, 65500), 'error');
  const gifBomb = patchGifSize(goodGif, 65535, 65535);
  await add('bomb-gif-65535x65535', 'gif', gifBomb, 'error');
  const vp8x = Buffer.alloc(30);
  vp8x.write('RIFF', 0, 'latin1');
  vp8x.writeUInt32LE(22, 4);
  vp8x.write('WEBPVP8X', 8, 'latin1');
  vp8x.writeUInt32LE(10, 16);
  vp8x.writeUIntLE(16383, 24, 3); // canvas width - 1
  vp8x.writeUIntLE(16383, 27, 3); // canvas height - 1
  await add('bomb-webp-16384x16384', 'webp', vp8x, 'error');
  await add('bomb-tiff-100000x100000', 'tif', tiffHeader(100000, 100000), 'error');
  // A complete 20000x20000 image (1-bit gray, about 50 kB): refused before its pixels are decoded.
  const rowBytes = 1 + Math.ceil(20000 / 8);
  await add(
    'huge-png-20000x20000',
    'png',
    png(20000, 20000, 1, 0, deflateSync(Buffer.alloc(rowBytes * 20000))),
    'error',
  );

  // Vector and container formats the upscaler does not take.
  await add(
    'vector',
    'svg',
    '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect width="64" height="48" fill="red"/></svg>\n',
    'error',
  );
  await add(
    'svg-entity-bomb',
    'svg',
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">' +
      '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">' +
      '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">]>' +
      '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><text>&f;</text></svg>\n',
    'error',
  );
  await add(
    'svg-huge',
    'svg',
    '<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"><rect width="10" height="10"/></svg>\n',
    'error',
  );
  // libvips' own format (sharp reads it from files): a valid 8x8 RGB image, not a photo format.
  const vips = Buffer.alloc(64 + 8 * 8 * 3, 90);
  Buffer.from([0x08, 0xf2, 0xa6, 0xb6]).copy(vips, 0);
  [8, 8, 3, 0, 0, 0, 22].forEach((v, k) => vips.writeInt32LE(v, 4 + 4 * k)); // w, h, bands, -, uchar, none, sRGB
  vips.writeFloatLE(1, 32);
  vips.writeFloatLE(1, 36);
  vips.fill(0, 40, 64);
  await add('vips-native', 'v', vips, 'error');

  // Unusual but legitimate inputs.
  await add('cmyk', 'jpg', await (await pattern(48, 32)).toColourspace('cmyk').jpeg().toBuffer(), 'ok');
  const frames = await Promise.all([0, 80, 160].map(async (s) => (await pattern(24, 16, s)).png().toBuffer()));
  await add(
    'animated',
    'gif',
    await sharp(frames, { join: { animated: true } })
      .gif({ delay: 100 })
      .toBuffer(),
    'ok',
  );
  await add(
    'multipage',
    'tif',
    await sharp(frames, { join: { animated: true } })
      .tiff()
      .toBuffer(),
    'ok',
  );
  await add('pixel-1x1', 'png', await (await pattern(1, 1)).png().toBuffer(), 'ok');
  await add('column-1x37', 'png', await (await pattern(1, 37)).png().toBuffer(), 'ok');
  await add('row-53x1', 'jpg', await (await pattern(53, 1)).jpeg().toBuffer(), 'ok');
  await add(
    'gray16-alpha',
    'png',
    await sharp(Buffer.from(new Uint16Array(20 * 12 * 2).map((_, i) => (i * 997) & 0xffff).buffer), {
      raw: { width: 20, height: 12, channels: 2, premultiplied: false },
    })
      .toColourspace('grey16')
      .png()
      .toBuffer(),
    'ok',
  );
  await add(
    'palette-trns',
    'png',
    await (await pattern(30, 20)).ensureAlpha(0.5).png({ palette: true }).toBuffer(),
    'ok',
  );
  await add('png-named-jpg', 'jpg', await (await pattern(20, 20)).png().toBuffer(), 'ok');
  await add(
    'exif-rotated',
    'jpg',
    await (await pattern(30, 20)).jpeg().withMetadata({ orientation: 6 }).toBuffer(),
    'ok',
  );
  await add('avif', 'avif', goodAvif, 'ok');
  return cases;
}
