/** Tile grid, blend weights and blending (src/image/tiling.ts): pure functions, no addon. */
import { describe, expect, it } from 'vitest';

import { bicubicUpscaleSquare, resizeInto } from '../../src/image/resample.js';
import {
  TileBlender,
  axisStarts,
  axisWeights,
  extractTile,
  planTiles,
  reflectIndex,
  type TilePlan,
} from '../../src/image/tiling.js';
import type { EngineRunOptions } from '../../src/engine.js';
import type { UpscaleProgress } from '../../src/options.js';
import { upscaleRgb, type TileEngine } from '../../src/upscaler.js';

/** Sum over tiles of wx * wy at every cropped output pixel. */
function weightSums(plan: TilePlan): Float64Array {
  const W = plan.width * plan.scale;
  const H = plan.height * plan.scale;
  const sums = new Float64Array(W * H);
  const side = plan.tile * plan.scale;
  for (const t of plan.tiles) {
    const wx = plan.x.weights[t.column]!;
    const wy = plan.y.weights[t.row]!;
    const x0 = (t.x - plan.x.padBefore) * plan.scale;
    const y0 = (t.y - plan.y.padBefore) * plan.scale;
    for (let q = 0; q < side; q++) {
      const y = y0 + q;
      if (y < 0 || y >= H) continue;
      for (let p = 0; p < side; p++) {
        const x = x0 + p;
        if (x < 0 || x >= W) continue;
        sums[y * W + x]! += wx[p]! * wy[q]!;
      }
    }
  }
  return sums;
}

/** A smooth test image: gentle gradients plus a low-frequency wave, 8-bit RGB. */
function smoothImage(w: number, h: number): Uint8Array {
  const img = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      img[i] = Math.round(20 + (200 * x) / Math.max(1, w - 1));
      img[i + 1] = Math.round(30 + (180 * y) / Math.max(1, h - 1));
      img[i + 2] = Math.round(128 + 60 * Math.sin(x / 19) * Math.cos(y / 23));
    }
  }
  return img;
}

/** Runs every tile of a plan through `fn` and blends the results. */
function blendAll(
  plan: TilePlan,
  img: Uint8Array,
  fn: (tile: Uint8Array, index: number) => Uint8Array,
  order?: number[],
): Uint8Array {
  const b = new TileBlender(plan, 3);
  for (const i of order ?? plan.tiles.map((t) => t.index)) b.add(i, fn(extractTile(img, plan, plan.tiles[i]!, 3), i));
  expect(b.done).toBe(true);
  return b.output;
}

/** Mean |difference| between horizontally adjacent output pixels, per x (all rows, channels). */
function columnSteps(out: Uint8Array, w: number, h: number): Float64Array {
  const d = new Float64Array(w - 1);
  for (let y = 0; y < h; y++)
    for (let x = 0; x + 1 < w; x++)
      for (let c = 0; c < 3; c++)
        d[x]! += Math.abs(out[(y * w + x + 1) * 3 + c]! - out[(y * w + x) * 3 + c]!) / (3 * h);
  return d;
}

describe('axisStarts', () => {
  it('returns one tile when the axis is exactly one tile long', () => {
    expect(axisStarts(64, 64, 16)).toEqual([0]);
  });

  it('covers both edges with overlaps of at least `overlap`, for every size', () => {
    for (const [tile, overlap] of [
      [64, 16],
      [16, 4],
      [5, 1],
      [8, 0],
      [2, 1],
    ] as const) {
      for (let size = tile; size < tile * 6; size++) {
        const s = axisStarts(size, tile, overlap);
        expect(s[0]).toBe(0);
        expect(s[s.length - 1]).toBe(size - tile);
        for (let k = 0; k + 1 < s.length; k++) {
          expect(s[k + 1]!).toBeGreaterThan(s[k]!);
          expect(s[k]! + tile - s[k + 1]!).toBeGreaterThanOrEqual(overlap);
        }
        // Minimal: one tile fewer could not keep the overlap.
        if (s.length > 1) expect((s.length - 2) * (tile - overlap) + tile).toBeLessThan(size);
      }
    }
  });

  it('rejects impossible parameters', () => {
    expect(() => axisStarts(10, 16, 4)).toThrow(RangeError);
    expect(() => axisStarts(100, 16, 16)).toThrow(RangeError);
    expect(() => axisStarts(100, 0, 0)).toThrow(RangeError);
  });
});

