/**
 * The measurements behind `alignvar bench`: per-scale step latency, prepare, refiner and decode
 * times of the Engine (the same native Session upscaling uses), and the Upscaler's tile loop
 * ({@link upscaleRgb}: cut, engine batches, blend) for one 512x512 output, per tile batch size.
 *
 * Per run and tile batch B, one `engine.run` of B tiles: the engine's `onProgress` gives each
 * scale step's time (the native call, wall clock); prepare is the time to the first step minus
 * that step. A model with VARSR's diffusion refiner (spec 6) runs it after the last step, timed
 * by `onRefiner` (the native call, which synchronises the backend); decode is the time after
 * the refiner, or after the last step without one. Then one `upscaleRgb` of a 128x128 input
 * (x4: 512x512) with batches of B, timed end to end (no image file decode or encode). Each figure
 * is summarised over the runs as median, min, max. GFLOP come from the spec's cost model
 * (section 9, see ./cost.ts) with R = 2 rows per tile when cfg != 0; the refiner's are what the
 * engine runs ({@link refinerCost} `total`).
 */
import { Engine } from '../engine.js';
import { planTiles } from '../image/tiling.js';
import type { ColorFix, Device } from '../options.js';
import { backendInfo, inspectModel, tileSpec, upscaleRgb } from '../upscaler.js';
import type { RefinerDims } from '../model/refiner.js';
import { convCosts, refinerCost, stepCosts } from './cost.js';

/** Options of {@link benchEngine}. */
export interface EngineBenchOptions {
  /** Model file; default the embedded model. */
  model?: string | undefined;
  /** Device; default `'auto'`. */
  device?: Device | undefined;
  /** CUDA device index. Default 0. */
  gpu?: number | undefined;
  /** Tile batch sizes to time, each 1 ... 64. Default [1, 4, 8]. */
  tileBatches?: readonly number[] | undefined;
  /** Untimed runs per batch size first. Default 1. */
  warmup?: number | undefined;
  /** Timed runs per batch size (>= 1). Default 5. */
  runs?: number | undefined;
  /**
   * Run VARSR's diffusion refiner when the model holds one (as upscaling does). Default true;
   * false times the model without it (its weights are not loaded).
   */
  refiner?: boolean | undefined;
  /** Called after each timed or warm-up run (for progress output). */
  onRun?: ((tileBatch: number, run: number, warmup: boolean) => void) | undefined;
}

/** Median and range of one figure over the timed runs. */
export interface Spread {
  /** Median (the mean of the middle two for an even count). */
  median: number;
  /** Smallest value. */
  min: number;
  /** Largest value. */
  max: number;
}

/** One scale step of a batch. */
export interface ScaleBench {
  /** Scale index. */
  si: number;
  /** Token map side. */
  pn: number;
  /** Tokens sampled in the batch: pn^2 x B. */
  tokens: number;
  /** Query rows per tile row (prefix length at si = 0). */
  lq: number;
  /** Keys attended to. */
  lk: number;
  /** Step latency, ms. */
  ms: Spread;
  /** GFLOP of the batch at this step (cost model). */
  gflop: number;
  /** `gflop / median ms`, GFLOP/s. */
  gflops: number;
}

/** The refiner stage of a batch (models that run one). */
export interface RefinerBench {
  /** Token map side it refines (the last scale's, G). */
  pn: number;
  /** Tokens refined in the batch: G^2 x B. */
  tokens: number;
  /** Diffusion steps per token (10). */
  steps: number;
  /** Stage latency (all steps), ms per batch. */
  ms: Spread;
  /** GFLOP of the batch (cost model: what the engine runs). */
  gflop: number;
  /** `gflop / median ms`, GFLOP/s. */
  gflops: number;
}

/** Results for one tile batch size. */
export interface BatchBench {
  /** Tiles per engine batch. */
  tileBatch: number;
  /** Per scale step. */
  scales: ScaleBench[];
  /** Prepare (LR resize, conditioning net, SCA masks, prefix), ms per batch. */
  prepareMs: Spread;
  /** All K steps, ms per batch. */
  stepsMs: Spread;
  /** The diffusion refiner after the last step; absent when the engine runs none. */
  refiner?: RefinerBench;
  /** Decode (VQVAE decoder, colour fix, output conversion), ms per batch. */
  decodeMs: Spread;
  /** The whole `engine.run` of B tiles, ms. */
  batchMs: Spread;
  /** B / median batch seconds. */
  tilesPerSecond: number;
  /** GFLOP per batch: transformer, conditioning net, refiner (0 without one), decoder, total. */
  gflop: { transformer: number; condNet: number; refiner: number; decoder: number; total: number };
  /** Total GFLOP / median batch seconds. */
  gflops: number;
  /** The Upscaler tile loop for one 512x512 output (128x128 input), ms. */
  per512Ms: Spread;
}

