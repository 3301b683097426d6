/** Centre-aligned resampling (src/image/resample.ts): pure functions, no addon. */
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';

import {
  bicubicUpscaleSquare,
  kernelWeight,
  resampleTaps,
  resizeInto,
  type ResampleKernel,
} from '../../src/image/resample.js';
import { rng } from '../helpers/random.js';
import { pilBicubicTaps } from '../parity/ref-resample.js';

const KERNELS: ResampleKernel[] = ['bicubic', 'lanczos3'];

/** Float64 reference written from the formulas: Keys a = -0.5 cubic and sinc(x) sinc(x/3). */
function refKernel(kernel: ResampleKernel, x: number): number {
  const t = Math.abs(x);
  if (kernel === 'bicubic') {
    if (t < 1) return 1.5 * t ** 3 - 2.5 * t ** 2 + 1;
    if (t < 2) return -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2;
    return 0;
  }
  const sinc = (v: number) => (v === 0 ? 1 : Math.sin(Math.PI * v) / (Math.PI * v));
  return t < 3 ? sinc(x) * sinc(x / 3) : 0;
}

/** Reference resize: for every output pixel, the normalised weighted sum over in-image taps. */
function refResize(
  src: Float64Array,
  w: number,
  h: number,
  ow: number,
  oh: number,
  kernel: ResampleKernel,
): Float64Array {
  const out = new Float64Array(ow * oh);
  const R = kernel === 'bicubic' ? 2 : 3;
  for (let oy = 0; oy < oh; oy++) {
    const sy = ((oy + 0.5) * h) / oh - 0.5;
    for (let ox = 0; ox < ow; ox++) {
      const sx = ((ox + 0.5) * w) / ow - 0.5;
      // Separable weights, each axis normalised over its in-image taps.
      const ys: [number, number][] = [];
      const xs: [number, number][] = [];
      for (let j = Math.floor(sy) - R + 1; j <= Math.floor(sy) + R; j++)
        if (j >= 0 && j < h) ys.push([j, refKernel(kernel, j - sy)]);
      for (let i = Math.floor(sx) - R + 1; i <= Math.floor(sx) + R; i++)
        if (i >= 0 && i < w) xs.push([i, refKernel(kernel, i - sx)]);
      const ny = ys.reduce((a, [, v]) => a + v, 0);
      const nx = xs.reduce((a, [, v]) => a + v, 0);
      let acc = 0;
      for (const [j, wy] of ys) for (const [i, wx] of xs) acc += wy * wx * src[j * w + i]!;
      out[oy * ow + ox] = acc / (nx * ny);
    }
  }
  return out;
}

function centroid(a: Float64Array, w: number, h: number): [number, number] {
  let m = 0;
  let mx = 0;
  let my = 0;
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const v = a[y * w + x]!;
      m += v;
      mx += v * x;
      my += v * y;
    }
  return [mx / m, my / m];
}

describe('kernels', () => {
  it('interpolate: 1 at 0, 0 at other integers', () => {
    for (const k of KERNELS) {
      expect(kernelWeight(k, 0)).toBe(1);
      for (const x of [-3, -2, -1, 1, 2, 3]) expect(Math.abs(kernelWeight(k, x))).toBeLessThan(1e-15);
    }
  });

  it('match the float64 formulas', () => {
    for (const k of KERNELS)
      for (let x = -3.5; x <= 3.5; x += 0.0625) expect(kernelWeight(k, x)).toBeCloseTo(refKernel(k, x), 12);
  });
});

describe('resampleTaps', () => {
  it('has rows of weights summing to 1 and tap windows inside the source', () => {
    for (const k of KERNELS) {
      for (const [n, m] of [
        [1, 4],
        [2, 8],
        [5, 20],
        [7, 7],
        [3, 10],
      ] as const) {
        const t = resampleTaps(n, m, k);
        for (let i = 0; i < m; i++) {
          let s = 0;
          for (let j = 0; j < t.count[i]!; j++) s += t.weights[i * t.stride + j]!;
          expect(s).toBeCloseTo(1, 12);
          expect(t.first[i]!).toBeGreaterThanOrEqual(0);
          expect(t.first[i]! + t.count[i]!).toBeLessThanOrEqual(n);
        }
      }
    }
  });

  it('samples pixel centres: source x = (i + 0.5) / 4 - 0.5 for x4', () => {
    const t = resampleTaps(10, 40, 'bicubic');
    for (let i = 8; i < 32; i++) {
      const x = (i + 0.5) / 4 - 0.5;
      // Taps are floor(x)-1 .. floor(x)+2 with weights k(j - x).
      expect(t.first[i]).toBe(Math.floor(x) - 1);
      for (let j = 0; j < 4; j++)
        expect(t.weights[i * t.stride + j]).toBeCloseTo(refKernel('bicubic', t.first[i]! + j - x), 12);
    }
  });

  it("equals Pillow's bicubic taps for enlarging (spec 2.1)", () => {
    for (const [n, m] of [
      [16, 64],
      [5, 17],
      [128, 512],
    ] as const) {
      const t = resampleTaps(n, m, 'bicubic');
      for (let i = 0; i < m; i++) {
        const ref = pilBicubicTaps(i, n, m);
        const mine = new Map<number, number>();
        for (let j = 0; j < t.count[i]!; j++) mine.set(t.first[i]! + j, t.weights[i * t.stride + j]!);
        ref.idx.forEach((idx, q) => expect(mine.get(idx) ?? 0).toBeCloseTo(ref.w[q]!, 12));
      }
    }
  });

  it('refuses to reduce and rejects bad sizes', () => {
    expect(() => resampleTaps(4, 3, 'bicubic')).toThrow(RangeError);
    expect(() => resampleTaps(0, 3, 'lanczos3')).toThrow(RangeError);
    expect(() => resampleTaps(2.5, 10, 'lanczos3')).toThrow(RangeError);
  });
});

