/**
 * Image decoding and encoding with sharp.
 *
 * Decoding turns any input sharp reads into what the model needs: 8-bit interleaved RGB in the
 * image's display orientation, plus the alpha plane (kept aside at the source depth) and what is
 * needed to write the result back in the input's layout:
 *
 * - EXIF orientation is applied (`autoOrient`) for file and buffer inputs; a sharp instance is
 *   used with its own settings and operations.
 * - Grayscale images are processed as RGB and converted back to one channel on output
 *   (Rec. 601 luma).
 * - 16-bit images (PNG, TIFF) go through the model at 8 bits; alpha is resampled at 16 bits and
 *   the output keeps 16 bits per sample where the format supports it (PNG, TIFF).
 * - Palette images are expanded; the output is truecolour.
 * - Pixel values are not colour-converted: an embedded ICC profile (RGB or gray) is kept and
 *   attached to the output. Other colour spaces (CMYK, Lab, ...) are converted to sRGB.
 * - EXIF (with the orientation reset), XMP and density are kept. They travel in a tiny PNG
 *   written by sharp (`keepMetadata`), whose metadata chunks are copied into the output PNG;
 *   other output formats are then written from that PNG with `keepMetadata`. sharp has no API to
 *   attach a profile without converting pixels, and this keeps the bytes exactly as decoded.
 * - Multi-page images (GIF, TIFF, WebP animations) contribute their first page only.
 * - Only raster photo formats are read: JPEG, PNG, WebP, GIF, TIFF and HEIF/AVIF. SVG (a vector
 *   format that would be rasterised at an arbitrary size, with an XML parser exposed to the
 *   input) and libvips' own `.v` format are refused from their header.
 * - Size limits are checked on the header, before any pixel is decoded (decompression bombs).
 *
 * Every failure is an {@link ImageError} naming the input and the problem.
 */
import { open } from 'node:fs/promises';

import sharp, { type Metadata, type OutputInfo, type Sharp, type SharpOptions } from 'sharp';

import { AlignvarError } from '../errors.js';
import type { OutputFormat } from '../options.js';
import { SNIFF_BYTES, sniffFormat } from './sniff.js';

/** What the upscaler accepts as an image: a file path, encoded bytes, or a sharp instance. */
export type ImageInput = string | Buffer | Uint8Array | Sharp;

/**
 * Why an {@link ImageError} was raised, for callers that map errors to their own statuses (the
 * HTTP server answers 415, 413 and 400): `'unsupported'` an unrecognised or unsupported format,
 * `'too-large'` dimensions beyond a limit, `'not-found'` a missing file, `'corrupt'` anything
 * else (truncated or malformed data, failed encoding).
 */
export type ImageErrorReason = 'unsupported' | 'too-large' | 'not-found' | 'corrupt';

/** An image that cannot be read, is too large, or cannot be written. `code` `'ERR_INVALID_IMAGE'`. */
export class ImageError extends AlignvarError {
  /** The input as named in messages: the path, `<buffer>` or `<sharp instance>`. */
  readonly file: string;
  /** What is wrong, without the file name. */
  readonly problem: string;
  /** The kind of problem (see {@link ImageErrorReason}); default `'corrupt'`. */
  readonly reason: ImageErrorReason;

  /**
   * @param file - The input's name.
   * @param problem - What is wrong.
   * @param options - `cause`: the underlying error; `reason`: the kind of problem (default `'corrupt'`).
   */
  constructor(file: string, problem: string, options?: ErrorOptions & { reason?: ImageErrorReason | undefined }) {
    super(`Cannot upscale ${file}: ${problem}`, 'ERR_INVALID_IMAGE', options);
    this.file = file;
    this.problem = problem;
    this.reason = options?.reason ?? 'corrupt';
  }
}
Object.defineProperty(ImageError.prototype, 'name', { value: 'ImageError', writable: true, configurable: true });