/** What {@link benchEngine} returns (the `--json` output). */
export interface EngineBenchResult {
  /** Model file. */
  model: string;
  /** Backend used. */
  device: 'cpu' | 'cuda';
  /** The backend's detail string (threads, SIMD level or GPU). */
  backendDetail: string;
  /** Configuration summary. */
  config: {
    depth: number;
    width: number;
    heads: number;
    vocab: number;
    lrSize: number;
    hrSize: number;
    scales: number;
    /** The refiner the engine ran (width W, blocks); absent when none (or `refiner: false`). */
    refiner?: RefinerDims;
  };
  /** Sampling settings used: the model's defaults, greedy. */
  settings: { cfg: number; topK: number; colorFix: ColorFix; warmup: number; runs: number };
  /** Tiles of a 512x512 output (128x128 input with the upscaler's overlap). */
  tilesPer512: number;
  /** One entry per tile batch size. */
  results: BatchBench[];
}

/** Median, min and max of a non-empty list. */
export function spread(values: readonly number[]): Spread {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]! };
}

/**
 * A deterministic LR picture, uint8 RGB `side x side`: colour fields, a disc, stripes and noise,
 * different per `k` (the content does not change the cost; it keeps the sampler honest).
 */
export function benchImage(side: number, k: number): Uint8Array {
  const out = new Uint8Array(side * side * 3);
  let s = (0x9e3779b9 ^ (k * 7919)) >>> 0;
  const rnd = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
  for (let y = 0; y < side; y++)
    for (let x = 0; x < side; x++) {
      const r = Math.hypot(y - 0.45 * side, x - (0.35 + 0.1 * k) * side);
      let px = [
        120 + 70 * Math.sin((2 * Math.PI * x) / (0.6 * side) + k),
        110 + 60 * Math.cos((2 * Math.PI * y) / (0.8 * side)),
        90 + 50 * Math.sin((2 * Math.PI * (x + y)) / side),
      ];
      if (r < 0.22 * side) px = [235, 210, 40];
      else if (Math.floor((x + 2 * y) / 6) % 2 === 0 && y > 0.7 * side) px = [60, 200, 80];
      for (let c = 0; c < 3; c++)
        out[(y * side + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(px[c]! + 12 * rnd())));
    }
  return out;
}

/** Input side of a 512x512 output. */
const SIDE_512 = 128;

/**
 * Loads the model on the device and times it (see the module comment).
 *
 * @param options - Model, device, batch sizes, warm-up and timed runs, refiner on or off.
 * @returns Every figure, per tile batch size.
 * @throws Whatever loading the model throws (`ERR_NO_MODEL`, WeightsError, NativeError).
 */