describe('resizeInto', () => {
  it('keeps a constant image constant (both kernels, 8 and 16 bits, degenerate sizes)', () => {
    for (const k of KERNELS) {
      for (const [w, h] of [
        [1, 1],
        [1, 9],
        [9, 1],
        [5, 3],
        [16, 16],
      ] as const) {
        const u8 = new Uint8Array(w * h * 2).fill(201);
        const o8 = new Uint8Array(w * 4 * h * 4 * 2);
        resizeInto(u8, w, h, 2, o8, w * 4, h * 4, k);
        expect(o8.every((v) => v === 201)).toBe(true);
        const u16 = new Uint16Array(w * h).fill(54321);
        const o16 = new Uint16Array(w * 4 * h * 4);
        resizeInto(u16, w, h, 1, o16, w * 4, h * 4, k);
        expect(o16.every((v) => v === 54321)).toBe(true);
      }
    }
  });

  it("centres a single bright pixel's mass at its enlarged centre", () => {
    for (const k of KERNELS) {
      // Far enough from the borders that no output row or column touching the pixel drops taps.
      const w = 31;
      const h = 29;
      for (const [px, py] of [
        [15, 14],
        [11, 17],
      ] as const) {
        const src = new Float64Array(w * h);
        src[py * w + px] = 1;
        const out = new Float64Array(w * 4 * h * 4);
        resizeInto(src, w, h, 1, out, w * 4, h * 4, k);
        const [cx, cy] = centroid(out, w * 4, h * 4);
        // Pixel px covers output pixels [4 px, 4 px + 4): its centre is 4 px + 1.5.
        expect(cx).toBeCloseTo(4 * px + 1.5, 9);
        expect(cy).toBeCloseTo(4 * py + 1.5, 9);
      }
    }
  });

  it("is not shifted like sharp's enlarging resize (the reason it exists)", async () => {
    const w = 15;
    const h = 13;
    const src = new Uint8Array(w * h);
    src[6 * w + 7] = 255;
    const { data } = await sharp(src, { raw: { width: w, height: h, channels: 1 } })
      .resize(w * 4, h * 4, { kernel: 'cubic' })
      .extractChannel(0)
      .raw()
      .toBuffer({ resolveWithObject: true });
    expect(data.length).toBe(w * 4 * h * 4);
    const [sx] = centroid(Float64Array.from(data), w * 4, h * 4);
    const out = new Float64Array(w * 4 * h * 4);
    resizeInto(src, w, h, 1, out, w * 4, h * 4, 'bicubic');
    const [mx] = centroid(out, w * 4, h * 4);
    expect(mx).toBeCloseTo(29.5, 9);
    // Recorded behaviour of sharp 0.35.5 / libvips 8.18.7: off-centre by half an output pixel
    // (measured centroid 30 instead of 29.5, the same for 'cubic' and 'lanczos3'). If a later sharp fixes this, this expectation fails and the note in
    // resample.ts can be revisited.
    expect(Math.abs(sx - 29.5)).toBeGreaterThan(0.2);
  });

  it('matches the float64 reference on random images (interleaved channels, borders included)', () => {
    const r = rng(7);
    for (const k of KERNELS) {
      for (const [w, h, ow, oh] of [
        [6, 5, 24, 20],
        [3, 7, 12, 28],
        [4, 4, 11, 9],
      ] as const) {
        const ch = 3;
        const src = Float64Array.from({ length: w * h * ch }, () => r() * 255);
        const out = new Float64Array(ow * oh * ch);
        resizeInto(src, w, h, ch, out, ow, oh, k);
        for (let c = 0; c < ch; c++) {
          const plane = Float64Array.from({ length: w * h }, (_, i) => src[i * ch + c]!);
          const ref = refResize(plane, w, h, ow, oh, k);
          for (let i = 0; i < ow * oh; i++) expect(out[i * ch + c]).toBeCloseTo(ref[i]!, 9);
        }
      }
    }
  });

  it('rounds and clamps into integer destinations (lanczos overshoot)', () => {
    const src = Uint8Array.from([0, 0, 255, 255, 0, 0]);
    const f = new Float64Array(24);
    const u = new Uint8Array(24);
    resizeInto(src, 6, 1, 1, f, 24, 1, 'lanczos3');
    resizeInto(src, 6, 1, 1, u, 24, 1, 'lanczos3');
    expect(Math.max(...f)).toBeGreaterThan(255);
    expect(Math.min(...f)).toBeLessThan(0);
    f.forEach((v, i) => expect(u[i]).toBe(Math.min(255, Math.max(0, Math.round(v)))));
  });

  it('checks buffer sizes', () => {
    expect(() => resizeInto(new Uint8Array(5), 2, 2, 1, new Uint8Array(64), 8, 8, 'bicubic')).toThrow(RangeError);
    expect(() => resizeInto(new Uint8Array(4), 2, 2, 1, new Uint8Array(63), 8, 8, 'bicubic')).toThrow(RangeError);
  });
});

describe('bicubicUpscaleSquare', () => {
  it('is resizeInto with the bicubic kernel on a square tile', () => {
    const r = rng(3);
    const t = Uint8Array.from({ length: 8 * 8 * 3 }, () => Math.floor(r() * 256));
    const ref = new Uint8Array(32 * 32 * 3);
    resizeInto(t, 8, 8, 3, ref, 32, 32, 'bicubic');
    expect(Buffer.from(bicubicUpscaleSquare(t, 8, 3, 4)).equals(Buffer.from(ref))).toBe(true);
  });
});
