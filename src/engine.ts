/**
 * Engine: the low-level core the public Upscaler wraps. It loads one model file onto one
 * backend and turns batches of LR tiles (uint8 RGB at the model's `lrSize`) into HR tiles
 * (uint8 RGB at `hrSize` = 4 x `lrSize`). Tiling, image I/O and option defaults for users live
 * above it.
 *
 * Per batch: `prepare` (LR resize, conditioning net, SCA masks, prefix), K `step`s (one native
 * call per scale; progress and AbortSignal act between them), for a VARSR file with its
 * diffusion refiner `refine` (spec 6), `decode` (VQVAE decoder, output conversion, AdaIN colour
 * fix). Calls on one Engine are serialised.
 */
import { loadAddon } from './binding/load.js';
import type { DType, NativeModelConfig, NativeSession } from './binding/types.js';
import { NativeError, WeightsError, invalidOption, rethrowNative } from './errors.js';
import { type ModelConfig, detectConfig, expectedTensors, scheduleOf } from './model/config.js';
import { type ScaleProgress, runScales } from './model/generate.js';
import { type RefinerDims, detectRefiner, refinerTensors } from './model/refiner.js';
import { type Schedule, ropeTable } from './model/schedule.js';
import { SafetensorsFile } from './weights/safetensors.js';

/** How an Engine is created. */
export interface EngineCreateOptions {
  /** 'cpu', 'cuda', or 'auto' (CUDA when available, else CPU). Default 'auto'. */
  backend?: 'auto' | 'cpu' | 'cuda';
  /** CUDA device index. Default 0. */
  device?: number;
  /**
   * KV cache dtype: 'f32' (default) or 'bf16'. bf16 halves the cache (at d24 with CFG about
   * 1.9 GB per image in f32), so more images fit a GPU batch; k and v are rounded to bf16 once,
   * when written, which moves logits by about 1e-3 relative (docs/decisions.md).
   */
  kvCache?: 'f32' | 'bf16';
  /**
   * Run VARSR's diffusion refiner when the file holds one (`diffloss.*`, `decoder_norm.*`).
   * Default true; false leaves its weights unloaded and skips the stage. AlignVAR files have none.
   */
  refiner?: boolean;
}

/** Per-batch settings. */
export interface EngineRunOptions {
  /** Sampler seed, an integer in [0, 2^64). Default 0. */
  seed?: number | bigint;
  /** Classifier-free guidance weight (t grows linearly to it over the scales), >= 0. Default 6. */
  cfg?: number;
  /** Top-k filter: 1 = greedy (no randomness), 0 = off. Default 1. */
  topK?: number;
  /** Top-p filter in [0, 1]; 0 or 1 = off. Default 0.75. */
  topP?: number;
  /**
   * Sampler key per tile (int32). A tile's tokens depend only on (seed, its key, its pixels),
   * never on batch composition. Default: 0, 1, ..., n-1.
   */
  imageKeys?: Int32Array | readonly number[];
  /** Colour fix against the upsampled LR: 'adain' (default), 'wavelet' or 'none'. */
  colorFix?: 'adain' | 'wavelet' | 'none';
  /** Called after each scale. */
  onProgress?: (p: ScaleProgress) => void;
  /** Called after the refiner stage (models that run one) with its wall time in ms. */
  onRefiner?: (p: { ms: number }) => void;
  /** Aborts between scales (and before prepare/decode). */
  signal?: AbortSignal;
  /** Test-only: keep intermediates for `_debug`. */
  debug?: boolean;
  /** Test-only: awaited after each scale (the session may be inspected with `_debug`). */
  onStep?: (si: number, tokens: Int32Array) => Promise<void> | void;
}

const DTYPES: Record<string, DType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** The native form of a detected configuration. */
export function nativeConfig(cfg: ModelConfig, schedule: Schedule): NativeModelConfig {
  return {
    depth: cfg.depth,
    width: cfg.width,
    heads: cfg.heads,
    mlp_hidden: cfg.mlpHidden,
    vocab: cfg.vocab,
    cvae: cfg.cvae,
    num_classes: cfg.numClasses,
    patch_nums: [...cfg.patchNums],
    cond_ch: [...cfg.condCh],
    vq_ch: cfg.vqCh,
    vq_ch_mult: [...cfg.vqChMult],
    vq_num_res: cfg.vqNumRes,
    vq_attn_at_lowest: cfg.vqAttnAtLowest,
    n_phi: cfg.nPhi,
    quant_resi: cfg.quantResi,
    rope_base: cfg.ropeBase,
    sca: cfg.sca,
    decoder_lr: cfg.decoderLr ?? false,
    token_mean: cfg.tokenMode === 'mean',
    rope: ropeTable(schedule),
    phi_index: Int32Array.from(schedule.steps.map((s) => s.phi)),
  };
}