export async function benchEngine(options: EngineBenchOptions = {}): Promise<EngineBenchResult> {
  const tileBatches = options.tileBatches ?? [1, 4, 8];
  const warmup = options.warmup ?? 1;
  const runs = options.runs ?? 5;
  const info = await inspectModel(options.model);
  const engine = await Engine.create(info.path, {
    backend: options.device ?? 'auto',
    device: options.gpu ?? 0,
    refiner: options.refiner ?? true,
  });
  try {
    const cfg = engine.config;
    const sched = engine.schedule;
    const K = sched.K;
    const lr = engine.lrSize;
    const guidance = info.defaultCfg;
    const colorFix = info.defaultColorFix;
    const run = { seed: 0, cfg: guidance, topK: 1, topP: 0.75, colorFix } as const;
    const steps = stepCosts(cfg, sched, guidance !== 0);
    const conv = convCosts(cfg);
    const transformer = steps.reduce((a, s) => a + s.total, 0);
    const tileEngine = {
      lrSize: engine.lrSize,
      hrSize: engine.hrSize,
      scales: K,
      run: (t: Uint8Array, n: number, o: Parameters<Engine['run']>[2]) => engine.run(t, n, o),
    };
    const picture = { rgb: benchImage(SIDE_512, 0), width: SIDE_512, height: SIDE_512 };
    const tilesPer512 = planTiles(SIDE_512, SIDE_512, tileSpec(lr, engine.hrSize / lr)).tiles.length;
    const results: BatchBench[] = [];
    for (const B of tileBatches) {
      const tiles = new Uint8Array(B * lr * lr * 3);
      for (let b = 0; b < B; b++) tiles.set(benchImage(lr, b + 1), b * lr * lr * 3);
      const stepMs: number[][] = Array.from({ length: K }, () => []);
      const prep: number[] = [];
      const refMs: number[] = [];
      const dec: number[] = [];
      const all: number[] = [];
      const e2e: number[] = [];
      for (let i = 0; i < warmup + runs; i++) {
        const t0 = performance.now();
        let last = t0;
        let first = 0;
        let refined = NaN;
        const ms: number[] = [];
        await engine.run(tiles, B, {
          ...run,
          onProgress: (p) => {
            const now = performance.now();
            if (p.scale === 0) first = now - t0 - p.ms;
            ms.push(p.ms);
            last = now;
          },
          onRefiner: (p) => {
            refined = p.ms;
            last = performance.now();
          },
        });
        const end = performance.now();
        const u0 = performance.now();
        await upscaleRgb(tileEngine, picture, { ...run, tileBatch: B });
        const u1 = performance.now();
        const timed = i >= warmup;
        if (timed) {
          prep.push(first);
          if (engine.refiner) refMs.push(refined);
          dec.push(end - last);
          all.push(end - t0);
          e2e.push(u1 - u0);
          ms.forEach((v, si) => stepMs[si]!.push(v));
        }
        options.onRun?.(B, timed ? i - warmup : i, !timed);
      }
      const scales: ScaleBench[] = steps.map((s, si) => {
        const m = spread(stepMs[si]!);
        const gflop = s.total * B;
        return {
          si: s.si,
          pn: s.pn,
          tokens: s.tokens * B,
          lq: s.lq,
          lk: s.lk,
          ms: m,
          gflop,
          gflops: gflop / (m.median / 1e3),
        };
      });
      const batchMs = spread(all);
      let refiner: RefinerBench | undefined;
      if (engine.refiner) {
        const c = refinerCost(cfg, engine.refiner, guidance !== 0, B);
        const m = spread(refMs);
        refiner = {
          pn: cfg.grid,
          tokens: cfg.grid * cfg.grid * B,
          steps: c.steps,
          ms: m,
          gflop: c.total,
          gflops: c.total / (m.median / 1e3),
        };
      }
      const refinerGflop = refiner?.gflop ?? 0;
      const gflop = {
        transformer: transformer * B,
        condNet: conv.condNet * B,
        refiner: refinerGflop,
        decoder: conv.decoder * B,
        total: (transformer + conv.condNet + conv.decoder) * B + refinerGflop,
      };
      results.push({
        tileBatch: B,
        scales,
        prepareMs: spread(prep),
        stepsMs: spread(stepMs[0]!.map((_, r) => stepMs.reduce((a, col) => a + col[r]!, 0))),
        ...(refiner ? { refiner } : {}),
        decodeMs: spread(dec),
        batchMs,
        tilesPerSecond: B / (batchMs.median / 1e3),
        gflop,
        gflops: gflop.total / (batchMs.median / 1e3),
        per512Ms: spread(e2e),
      });
    }
    const backend = engine.backend === 'cuda' ? 'cuda' : 'cpu';
    return {
      model: info.path,
      device: backend,
      backendDetail: backendInfo().find((b) => b.name === backend)?.detail ?? '',
      config: {
        depth: cfg.depth,
        width: cfg.width,
        heads: cfg.heads,
        vocab: cfg.vocab,
        lrSize: cfg.lrSize,
        hrSize: cfg.hrSize,
        scales: K,
        ...(engine.refiner ? { refiner: { ...engine.refiner } } : {}),
      },
      settings: { cfg: guidance, topK: 1, colorFix, warmup, runs },
      tilesPer512,
      results,
    };
  } finally {
    await engine.dispose();
  }
}