/** A decoded input image. */
export interface DecodedImage {
  /** Width in pixels (display orientation). */
  width: number;
  /** Height in pixels. */
  height: number;
  /** 8-bit RGB, interleaved, `width * height * 3` bytes. */
  rgb: Uint8Array;
  /** Alpha plane at the source depth (`width * height` values), or undefined. */
  alpha: Uint8Array | Uint16Array | undefined;
  /** Whether the source is grayscale (output gets 1 channel, or 2 with alpha). */
  gray: boolean;
  /** Bits per sample of the source: 8, or 16 for 16-bit PNG/TIFF. */
  depth: 8 | 16;
  /** sharp's name of the input format, e.g. `'png'`, `'jpeg'`, `'heif'`. */
  format: string;
  /** Compression of HEIF input (`'av1'` for AVIF), if any. */
  compression: string | undefined;
  /** A PNG carrying the input's metadata chunks (ICC, EXIF, XMP, density), if it has any. */
  metadata: Buffer | undefined;
  /** The input's name for messages. */
  name: string;
}

/** Pixels to encode: interleaved samples of `channels` per pixel. */
export interface PixelImage {
  /** `width * height * channels` samples: bytes, or 16-bit samples when `depth` is 16. */
  data: Uint8Array | Uint16Array;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA. */
  channels: 1 | 2 | 3 | 4;
  /** Bits per sample. */
  depth: 8 | 16;
}

/** Options of {@link decodeImage}. */
export interface DecodeOptions {
  /** Largest accepted output (input pixels x scale^2). */
  maxOutputPixels: number;
  /** Enlargement factor the output will have. */
  scale: number;
  /** Name used in error messages; default the path, `<buffer>` or `<sharp instance>`. */
  name?: string | undefined;
}

/** Options of {@link encodeImage}. */
export interface EncodeOptions {
  /** Quality for JPEG, WebP and AVIF (1-100); default 95, 95, 80. */
  quality?: number | undefined;
  /** Metadata carrier from {@link DecodedImage.metadata}. */
  metadata?: Buffer | undefined;
  /** Name used in error messages. */
  name?: string | undefined;
}

/** Largest output side each format can store (formats not listed: no practical limit). */
export const FORMAT_MAX_SIDE: Readonly<Partial<Record<OutputFormat, number>>> = Object.freeze({
  webp: 16383,
  jpeg: 65535,
  gif: 65535,
});

/** Colour spaces whose pixels (and ICC profile) are kept as they are. */
const KEPT_SPACES = new Set(['srgb', 'rgb16', 'b-w', 'grey16']);

/** PNG chunks carrying metadata, copied from the carrier into the output. */
const METADATA_CHUNKS = new Set(['iCCP', 'sRGB', 'gAMA', 'cHRM', 'eXIf', 'iTXt', 'tEXt', 'zTXt', 'pHYs', 'tIME']);

function isSharp(value: unknown): value is Sharp {
  // sharp instances are Duplex streams whose `clone` and `metadata` are functions; there is no
  // exported class to test with instanceof across copies of the module.
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { clone?: unknown }).clone === 'function' &&
    typeof (value as { metadata?: unknown }).metadata === 'function' &&
    typeof (value as { raw?: unknown }).raw === 'function'
  );
}

/** Whether `value` is an accepted {@link ImageInput}. */
export function isImageInput(value: unknown): value is ImageInput {
  return (typeof value === 'string' && value.length > 0) || value instanceof Uint8Array || isSharp(value);
}

/** The default name of an input in messages. */
export function inputName(input: ImageInput): string {
  if (typeof input === 'string') return input;
  return input instanceof Uint8Array ? '<buffer>' : '<sharp instance>';
}

/** Turns a sharp/libvips error into a readable problem description. */
function describeDecodeError(err: unknown, format?: string): string {
  const msg = err instanceof Error ? err.message : String(err);
  if (/Input file is missing/i.test(msg)) return 'file not found';
  if (/unsupported image format/i.test(msg)) return 'unsupported or unrecognised image format';
  if (/exceeds pixel limit/i.test(msg)) return 'image exceeds the pixel limit';
  // libvips' own text stays on `cause`, out of the message: libvips keeps one error log per
  // process, so while other images decode at the same time that text can be empty ("Unknown
  // error") or another image's (lovell/sharp#902, libvips#707), and a server would show one
  // client another client's failure.
  const what = format === undefined ? 'image' : format === 'heif' ? 'AVIF/HEIF' : format.toUpperCase();
  return `corrupt or truncated ${what} data`;
}