describe('axisWeights', () => {
  it('sums to exactly 1 at every output pixel along an axis', () => {
    for (const size of [64, 65, 100, 113, 200, 301]) {
      const starts = axisStarts(size, 64, 16);
      const { weights } = axisWeights(starts, 64, 4, 0.75);
      const sums = new Float64Array(size * 4);
      starts.forEach((s, k) => weights[k]!.forEach((w, p) => (sums[s * 4 + p]! += w)));
      for (const v of sums) expect(v).toBeCloseTo(1, 6);
    }
  });

  it('gives zero weight to the outer edge of tiles that have a neighbour there', () => {
    const starts = axisStarts(200, 64, 16);
    const { weights, ramp } = axisWeights(starts, 64, 4, 0.75);
    const minOverlap = Math.min(...starts.slice(1).map((s, k) => starts[k]! + 64 - s));
    expect(ramp).toBe(Math.floor(0.75 * minOverlap * 4));
    expect(ramp).toBeGreaterThan(0);
    for (let k = 0; k < starts.length; k++) {
      const w = weights[k]!;
      if (k > 0) expect(w[0]).toBe(0);
      else expect(w[0]).toBe(1);
      if (k + 1 < starts.length) expect(w[w.length - 1]).toBe(0);
      else expect(w[w.length - 1]).toBe(1);
    }
  });

  it('ramps smoothly: no weight changes by more than pi / (2 * ramp) between neighbours', () => {
    const starts = axisStarts(300, 64, 16);
    const { weights, ramp } = axisWeights(starts, 64, 4, 0.75);
    for (const w of weights)
      for (let p = 1; p < w.length; p++)
        expect(Math.abs(w[p]! - w[p - 1]!)).toBeLessThanOrEqual(Math.PI / (2 * ramp) + 1e-6);
  });

  it('makes hard cuts with feather 0', () => {
    const starts = axisStarts(100, 64, 16);
    const { weights } = axisWeights(starts, 64, 1, 0);
    for (const w of weights) for (const v of w) expect(v === 0 || v === 1).toBe(true);
  });
});

