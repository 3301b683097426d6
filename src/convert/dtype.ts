/**
 * Float conversions of raw little-endian tensor bytes for the converter: F64 / F32 / F16 / BF16
 * in, F32 / F16 / BF16 out. Narrowing rounds to nearest, ties to even, as torch's `.to()` does
 * (f16: subnormals kept, overflow to infinity; NaN stays NaN).
 */
import type { TorchDType } from './pickle.js';

/** Output dtypes of the converter. */
export type OutDType = 'F32' | 'F16' | 'BF16';

let halfTable: Float32Array | undefined;

function halfToF32Table(): Float32Array {
  if (halfTable !== undefined) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 31) t[h] = mant ? Number.NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  halfTable = t;
  return t;
}

/** f32 bits -> bf16 bits, round to nearest even. */
export function f32BitsToBf16(u: number): number {
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f32 bits -> f16 bits, round to nearest even. */
export function f32BitsToF16(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: value / 2^-24 = (1.mant) * 2^(e - 14 + 23) in units of the f32 mantissa.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) !== 0)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa moves into the exponent, which also rounds to infinity correctly.
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
  return sign | h;
}

/** Decodes `bytes` (a whole number of `dtype` elements) to f32. */
function toF32(bytes: Uint8Array, dtype: TorchDType): Float32Array {
  const aligned = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const buf = aligned.buffer;
  const off = aligned.byteOffset;
  switch (dtype) {
    case 'F32':
      return new Float32Array(buf, off, aligned.byteLength / 4);
    case 'F64':
      return Float32Array.from(new Float64Array(buf, off, aligned.byteLength / 8));
    case 'BF16': {
      const src = new Uint16Array(buf, off, aligned.byteLength / 2);
      const out = new Float32Array(src.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
      return out;
    }
    case 'F16': {
      const src = new Uint16Array(buf, off, aligned.byteLength / 2);
      const t = halfToF32Table();
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = t[src[i]!]!;
      return out;
    }
    default:
      throw new TypeError(`cannot convert ${dtype} to a float dtype`);
  }
}

/**
 * Converts raw bytes of `from` elements to `to` elements.
 *
 * @param bytes - A whole number of elements, little-endian.
 * @returns New bytes (or `bytes` itself when the dtypes are equal).
 */
export function convertBytes(bytes: Uint8Array, from: TorchDType, to: OutDType): Uint8Array {
  if (from === to) return bytes;
  const f = toF32(bytes, from);
  if (to === 'F32') return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
  const bits = new Uint32Array(f.buffer, f.byteOffset, f.length);
  const out = new Uint16Array(f.length);
  if (to === 'BF16') for (let i = 0; i < f.length; i++) out[i] = f32BitsToBf16(bits[i]!);
  else for (let i = 0; i < f.length; i++) out[i] = f32BitsToF16(bits[i]!);
  return new Uint8Array(out.buffer);
}