/** The {@link ImageErrorReason} of a sharp/libvips decoding error. */
function decodeErrorReason(err: unknown): ImageErrorReason {
  const msg = err instanceof Error ? err.message : String(err);
  if (/Input file is missing/i.test(msg)) return 'not-found';
  if (/unsupported image format/i.test(msg)) return 'unsupported';
  if (/exceeds pixel limit/i.test(msg)) return 'too-large';
  return 'corrupt';
}

/** Formats (sharp's names) that {@link decodeImage} reads. */
const READ_FORMATS = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif']);

/** The first bytes of a path or buffer input, for {@link sniffFormat}; empty when unreadable. */
async function inputHead(input: ImageInput): Promise<Uint8Array> {
  if (input instanceof Uint8Array) return input.subarray(0, SNIFF_BYTES);
  if (typeof input !== 'string') return new Uint8Array(0);
  try {
    const fh = await open(input, 'r');
    try {
      const buf = Buffer.alloc(SNIFF_BYTES);
      const { bytesRead } = await fh.read(buf, 0, SNIFF_BYTES, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch {
    return new Uint8Array(0);
  }
}

/**
 * The error for a failed header read. libvips calls a file it cannot parse "unsupported" even
 * when it starts like a PNG, TIFF, ...: such a file is corrupt or truncated, not of an
 * unsupported format.
 */
async function headerError(input: ImageInput, name: string, err: unknown): Promise<ImageError> {
  const reason = decodeErrorReason(err);
  if (reason === 'unsupported') {
    const known = sniffFormat(await inputHead(input));
    if (known !== undefined) {
      return new ImageError(
        name,
        `corrupt or truncated ${known.toUpperCase()} data (it starts like ${known.toUpperCase()} but cannot be read)`,
        {
          cause: err,
          reason: 'corrupt',
        },
      );
    }
  }
  return new ImageError(name, describeDecodeError(err), { cause: err, reason });
}

/**
 * Decodes an image for upscaling.
 *
 * @param input - Path, encoded bytes or sharp instance. Files and buffers are never modified.
 * @param options - Size limit, scale and name.
 * @throws {ImageError} When the input is missing, unreadable, corrupt, truncated, of an
 *   unsupported format, or too large.
 */
export async function decodeImage(input: ImageInput, options: DecodeOptions): Promise<DecodedImage> {
  const name = options.name ?? inputName(input);
  const fromInstance = isSharp(input);
  const limitInputPixels = Math.max(1, Math.floor(options.maxOutputPixels / (options.scale * options.scale)));
  const source =
    input instanceof Uint8Array && !Buffer.isBuffer(input)
      ? Buffer.from(input.buffer, input.byteOffset, input.byteLength)
      : input;
  // The pixel limit guards decoding; metadata is read without it so that our own, more
  // informative size check below reports oversized images.
  const base = (limit = true): Sharp => {
    if (isSharp(source)) return source.clone();
    const ctor: SharpOptions = {
      autoOrient: true,
      failOn: 'error',
      limitInputPixels: limit ? limitInputPixels : false,
    };
    return sharp(source as string | Buffer, ctor);
  };

  let meta: Metadata;
  try {
    meta = await base(false).metadata();
  } catch (err) {
    throw await headerError(input, name, err);
  }
  // Instances may come from raw pixels or a pipeline: their format is the caller's business.
  if (!fromInstance && !READ_FORMATS.has(meta.format)) {
    const why =
      meta.format === 'svg'
        ? 'it is a vector format; render it to PNG at the size you want and upscale that'
        : 'only JPEG, PNG, WebP, GIF, TIFF and HEIF/AVIF images are read';
    throw new ImageError(name, `${String(meta.format).toUpperCase()} input is not supported: ${why}`, {
      reason: 'unsupported',
    });
  }
  const checkSize = (w: number, h: number): void => {
    const out = w * h * options.scale * options.scale;
    if (out > options.maxOutputPixels) {
      throw new ImageError(
        name,
        `${w}x${h} pixels would give a ${w * options.scale}x${h * options.scale} output (${out} pixels), ` +
          `more than the limit of ${options.maxOutputPixels} pixels (maxOutputPixels)`,
        { reason: 'too-large' },
      );
    }
  };
  // Instances may crop or resize: their true size is known after decoding.
  if (!fromInstance) checkSize(meta.width, meta.height);

  const keepIcc = KEPT_SPACES.has(meta.space);
  const depth: 8 | 16 = keepIcc && meta.depth === 'ushort' ? 16 : 8;
  const gray = meta.space === 'b-w' || meta.space === 'grey16';

  let data: Buffer;
  let info: OutputInfo;
  try {
    let p = base();
    if (keepIcc) p = p.keepIccProfile();
    p = depth === 16 ? p.toColourspace('rgb16').raw({ depth: 'ushort' }) : p.toColourspace('srgb').raw();
    ({ data, info } = await p.toBuffer({ resolveWithObject: true }));
  } catch (err) {
    throw new ImageError(name, describeDecodeError(err, meta.format), { cause: err, reason: decodeErrorReason(err) });
  }
  if (fromInstance) checkSize(info.width, info.height);
  if (info.channels !== 3 && info.channels !== 4) {
    throw new ImageError(name, `decoded to ${info.channels} channels, expected RGB or RGBA`);
  }
  const { width, height, channels } = info;
  const n = width * height;
  const samples = depth === 16 ? new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2) : data;
  const rgb = new Uint8Array(n * 3);
  const alpha = channels === 4 ? (depth === 16 ? new Uint16Array(n) : new Uint8Array(n)) : undefined;
  const toByte = depth === 16 ? (v: number) => Math.round(v / 257) : (v: number) => v;
  for (let i = 0; i < n; i++) {
    const s = i * channels;
    rgb[i * 3] = toByte(samples[s]!);
    rgb[i * 3 + 1] = toByte(samples[s + 1]!);
    rgb[i * 3 + 2] = toByte(samples[s + 2]!);
    if (alpha) alpha[i] = samples[s + 3]!;
  }

  let metadata: Buffer | undefined;
  if (meta.icc !== undefined || meta.exif !== undefined || meta.xmp !== undefined || meta.density !== undefined) {
    try {
      let p = base();
      p = keepIcc ? p.keepMetadata() : p.keepExif().keepXmp();
      // A 1x1 carrier is enough for the metadata; instances keep their own geometry.
      if (!fromInstance) p = p.resize(1, 1, { fit: 'fill' });
      metadata = await p.png({ compressionLevel: 0 }).toBuffer();
    } catch (err) {
      throw new ImageError(name, `cannot read its metadata (${err instanceof Error ? err.message : String(err)})`, {
        cause: err,
      });
    }
  }
  return {
    width,
    height,
    rgb,
    alpha,
    gray,
    depth,
    format: meta.format,
    compression: meta.compression,
    metadata,
    name,
  };
}

/**
 * The output format for an input format: the same when the upscaler writes it (HEIF with AV1
 * compression gives AVIF), otherwise PNG.
 *
 * @param format - sharp's name of the input format.
 * @param compression - HEIF compression, if any.
 */
export function defaultOutputFormat(format: string, compression?: string): OutputFormat {
  switch (format) {
    case 'jpeg':
    case 'png':
    case 'webp':
    case 'tiff':
    case 'gif':
      return format;
    case 'heif':
      return compression === 'av1' ? 'avif' : 'png';
    default:
      return 'png';
  }
}

/**
 * Assembles the output pixels in the input's layout: grayscale back to one channel (Rec. 601
 * luma, rounded), 16-bit sources widened to 16 bits (`v * 257`), alpha re-attached.
 *
 * @param rgb - Upscaled 8-bit RGB, `width * height * 3` bytes.
 * @param width - Output width.
 * @param height - Output height.
 * @param alpha - Upscaled alpha (`width * height` values at the source depth), or undefined.
 * @param gray - Whether to write one colour channel.
 * @param depth - Bits per sample to write.
 */
export function composePixels(
  rgb: Uint8Array,
  width: number,
  height: number,
  alpha: Uint8Array | Uint16Array | undefined,
  gray: boolean,
  depth: 8 | 16,
): PixelImage {
  const n = width * height;
  const colour = gray ? 1 : 3;
  const channels = (colour + (alpha ? 1 : 0)) as 1 | 2 | 3 | 4;
  const data = depth === 16 ? new Uint16Array(n * channels) : new Uint8Array(n * channels);
  const widen = depth === 16 ? 257 : 1;
  for (let i = 0; i < n; i++) {
    const d = i * channels;
    const r = rgb[i * 3]!;
    const g = rgb[i * 3 + 1]!;
    const b = rgb[i * 3 + 2]!;
    if (gray) {
      data[d] = Math.round(0.299 * r + 0.587 * g + 0.114 * b) * widen;
    } else {
      data[d] = r * widen;
      data[d + 1] = g * widen;
      data[d + 2] = b * widen;
    }
    if (alpha) data[d + colour] = alpha[i]!;
  }
  return { data, width, height, channels, depth };
}

interface PngChunk {
  type: string;
  start: number;
  end: number;
}

/** Lists the chunks of a PNG (the 8-byte signature skipped). */
function pngChunks(png: Buffer): PngChunk[] {
  const chunks: PngChunk[] = [];
  let p = 8;
  while (p + 12 <= png.length) {
    const len = png.readUInt32BE(p);
    const end = p + 12 + len;
    if (end > png.length) throw new Error('truncated PNG chunk');
    chunks.push({ type: png.toString('latin1', p + 4, p + 8), start: p, end });
    p = end;
  }
  return chunks;
}

/**
 * Copies the metadata chunks of `carrier` (see {@link METADATA_CHUNKS}) into `png`, right after
 * its IHDR, replacing chunks of the same kinds. Chunks are copied byte for byte (CRC included).
 *
 * @param png - A PNG written by sharp.
 * @param carrier - A PNG whose metadata to copy.
 * @returns A new PNG.
 */
export function transplantPngMetadata(png: Buffer, carrier: Buffer): Buffer {
  const keep = pngChunks(carrier).filter((c) => METADATA_CHUNKS.has(c.type));
  const parts: Buffer[] = [png.subarray(0, 8)];
  for (const c of pngChunks(png)) {
    if (METADATA_CHUNKS.has(c.type)) continue;
    parts.push(png.subarray(c.start, c.end));
    if (c.type === 'IHDR') for (const k of keep) parts.push(carrier.subarray(k.start, k.end));
  }
  return Buffer.concat(parts);
}

/**
 * Encodes pixels in a format, keeping the input's metadata when a carrier is given.
 *
 * JPEG has no alpha: sharp drops it. WebP, JPEG, GIF and AVIF store 8 bits per sample: 16-bit
 * pixels are reduced. GIF output is quantised to a palette by sharp.
 *
 * @param image - The pixels.
 * @param format - Output format.
 * @param options - Quality, metadata carrier and name for messages.
 * @throws {ImageError} When the encoder fails (e.g. a dimension beyond the format's limit).
 */
export async function encodeImage(
  image: PixelImage,
  format: OutputFormat,
  options: EncodeOptions = {},
): Promise<Buffer> {
  const name = options.name ?? '<output>';
  const maxSide = FORMAT_MAX_SIDE[format];
  if (maxSide !== undefined && (image.width > maxSide || image.height > maxSide)) {
    throw new ImageError(
      name,
      `the ${image.width}x${image.height} output is too large for ${format.toUpperCase()} (at most ${maxSide} pixels a side); choose another format`,
    );
  }
  try {
    const space = image.channels <= 2 ? (image.depth === 16 ? 'grey16' : 'b-w') : image.depth === 16 ? 'rgb16' : 'srgb';
    const raw = { width: image.width, height: image.height, channels: image.channels };
    let png: Buffer = await sharp(image.data, { raw, limitInputPixels: false })
      .toColourspace(space)
      .png({ compressionLevel: format === 'png' ? 6 : 0 })
      .toBuffer();
    if (options.metadata !== undefined) png = transplantPngMetadata(png, options.metadata);
    if (format === 'png') return png;
    const out = sharp(png, { limitInputPixels: false }).keepMetadata().toColourspace(space);
    switch (format) {
      case 'jpeg':
        return await out.jpeg({ quality: options.quality ?? 95 }).toBuffer();
      case 'webp':
        return await out.webp({ quality: options.quality ?? 95 }).toBuffer();
      case 'avif':
        return await out.avif({ quality: options.quality ?? 80 }).toBuffer();
      case 'tiff':
        return await out.tiff({ compression: 'lzw' }).toBuffer();
      case 'gif':
        return await out.gif().toBuffer();
    }
  } catch (err) {
    throw new ImageError(
      name,
      `cannot encode the output as ${format.toUpperCase()} (${err instanceof Error ? err.message : String(err)})`,
      {
        cause: err,
      },
    );
  }
}