describe('planTiles', () => {
  const sizes: [number, number][] = [
    [1, 1],
    [1, 37],
    [37, 1],
    [1, 200],
    [200, 1],
    [5, 3],
    [16, 16],
    [17, 16],
    [40, 33],
    [63, 64],
    [64, 64],
    [65, 65],
    [113, 97],
    [300, 200],
  ];

  it('weights of all tiles sum to 1 at every output pixel (coverage is exact)', () => {
    for (const [w, h] of sizes) {
      for (const tile of [16, 64]) {
        const plan = planTiles(w, h, { tile, overlap: tile / 4, scale: 4 });
        const sums = weightSums(plan);
        let worst = 0;
        for (const v of sums) worst = Math.max(worst, Math.abs(v - 1));
        expect(worst, `${w}x${h} tile ${tile}`).toBeLessThan(1e-6);
      }
    }
  });

  it('pads axes shorter than a tile (centred) and grids the rest', () => {
    const p = planTiles(10, 100, { tile: 16, overlap: 4, scale: 4 });
    expect(p.x).toMatchObject({ size: 10, padded: 16, padBefore: 3, starts: [0] });
    expect(p.y.padBefore).toBe(0);
    expect(p.y.starts[0]).toBe(0);
    expect(p.y.starts[p.y.starts.length - 1]).toBe(100 - 16);
    expect(p.tiles.length).toBe(p.y.starts.length);
    expect(p.tiles.map((t) => t.index)).toEqual(p.tiles.map((_, i) => i));
  });

  it('adds a mirrored margin on every side: the image border is never a tile edge', () => {
    for (const [w, h] of sizes) {
      const plan = planTiles(w, h, { tile: 16, overlap: 2, scale: 4, margin: 1 });
      for (const a of [plan.x, plan.y]) {
        expect(a.padded).toBe(Math.max(a.size + 2, 16));
        expect(a.padBefore).toBeGreaterThanOrEqual(1);
        expect(a.padded - a.padBefore - a.size).toBeGreaterThanOrEqual(1);
      }
      const sums = weightSums(plan);
      let worst = 0;
      for (const v of sums) worst = Math.max(worst, Math.abs(v - 1));
      expect(worst, `${w}x${h}`).toBeLessThan(1e-6);
    }
    // Its context is the image mirrored (reflect-101) around the border pixel.
    const img = Uint8Array.from({ length: 20 * 20 * 3 }, (_, i) => (i * 7) % 251);
    const plan = planTiles(20, 20, { tile: 16, overlap: 4, scale: 1, margin: 2 });
    const t = extractTile(img, plan, plan.tiles[0]!, 3);
    expect(plan.x.padBefore).toBe(2);
    expect([...t.subarray(0, 3)]).toEqual([...img.subarray((2 * 20 + 2) * 3, (2 * 20 + 2) * 3 + 3)]);
    expect(() => planTiles(8, 8, { tile: 4, overlap: 1, scale: 2, margin: -1 })).toThrow(/margin -1/);
    expect(() => planTiles(8, 8, { tile: 4, overlap: 1, scale: 2, margin: 0.5 })).toThrow(/margin 0.5/);
  });

  it('lists tiles row-major', () => {
    const p = planTiles(100, 50, { tile: 32, overlap: 8, scale: 2 });
    const nx = p.x.starts.length;
    for (const t of p.tiles) {
      expect(t.index).toBe(t.row * nx + t.column);
      expect(t.x).toBe(p.x.starts[t.column]);
      expect(t.y).toBe(p.y.starts[t.row]);
    }
  });
});

describe('reflectIndex and extractTile', () => {
  it('mirrors without repeating the edge pixel (reflect-101), periodically', () => {
    expect([-3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7].map((i) => reflectIndex(i, 4))).toEqual([
      3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1,
    ]);
    expect([-2, 0, 5].map((i) => reflectIndex(i, 1))).toEqual([0, 0, 0]);
  });

  it('pads a small image by mirroring around its centred copy', () => {
    const w = 3;
    const h = 2;
    const img = Uint8Array.from({ length: w * h * 3 }, (_, i) => i * 10);
    const plan = planTiles(w, h, { tile: 8, overlap: 2, scale: 1 });
    const t = extractTile(img, plan, plan.tiles[0]!, 3);
    // The original pixels sit at [padBefore, padBefore + size) in the tile.
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let c = 0; c < 3; c++) {
          const ty = y + plan.y.padBefore;
          const tx = x + plan.x.padBefore;
          expect(t[(ty * 8 + tx) * 3 + c]).toBe(img[(y * w + x) * 3 + c]);
        }
    // Every tile pixel is one of the image's pixels, mirrored.
    for (let ty = 0; ty < 8; ty++)
      for (let tx = 0; tx < 8; tx++) {
        const sx = reflectIndex(tx - plan.x.padBefore, w);
        const sy = reflectIndex(ty - plan.y.padBefore, h);
        expect(t[(ty * 8 + tx) * 3]).toBe(img[(sy * w + sx) * 3]);
      }
  });
});

