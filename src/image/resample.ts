/**
 * Centre-aligned separable resampling for enlarging images (the alpha channel; spec 2.1 geometry).
 *
 * Why not sharp's resize: with sharp 0.35.5 / libvips 8.18.7, enlarging ignores the `kernel`
 * option and shifts the image by half an output pixel, so the alpha channel would no longer line
 * up with the model's RGB output (whose LR preprocessing, spec 2.1, is centre-aligned).
 *
 * Geometry: output pixel `i` of an `in -> out` resize samples the source at
 * `x = (i + 0.5) * in / out - 0.5` (pixel centres aligned; for x4, `x = (i + 0.5) / 4 - 0.5`).
 * Tap `j` gets weight `k(j - x)`. Taps outside the image are dropped and the remaining weights
 * renormalised to sum 1 (Pillow's border rule, spec 2.1), so a constant image stays constant.
 * With `'bicubic'` this is exactly Pillow's bicubic resize for enlarging (spec 2.1), computed in
 * float instead of Pillow's fixed point. The filter is not widened for reducing: these kernels
 * are for enlarging only (no antialiasing), and reducing is refused.
 *
 * Kernels: `'bicubic'` is Keys' cubic convolution with a = -0.5 (support 2); `'lanczos3'` is
 * `sinc(x) sinc(x/3)` (support 3). The 2-D resize is a horizontal pass then a vertical pass;
 * rows of the horizontal pass are computed on demand and dropped once no output row needs them,
 * so memory is a few rows plus the output.
 */

/** Resampling kernel of {@link resizeInto}. */
export type ResampleKernel = 'bicubic' | 'lanczos3';

/** Interleaved pixel buffers {@link resizeInto} reads and writes. */
export type PixelArray = Uint8Array | Uint8ClampedArray | Uint16Array | Float32Array | Float64Array;

/** Bicubic kernel parameter (Keys; Pillow's and libvips' value). */
const BICUBIC_A = -0.5;

/** Half-width of a kernel in source pixels. */
export function kernelSupport(kernel: ResampleKernel): number {
  return kernel === 'bicubic' ? 2 : 3;
}

/**
 * The kernel's value at distance `x` (in source pixels).
 *
 * @param kernel - `'bicubic'` (a = -0.5) or `'lanczos3'`.
 * @param x - Signed distance between the tap and the sample position.
 */
export function kernelWeight(kernel: ResampleKernel, x: number): number {
  const ax = Math.abs(x);
  if (kernel === 'bicubic') {
    const a = BICUBIC_A;
    if (ax < 1) return ((a + 2) * ax - (a + 3)) * ax * ax + 1;
    if (ax < 2) return ((a * ax - 5 * a) * ax + 8 * a) * ax - 4 * a;
    return 0;
  }
  if (ax === 0) return 1;
  if (ax >= 3) return 0;
  const px = Math.PI * x;
  return (3 * Math.sin(px) * Math.sin(px / 3)) / (px * px);
}

/** Per-output-index taps of a 1-D resize: `count[i]` taps from source index `first[i]`. */
export interface Taps {
  /** First source index of output index i. */
  first: Int32Array;
  /** Number of taps of output index i (at least 1). */
  count: Int32Array;
  /** `weights[i * stride + t]`: weight of source index `first[i] + t`; each row sums to 1. */
  weights: Float64Array;
  /** Row stride of `weights` (2 x the kernel support). */
  stride: number;
}

/**
 * Computes the taps of a centre-aligned 1-D resize from `inSize` to `outSize` samples.
 *
 * @param inSize - Source length, >= 1.
 * @param outSize - Output length, >= inSize.
 * @param kernel - The kernel.
 * @throws {RangeError} When the sizes are not positive integers or `outSize < inSize`.
 */
export function resampleTaps(inSize: number, outSize: number, kernel: ResampleKernel): Taps {
  if (!Number.isInteger(inSize) || !Number.isInteger(outSize) || inSize < 1 || outSize < inSize) {
    throw new RangeError(`resampleTaps: cannot enlarge ${inSize} to ${outSize} samples`);
  }
  const support = kernelSupport(kernel);
  const stride = 2 * support;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * stride);
  const ratio = inSize / outSize;
  for (let i = 0; i < outSize; i++) {
    const x = (i + 0.5) * ratio - 0.5;
    const base = Math.floor(x);
    const lo = Math.max(0, base - support + 1);
    const hi = Math.min(inSize - 1, base + support);
    let sum = 0;
    for (let j = lo; j <= hi; j++) {
      const w = kernelWeight(kernel, j - x);
      weights[i * stride + (j - lo)] = w;
      sum += w;
    }
    for (let t = 0; t <= hi - lo; t++) weights[i * stride + t]! /= sum;
    first[i] = lo;
    count[i] = hi - lo + 1;
  }
  return { first, count, weights, stride };
}