function pickBackend(requested: 'auto' | 'cpu' | 'cuda'): string {
  if (requested !== 'auto') return requested;
  const cuda = loadAddon()
    .backendInfo()
    .find((b) => b.name === 'cuda');
  return cuda?.available ? 'cuda' : 'cpu';
}

export class Engine {
  /** The detected model configuration. */
  readonly config: ModelConfig;
  /** Its scale schedule. */
  readonly schedule: Schedule;
  /** The backend in use ('cpu' | 'cuda'). */
  readonly backend: string;
  /** LR tile side in pixels. */
  readonly lrSize: number;
  /** HR tile side in pixels (4 x lrSize). */
  readonly hrSize: number;
  /** The refiner this engine runs (its width and blocks), or undefined (none, or turned off). */
  readonly refiner: RefinerDims | undefined;
  private readonly native: NativeSession;
  private queue: Promise<unknown> = Promise.resolve();
  private disposed = false;

  private constructor(
    config: ModelConfig,
    schedule: Schedule,
    backend: string,
    native: NativeSession,
    refiner: RefinerDims | undefined,
  ) {
    this.config = config;
    this.refiner = refiner;
    this.schedule = schedule;
    this.backend = backend;
    this.native = native;
    this.lrSize = config.lrSize;
    this.hrSize = config.hrSize;
  }

  /**
   * Loads a model file. Tensors are read and uploaded one at a time (each file buffer is
   * released after its upload), so the file is never held in memory whole.
   *
   * @throws WeightsError when the file is invalid or its tensors do not fit its configuration;
   *   NativeError when the backend cannot be created or lacks an op.
   */
  static async create(modelPath: string, options: EngineCreateOptions = {}): Promise<Engine> {
    const backendOpt = options.backend ?? 'auto';
    if (backendOpt !== 'auto' && backendOpt !== 'cpu' && backendOpt !== 'cuda')
      throw invalidOption('options.backend', "'auto', 'cpu' or 'cuda'", backendOpt);
    const device = options.device ?? 0;
    if (!Number.isInteger(device) || device < 0)
      throw invalidOption('options.device', 'a non-negative integer', options.device);
    const kvCache = options.kvCache ?? 'f32';
    if (kvCache !== 'f32' && kvCache !== 'bf16')
      throw invalidOption('options.kvCache', "'f32' or 'bf16'", options.kvCache);
    const useRefiner = options.refiner ?? true;
    if (typeof useRefiner !== 'boolean') throw invalidOption('options.refiner', 'a boolean', options.refiner);
    const file = await SafetensorsFile.open(modelPath);
    let native: NativeSession | undefined;
    try {
      const config = detectConfig(file, modelPath);
      const schedule = scheduleOf(config);
      const backend = pickBackend(backendOpt);
      const refiner = useRefiner ? detectRefiner(file.tensors) : undefined;
      const refinerKeys = refiner ? refinerTensors(config, refiner) : [];
      for (const e of refinerKeys) {
        const info = file.tensors.get(e.name);
        if (!info) throw new WeightsError({ file: modelPath, tensor: e.name, problem: "is missing (the refiner's)" });
        if (info.shape.length !== e.shape.length || info.shape.some((d, i) => d !== e.shape[i]))
          throw new WeightsError({
            file: modelPath,
            tensor: e.name,
            problem: `expected shape [${e.shape.join(', ')}] but found [${info.shape.join(', ')}]`,
          });
      }
      const { Session } = loadAddon();
      try {
        native = new Session(backend, device, {
          ...nativeConfig(config, schedule),
          kv_dtype: kvCache,
          refiner_width: refiner?.width ?? 0,
          refiner_blocks: refiner?.blocks ?? 0,
        });
      } catch (err) {
        const e = err as { message?: string; code?: string };
        throw new NativeError(e.message ?? String(err), e.code ?? 'ERR_NATIVE', { cause: err });
      }
      for (const e of [...expectedTensors(config), ...refinerKeys]) {
        const info = file.tensors.get(e.name);
        const dtype = info ? DTYPES[info.dtype] : undefined;
        if (!info || !dtype) throw new WeightsError({ file: modelPath, tensor: e.name, problem: 'cannot be loaded' });
        // NaN or Inf in a weight would upscale to garbage without a word: refused at load.
        const buf = await file.read(e.name, { finite: true });
        await rethrowNative(native.loadTensor(e.name, { data: buf, shape: [...info.shape], dtype }));
      }
      await rethrowNative(native.finalize());
      return new Engine(config, schedule, backend, native, refiner);
    } catch (err) {
      if (native) await native.dispose().catch(() => undefined);
      throw err;
    } finally {
      await file.close();
    }
  }