describe('TileBlender', () => {
  it('reproduces constant tiles exactly', () => {
    const plan = planTiles(90, 70, { tile: 32, overlap: 8, scale: 4 });
    const img = new Uint8Array(90 * 70 * 3).fill(173);
    const out = blendAll(plan, img, (t) => bicubicUpscaleSquare(t, 32, 3, 4));
    expect(out.every((v) => v === 173)).toBe(true);
  });

  it('crops padded images back to width x height x scale', () => {
    const w = 7;
    const h = 3;
    const img = smoothImage(w, h);
    const plan = planTiles(w, h, { tile: 16, overlap: 4, scale: 4 });
    const out = blendAll(plan, img, (t) => bicubicUpscaleSquare(t, 16, 3, 4));
    expect(out.length).toBe(w * 4 * h * 4 * 3);
    // One padded tile: the output is its enlargement, cropped at the padding offset.
    expect(plan.tiles.length).toBe(1);
    const big = bicubicUpscaleSquare(extractTile(img, plan, plan.tiles[0]!, 3), 16, 3, 4);
    for (let y = 0; y < h * 4; y++)
      for (let x = 0; x < w * 4; x++)
        for (let c = 0; c < 3; c++) {
          const src = ((y + plan.y.padBefore * 4) * 64 + x + plan.x.padBefore * 4) * 3 + c;
          expect(out[(y * w * 4 + x) * 3 + c]).toBe(big[src]);
        }
  });

  it('rejects unknown, repeated and wrongly sized tiles', () => {
    const plan = planTiles(40, 40, { tile: 16, overlap: 4, scale: 2 });
    const b = new TileBlender(plan, 3);
    const ok = new Uint8Array(32 * 32 * 3);
    expect(() => b.add(plan.tiles.length, ok)).toThrow(/not in the plan/);
    b.add(0, ok);
    expect(() => b.add(0, ok)).toThrow(/already added/);
    expect(() => b.add(1, new Uint8Array(5))).toThrow(/expected 32x32x3/);
  });

  it('gives the same output whatever the order tiles arrive in', () => {
    const plan = planTiles(100, 80, { tile: 32, overlap: 8, scale: 2 });
    const img = smoothImage(100, 80);
    const fn = (t: Uint8Array) => bicubicUpscaleSquare(t, 32, 3, 2);
    const inOrder = blendAll(plan, img, fn);
    const reversed = blendAll(plan, img, fn, plan.tiles.map((t) => t.index).reverse());
    expect(Buffer.from(reversed).equals(Buffer.from(inOrder))).toBe(true);
  });

  describe('seams', () => {
    const w = 150;
    const h = 110;
    const tile = 32;
    const scale = 4;
    const img = smoothImage(w, h);
    const W = w * scale;
    const H = h * scale;
    /** Output x positions where tiles start or end, and where their ramps are centred. */
    function borderColumns(plan: TilePlan): number[] {
      const xs = new Set<number>();
      plan.x.starts.forEach((s, k) => {
        xs.add(s * scale);
        xs.add((s + tile) * scale - 1);
        const next = plan.x.starts[k + 1];
        if (next !== undefined) xs.add(Math.round(((s + tile + next) / 2) * scale));
      });
      return [...xs].filter((x) => x > 2 && x < W - 3);
    }

    it('blends a smooth gradient without a step at tile borders (stand-in bicubic x4 model)', () => {
      const plan = planTiles(w, h, { tile, overlap: 8, scale });
      expect(plan.tiles.length).toBeGreaterThan(16);
      const out = blendAll(plan, img, (t) => bicubicUpscaleSquare(t, tile, 3, scale));
      // 1. The tiled result equals enlarging the whole image at once, up to rounding.
      const ref = new Uint8Array(out.length);
      resizeInto(img, w, h, 3, ref, W, H, 'bicubic');
      let worst = 0;
      for (let i = 0; i < out.length; i++) worst = Math.max(worst, Math.abs(out[i]! - ref[i]!));
      expect(worst).toBeLessThanOrEqual(1);
      // 2. Differences across tile borders look like the interior's.
      const steps = columnSteps(out, W, H);
      const interior = [...steps].sort((a, b) => a - b)[Math.floor(steps.length / 2)]!;
      const border = Math.max(...borderColumns(plan).map((x) => steps[x]!));
      expect(border).toBeLessThan(interior + 0.6);
    });

    it('detects seams from tiles that disagree when there is no feathering, and hides them with it', () => {
      // A stand-in model whose tiles disagree: each tile gets its own brightness offset.
      const biased = (t: Uint8Array, i: number) => {
        const o = bicubicUpscaleSquare(t, tile, 3, scale);
        const off = (i % 2) * 12 - 6;
        return o.map((v) => Math.max(0, Math.min(255, v + off)));
      };
      const hard = blendAll(planTiles(w, h, { tile, overlap: 8, scale, feather: 0 }), img, biased);
      const soft = blendAll(planTiles(w, h, { tile, overlap: 8, scale }), img, biased);
      const maxStep = (o: Uint8Array) => Math.max(...columnSteps(o, W, H));
      expect(maxStep(hard)).toBeGreaterThan(8);
      expect(maxStep(soft)).toBeLessThan(2);
    });
  });
});