/** Largest representable value of an integer pixel array; undefined for float arrays. */
function integerMax(a: PixelArray): number | undefined {
  if (a instanceof Uint8Array || a instanceof Uint8ClampedArray) return 255;
  if (a instanceof Uint16Array) return 65535;
  return undefined;
}

/**
 * Enlarges an interleaved image (`channels` values per pixel, rows top to bottom) into `dst`.
 * Integer destinations receive values rounded to nearest and clamped to their range; float
 * destinations receive the unrounded values (which may overshoot the input range, e.g. lanczos
 * ringing).
 *
 * @param src - Source pixels, `width * height * channels` values.
 * @param width - Source width in pixels, >= 1.
 * @param height - Source height in pixels, >= 1.
 * @param channels - Values per pixel, >= 1.
 * @param dst - Output pixels, `outWidth * outHeight * channels` values.
 * @param outWidth - Output width, >= width.
 * @param outHeight - Output height, >= height.
 * @param kernel - The kernel.
 * @throws {RangeError} On inconsistent sizes or a reduction.
 */
export function resizeInto(
  src: PixelArray,
  width: number,
  height: number,
  channels: number,
  dst: PixelArray,
  outWidth: number,
  outHeight: number,
  kernel: ResampleKernel,
): void {
  if (src.length !== width * height * channels) {
    throw new RangeError(`resizeInto: source has ${src.length} values, expected ${width}x${height}x${channels}`);
  }
  if (dst.length !== outWidth * outHeight * channels) {
    throw new RangeError(
      `resizeInto: destination has ${dst.length} values, expected ${outWidth}x${outHeight}x${channels}`,
    );
  }
  const tx = resampleTaps(width, outWidth, kernel);
  const ty = resampleTaps(height, outHeight, kernel);
  const rowLen = outWidth * channels;
  const max = integerMax(dst);
  // Horizontally resampled source rows, computed when first needed. Output rows visit source
  // rows in non-decreasing windows, so rows before the current window are never needed again.
  const cache = new Map<number, Float64Array>();
  const hrow = (y: number): Float64Array => {
    let row = cache.get(y);
    if (row !== undefined) return row;
    row = new Float64Array(rowLen);
    const srcRow = y * width * channels;
    for (let i = 0; i < outWidth; i++) {
      const f = tx.first[i]!;
      const n = tx.count[i]!;
      const wBase = i * tx.stride;
      for (let c = 0; c < channels; c++) {
        let acc = 0;
        for (let t = 0; t < n; t++) acc += tx.weights[wBase + t]! * src[srcRow + (f + t) * channels + c]!;
        row[i * channels + c] = acc;
      }
    }
    cache.set(y, row);
    return row;
  };
  const acc = new Float64Array(rowLen);
  for (let o = 0; o < outHeight; o++) {
    const f = ty.first[o]!;
    const n = ty.count[o]!;
    for (const y of cache.keys()) if (y < f) cache.delete(y);
    acc.fill(0);
    for (let t = 0; t < n; t++) {
      const w = ty.weights[o * ty.stride + t]!;
      const row = hrow(f + t);
      for (let k = 0; k < rowLen; k++) acc[k]! += w * row[k]!;
    }
    const out = o * rowLen;
    if (max === undefined) {
      for (let k = 0; k < rowLen; k++) dst[out + k] = acc[k]!;
    } else {
      for (let k = 0; k < rowLen; k++) {
        const v = Math.round(acc[k]!);
        dst[out + k] = v < 0 ? 0 : v > max ? max : v;
      }
    }
  }
}

/**
 * Enlarges an interleaved 8-bit image by an integer factor with the centre-aligned bicubic
 * kernel. A deterministic stand-in for the model in tests (same tile in, same tile out).
 *
 * @param src - `size * size * channels` bytes.
 * @param size - Side of the square source, in pixels.
 * @param channels - Values per pixel.
 * @param scale - Integer enlargement factor, >= 1.
 * @returns `(size * scale)^2 * channels` bytes.
 */
export function bicubicUpscaleSquare(src: Uint8Array, size: number, channels: number, scale: number): Uint8Array {
  const out = new Uint8Array(size * scale * size * scale * channels);
  resizeInto(src, size, size, channels, out, size * scale, size * scale, 'bicubic');
  return out;
}