  /**
   * Upscales a batch of LR tiles.
   *
   * @param tiles - uint8 RGB [n, lrSize, lrSize, 3], row-major, interleaved.
   * @param n - Number of tiles (>= 1).
   * @param options - Sampling settings, hooks.
   * @returns uint8 RGB [n, hrSize, hrSize, 3].
   */
  run(tiles: Uint8Array, n: number, options: EngineRunOptions = {}): Promise<Uint8Array> {
    const job = this.queue.then(() => this.runNow(tiles, n, options));
    this.queue = job.catch(() => undefined);
    return job;
  }

  private async runNow(tiles: Uint8Array, n: number, o: EngineRunOptions): Promise<Uint8Array> {
    if (this.disposed) throw new NativeError('Engine.run: the engine is disposed', 'ERR_DISPOSED');
    if (!Number.isInteger(n) || n < 1) throw invalidOption('n', 'a positive integer', n);
    const lr = this.lrSize;
    if (!(tiles instanceof Uint8Array) || tiles.length !== n * lr * lr * 3)
      throw invalidOption('tiles', `a Uint8Array of ${n} x ${lr} x ${lr} x 3 bytes`, tiles);
    const seed = BigInt(o.seed ?? 0);
    if (seed < 0n || seed >= 1n << 64n) throw invalidOption('options.seed', 'an integer in [0, 2^64)', o.seed);
    const cfg = o.cfg ?? 6;
    if (!Number.isFinite(cfg) || cfg < 0) throw invalidOption('options.cfg', 'a finite number >= 0', o.cfg);
    const topK = o.topK ?? 1;
    if (!Number.isInteger(topK) || topK < 0 || topK > this.config.vocab)
      throw invalidOption('options.topK', `an integer in [0, ${this.config.vocab}]`, o.topK);
    const topP = o.topP ?? 0.75;
    if (!Number.isFinite(topP) || topP < 0 || topP > 1)
      throw invalidOption('options.topP', 'a number in [0, 1]', o.topP);
    const keys = o.imageKeys === undefined ? Int32Array.from({ length: n }, (_, i) => i) : Int32Array.from(o.imageKeys);
    if (
      keys.length !== n ||
      (o.imageKeys !== undefined &&
        !Array.from(o.imageKeys).every((k) => Number.isInteger(k) && k >= -(2 ** 31) && k < 2 ** 31))
    )
      throw invalidOption('options.imageKeys', `${n} int32 values`, o.imageKeys);
    // A residual-latent model takes its colour from the LR it adds back: no colour fix by default.
    const colorFix = o.colorFix ?? (this.config.latent === 'residual' ? 'none' : 'adain');
    if (colorFix !== 'adain' && colorFix !== 'wavelet' && colorFix !== 'none')
      throw invalidOption('options.colorFix', "'adain', 'wavelet' or 'none'", o.colorFix);

    o.signal?.throwIfAborted();
    await rethrowNative(
      this.native.prepare({
        lr: { data: tiles, shape: [n, lr, lr, 3], dtype: 'u8' },
        image_keys: keys,
        seed,
        cfg,
        top_k: topK,
        top_p: topP,
        debug: o.debug ?? false,
      }),
    );
    await runScales(this.native, this.schedule, { onProgress: o.onProgress, signal: o.signal, onStep: o.onStep });
    o.signal?.throwIfAborted();
    if (this.refiner) {
      const t0 = performance.now();
      await rethrowNative(this.native.refine());
      o.onRefiner?.({ ms: performance.now() - t0 });
      o.signal?.throwIfAborted();
    }
    const residualScale = this.config.latent === 'residual' ? (this.config.residualScale ?? 1) : 0;
    return rethrowNative(this.native.decode({ color_fix: colorFix, residual_scale: residualScale }));
  }

  /** Test-only: the native session (for `_debug` inside `onStep` or after `run`). */
  get _session(): NativeSession {
    return this.native;
  }

  /** Bytes of backend memory held by weights and by the batch state. */
  memory(): { weights: number; state: number } {
    const i = this.native.info();
    return { weights: i.weight_bytes ?? 0, state: i.state_bytes ?? 0 };
  }

  /** Releases weights, caches and the backend; waits for a running batch first. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.queue;
    await rethrowNative(this.native.dispose());
  }
}