describe('upscaleRgb (the Upscaler tile loop) with a stand-in engine', () => {
  /** A deterministic engine: bicubic x4 of each tile plus a per-key offset, recording calls. */
  function standIn(lrSize = 16, scales = 3) {
    const calls: { n: number; keys: number[] }[] = [];
    const engine: TileEngine = {
      lrSize,
      hrSize: lrSize * 4,
      scales,
      async run(tiles, n, options: EngineRunOptions) {
        const keys = Array.from(options.imageKeys ?? []);
        calls.push({ n, keys });
        const out = new Uint8Array(n * (lrSize * 4) ** 2 * 3);
        for (let si = 0; si < scales; si++) {
          options.signal?.throwIfAborted();
          options.onProgress?.({ scale: si, scales, patchNum: si + 1, ms: 0 });
        }
        for (let k = 0; k < n; k++) {
          const lr = tiles.subarray(k * lrSize * lrSize * 3, (k + 1) * lrSize * lrSize * 3);
          const hr = bicubicUpscaleSquare(lr, lrSize, 3, 4).map((v) => Math.min(255, v + (keys[k]! % 3)));
          out.set(hr, k * hr.length);
        }
        return out;
      },
    };
    return { engine, calls };
  }
  const settings = { seed: 0, cfg: 6, topK: 1, topP: 0.75, colorFix: 'adain' as const };

  it('passes every tile once with its grid index as image key, whatever the batch size', async () => {
    const img = smoothImage(50, 37);
    const outputs: Buffer[] = [];
    for (const tileBatch of [1, 3, 64]) {
      const { engine, calls } = standIn();
      outputs.push(
        Buffer.from(await upscaleRgb(engine, { rgb: img, width: 50, height: 37 }, { ...settings, tileBatch })),
      );
      const keys = calls.flatMap((c) => c.keys);
      expect(keys).toEqual(keys.map((_, i) => i));
      expect(Math.max(...calls.map((c) => c.n))).toBeLessThanOrEqual(tileBatch);
    }
    expect(outputs[0]!.length).toBe(200 * 148 * 3);
    expect(outputs[1]!.equals(outputs[0]!)).toBe(true);
    expect(outputs[2]!.equals(outputs[0]!)).toBe(true);
  });

  it('reports tiles and scales done, ending at the totals', async () => {
    const { engine } = standIn(16, 3);
    const seen: UpscaleProgress[] = [];
    await upscaleRgb(
      engine,
      { rgb: smoothImage(40, 20), width: 40, height: 20 },
      {
        ...settings,
        tileBatch: 2,
        onProgress: (p) => seen.push({ ...p }),
      },
    );
    const last = seen[seen.length - 1]!;
    expect(last.tilesDone).toBe(last.tilesTotal);
    expect(last.scalesDone).toBe(last.scalesTotal);
    expect(last.scalesTotal).toBe(Math.ceil(last.tilesTotal / 2) * 3);
    for (let i = 1; i < seen.length; i++) {
      expect(seen[i]!.scalesDone).toBeGreaterThanOrEqual(seen[i - 1]!.scalesDone);
      expect(seen[i]!.tilesDone).toBeGreaterThanOrEqual(seen[i - 1]!.tilesDone);
    }
  });

  it('stops between batches once aborted', async () => {
    const { engine, calls } = standIn();
    const ac = new AbortController();
    const run = upscaleRgb(
      engine,
      { rgb: smoothImage(60, 60), width: 60, height: 60 },
      {
        ...settings,
        tileBatch: 1,
        signal: ac.signal,
        onProgress: (p) => {
          if (p.tilesDone === 2) ac.abort();
        },
      },
    );
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(calls.length).toBe(2);
  });
});
