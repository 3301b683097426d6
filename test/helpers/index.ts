/** Shared test helpers: the addon, available backends, seeded random data, error metrics. */
import { loadAddon } from '../../src/binding/load.js';
import { rng } from './random.js';
import type { NativeAddon } from '../../src/binding/types.js';

export { rng };

export const addon: NativeAddon = loadAddon();

/** Backends usable on this machine ('cpu' always first). */
export function availableBackends(): string[] {
  return addon
    .backendInfo()
    .filter((b) => b.available)
    .map((b) => b.name);
}

/** Non-CPU backends that are compiled but unusable here, with the reason (for skip messages). */
export function unavailableBackends(): { name: string; reason: string }[] {
  return addon
    .backendInfo()
    .filter((b) => !b.available)
    .map((b) => ({ name: b.name, reason: b.reason }));
}

/** Uniform random f32 array in [lo, hi), never exactly zero. */
export function randArray(n: number, r: () => number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = lo + (hi - lo) * r();
    if (v === 0) v = 1e-3;
    out[i] = v;
  }
  return out;
}

/** Standard-normal random f32 array (Box-Muller). */
export function randn(n: number, r: () => number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = Math.max(r(), 1e-12);
    const u2 = r();
    const m = Math.sqrt(-2 * Math.log(u1)) * std;
    out[i] = m * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = m * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** Output buffer filled with NaN so unwritten elements fail every comparison. */
export function poisoned(n: number): Float32Array {
  return new Float32Array(n).fill(Number.NaN);
}

/** Relative L2 error ||a - ref|| / ||ref|| (Infinity if any NaN). */
export function relErr(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (a.length !== ref.length) throw new Error(`length ${a.length} != ${ref.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = ref[i]!;
    if (Number.isNaN(x) || Number.isNaN(y)) return Infinity;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/** Normalised mean squared error sum((a-ref)^2) / sum(ref^2). */
export function nmse(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  const e = relErr(a, ref);
  return e * e;
}

/** Largest absolute difference (Infinity if any NaN). */
export function maxAbs(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - ref[i]!);
    if (Number.isNaN(d)) return Infinity;
    if (d > m) m = d;
  }
  return m;
}

/**
 * Largest absolute difference as a fraction of the reference's largest magnitude: the golden
 * suites' float measure, which holds across SIMD paths for tensors of any scale (issue 10).
 */
export function maxRel(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let peak = 0;
  for (let i = 0; i < ref.length; i++) peak = Math.max(peak, Math.abs(ref[i]!));
  return maxAbs(a, ref) / Math.max(peak, 1e-300);
}

/** Rounds an f32 array to bf16 (round to nearest even) and returns the bits and the rounded values. */
export function toBf16(x: Float32Array): { bits: Uint16Array; values: Float32Array } {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const bits = new Uint16Array(x.length);
  const values = new Float32Array(x.length);
  const vu = new Uint32Array(values.buffer);
  for (let i = 0; i < x.length; i++) {
    const v = u[i]!;
    const r = (v + 0x7fff + ((v >>> 16) & 1)) >>> 16;
    bits[i] = r;
    vu[i] = (r << 16) >>> 0;
  }
  return { bits, values };
}

/** Rounds an f32 array to f16 and returns the bits and the rounded values. */
export function toF16(x: Float32Array): { bits: Uint16Array; values: Float32Array } {
  const bits = new Uint16Array(x.length);
  const values = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const h = f32ToF16(x[i]!);
    bits[i] = h;
    values[i] = f16ToF32(h);
  }
  return { bits, values };
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? Number.NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function f32ToF16(v: number): number {
  const f = new Float32Array([v]);
  const a = new Uint32Array(f.buffer)[0]!;
  const sign = (a >>> 16) & 0x8000;
  const abs = a & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00;
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    // subnormal: value / 2^-24 rounded to nearest even
    const val = Math.abs(v) / 2 ** -24;
    let r = Math.round(val);
    if (Math.abs(val - Math.trunc(val) - 0.5) < 1e-12 && Math.trunc(val) % 2 === 0) r = Math.trunc(val);
    return sign | r;
  }
  const r = (abs + 0xfff + ((abs >>> 13) & 1) - 0x38000000) >>> 13;
  return sign | r;
}

/**
 * Tolerance for linear/conv2d results. The CUDA backend stages f32 activations as bf16 (f16
 * with f16 weights) for its tensor cores, so its error is that rounding (~1e-3 relative), not
 * accumulation order: 1e-2 with bf16 weights, 3e-3 with f16. f32 weights take its exact fp32
 * path and, like every CPU case, keep `base`.
 */
export function gemmTol(backend: string, wdtype: string | undefined, base: number): number {
  if (backend !== 'cuda') return base;
  if (wdtype === 'bf16') return Math.max(base, 1e-2);
  if (wdtype === 'f16') return Math.max(base, 3e-3);
  return base;
}
