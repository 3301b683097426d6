/**
 * The public Upscaler: decode an image, cut it into overlapping model tiles, run them through
 * the engine in batches, blend the results, re-attach alpha, and encode.
 *
 * `createUpscaler(options)` loads the model once; `upscale(input, options)` may be called any
 * number of times, concurrently: the tiles of concurrent calls share engine batches through the
 * dynamic batcher (src/batch/), round-robin across calls, with bounded queues; `dispose()` frees
 * the model and backend.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';

import { type BatcherStats, TileBatcher } from './batch/batcher.js';
import { loadAddon, packageRoot } from './binding/load.js';
import type { BackendInfo } from './binding/types.js';
import { Engine, type EngineRunOptions } from './engine.js';
import { AlignvarError, invalidOption } from './errors.js';
import {
  type DecodedImage,
  type ImageInput,
  FORMAT_MAX_SIDE,
  ImageError,
  composePixels,
  decodeImage,
  defaultOutputFormat,
  encodeImage,
  inputName,
  isImageInput,
} from './image/io.js';
import { resizeInto } from './image/resample.js';
import { TileBlender, type TileSpec, extractTile, planTiles } from './image/tiling.js';
import { type ModelConfig, detectConfig } from './model/config.js';
import {
  COLOR_FIXES,
  type ColorFix,
  type ResolvedUpscalerOptions,
  type UpscaleOptions,
  type UpscaleProgress,
  type UpscalerOptions,
  DEFAULT_CFG,
  MAX_CFG,
  validateUpscaleOptions,
  validateUpscalerOptions,
} from './options.js';
import { escapeControl } from './text.js';
import { SafetensorsFile } from './weights/safetensors.js';

/** Path of the embedded default model, relative to the package root. */
export const DEFAULT_MODEL_RELATIVE_PATH = 'models/alignvar-default.safetensors';

/** Absolute path of the embedded default model. */
export const DEFAULT_MODEL_PATH = join(packageRoot, DEFAULT_MODEL_RELATIVE_PATH);

/**
 * Least overlap of neighbouring tiles as a fraction of the tile side: 4 LR px for the embedded
 * model's 32-px tiles, 16 for d24's 128. An eighth, not a quarter: on the validation split at
 * 768x768 (64 tiles per output) it changed the default model's PSNR-Y by -0.011 to +0.003 dB per
 * image and cut the wall time by 27%; the flat-area test reads the same (docs/decisions.md).
 */
const TILE_OVERLAP = 0.125;

/**
 * Mirrored context around the image as a fraction of the tile side: 2 LR px for the embedded
 * model, 8 for d24. Without it the image's corners are the corner pixels of their tiles, where
 * the embedded model adds a spot of up to 75 levels (test/model/flat.test.ts; docs/decisions.md).
 */
const TILE_MARGIN = 1 / 16;

/**
 * The tile grid every upscale uses for a model with `lrSize`-pixel tiles.
 *
 * @param lrSize - The model's LR tile side.
 * @param scale - The model's enlargement factor.
 */
export function tileSpec(lrSize: number, scale: number): TileSpec {
  return {
    tile: lrSize,
    overlap: Math.min(lrSize - 1, Math.round(lrSize * TILE_OVERLAP)),
    scale,
    margin: Math.round(lrSize * TILE_MARGIN),
  };
}

/** Raw pixels returned by `upscale(input, { raw: true })`. */
export interface RawImage {
  /**
   * Interleaved samples, rows top to bottom: bytes, or 16-bit samples in the machine's byte
   * order (little-endian on every supported platform) when `info.depth` is `'ushort'`.
   */
  data: Buffer;
  /** Layout of `data`. */
  info: RawImageInfo;
}

/** Layout of a {@link RawImage}. */
export interface RawImageInfo {
  /** Width in pixels (4 x the input's). */
  width: number;
  /** Height in pixels (4 x the input's). */
  height: number;
  /** 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA: the input's layout. */
  channels: 1 | 2 | 3 | 4;
  /** `'uchar'` (8 bits per sample) or `'ushort'` (16 bits, for 16-bit inputs). */
  depth: 'uchar' | 'ushort';
}

/** Model details reported by {@link inspectModel} and {@link Upscaler.modelConfig}. */
export interface ModelInfo {
  /** Absolute or caller-given path of the model file. */
  path: string;
  /** Hyper-parameters detected from the file. */
  config: ModelConfig;
  /**
   * The file's `__metadata__` strings (e.g. `status`), keys and values with their control
   * characters escaped by {@link escapeControl} so that printing them cannot inject terminal
   * escapes or line breaks. The known keys were validated (see `METADATA_KEYS` in
   * src/model/config.ts), so only free text such as `status` can contain escapes.
   */
  metadata: Readonly<Record<string, string>>;
  /** Guidance weight used when `cfg` is not given: the metadata's `cfg`, else 6. */
  defaultCfg: number;
  /** Colour fix used when `colorFix` is not given: the metadata's `color_fix`, else `'adain'`. */
  defaultColorFix: ColorFix;
  /**
   * Whether the file holds VARSR's diffusion refiner (`diffloss.*` and `decoder_norm.*`), which
   * the upscaler then runs unless {@link UpscalerOptions.refiner} is false.
   */
  hasRefiner: boolean;
}

/**
 * The part of the engine the upscaler drives ({@link Engine} implements it). Tiles are uint8
 * RGB `[n, lrSize, lrSize, 3]` in, `[n, hrSize, hrSize, 3]` out.
 */
export interface TileEngine {
  /** LR tile side in pixels. */
  readonly lrSize: number;
  /** HR tile side in pixels (an integer multiple of lrSize). */
  readonly hrSize: number;
  /** Scale steps per batch (progress units). */
  readonly scales: number;
  /** Upscales `n` tiles. */
  run(tiles: Uint8Array, n: number, options: EngineRunOptions): Promise<Uint8Array>;
}

/** Sampling settings of one image (see {@link UpscalerOptions} for ranges and meaning). */
export interface TileSettings {
  /** Sampler seed. */
  seed: number;
  /** Guidance weight. */
  cfg: number;
  /** Top-k, 0 = off; at most the vocabulary size. */
  topK: number;
  /** Top-p, 0 = off. */
  topP: number;
  /** Colour fix applied by the engine to each tile. */
  colorFix: ColorFix;
  /** Tiles per engine batch. */
  tileBatch: number;
  /** Checked before every batch; the engine checks it between scales. */
  signal?: AbortSignal | undefined;
  /** Progress callback. */
  onProgress?: ((p: UpscaleProgress) => void) | undefined;
}

/**
 * Upscales 8-bit RGB pixels like {@link upscaleRgb}, but through the dynamic batcher: the
 * image's tiles join engine batches shared with other concurrent calls. Tile `i` keeps image key
 * `i`, so the bytes equal {@link upscaleRgb}'s for the same settings.
 *
 * @param batcher - The upscaler's batcher.
 * @param slot - This call's place, from `batcher.reserve()`.
 * @param engine - Tile sizes and scales per tile.
 * @param image - `rgb` is `width * height * 3` bytes.
 * @param settings - Sampling settings, cancellation and progress (`tileBatch` is unused: the
 *   batcher's `maxBatchTiles` applies).
 * @returns `(width * s) * (height * s) * 3` bytes, s = hrSize / lrSize.
 */
export async function upscaleRgbBatched(
  slot: ReturnType<TileBatcher['reserve']>,
  engine: Pick<TileEngine, 'lrSize' | 'hrSize' | 'scales'>,
  image: { rgb: Uint8Array; width: number; height: number },
  settings: Omit<TileSettings, 'tileBatch'>,
): Promise<Uint8Array> {
  const lr = engine.lrSize;
  const scale = engine.hrSize / lr;
  const plan = planTiles(image.width, image.height, tileSpec(lr, scale));
  const blender = new TileBlender(plan, 3);
  const total = plan.tiles.length;
  const K = engine.scales;
  const scalesTotal = total * K;
  let tilesDone = 0;
  const onProgress = settings.onProgress;
  await slot.run({
    count: total,
    key: (i) => plan.tiles[i]!.index,
    tile: (i) => extractTile(image.rgb, plan, plan.tiles[i]!, 3),
    settings: {
      seed: settings.seed,
      cfg: settings.cfg,
      topK: settings.topK,
      topP: settings.topP,
      colorFix: settings.colorFix,
    },
    onTile: (i, hr) => blender.add(plan.tiles[i]!.index, hr),
    onScale:
      onProgress &&
      ((tiles, si) =>
        onProgress({ tilesDone, tilesTotal: total, scalesDone: tilesDone * K + tiles * (si + 1), scalesTotal })),
    onBatch: (tiles) => {
      tilesDone += tiles;
      onProgress?.({ tilesDone, tilesTotal: total, scalesDone: tilesDone * K, scalesTotal });
    },
    signal: settings.signal,
  });
  return blender.output;
}

/** The error an aborted call rejects with: name `'AbortError'`, code `'ABORT_ERR'`, cause = reason. */
function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  const err = new Error('The upscale was aborted', { cause: reason });
  err.name = 'AbortError';
  return Object.assign(err, { code: 'ABORT_ERR' });
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

/**
 * Upscales 8-bit RGB pixels with overlapping tiles (see src/image/tiling.ts). Tile `i` (row-major
 * in the grid) is sampled with image key `i`, so the result does not depend on `tileBatch`.
 *
 * @param engine - The tile engine.
 * @param image - `rgb` is `width * height * 3` bytes.
 * @param settings - Sampling settings, batch size, cancellation and progress.
 * @returns `(width * s) * (height * s) * 3` bytes, s = hrSize / lrSize.
 */
export async function upscaleRgb(
  engine: TileEngine,
  image: { rgb: Uint8Array; width: number; height: number },
  settings: TileSettings,
): Promise<Uint8Array> {
  const lr = engine.lrSize;
  const scale = engine.hrSize / lr;
  const plan = planTiles(image.width, image.height, tileSpec(lr, scale));
  const blender = new TileBlender(plan, 3);
  const total = plan.tiles.length;
  const batches = Math.ceil(total / settings.tileBatch);
  const scalesTotal = batches * engine.scales;
  const lrBytes = lr * lr * 3;
  const hrBytes = engine.hrSize * engine.hrSize * 3;
  let tilesDone = 0;
  for (let b = 0; b < batches; b++) {
    throwIfAborted(settings.signal);
    const rects = plan.tiles.slice(b * settings.tileBatch, (b + 1) * settings.tileBatch);
    const input = new Uint8Array(rects.length * lrBytes);
    rects.forEach((r, k) => input.set(extractTile(image.rgb, plan, r, 3), k * lrBytes));
    const onProgress = settings.onProgress;
    const out = await engine.run(input, rects.length, {
      seed: settings.seed,
      cfg: settings.cfg,
      topK: settings.topK,
      topP: settings.topP,
      colorFix: settings.colorFix,
      imageKeys: rects.map((r) => r.index),
      signal: settings.signal,
      onProgress:
        onProgress &&
        ((p) => onProgress({ tilesDone, tilesTotal: total, scalesDone: b * engine.scales + p.scale + 1, scalesTotal })),
    });
    if (out.length !== rects.length * hrBytes) {
      throw new AlignvarError(`the engine returned ${out.length} bytes for ${rects.length} tiles`, 'ERR_ENGINE_OUTPUT');
    }
    rects.forEach((r, k) => blender.add(r.index, out.subarray(k * hrBytes, (k + 1) * hrBytes)));
    tilesDone += rects.length;
    onProgress?.({ tilesDone, tilesTotal: total, scalesDone: (b + 1) * engine.scales, scalesTotal });
  }
  return blender.output;
}

/** Reads the guidance default from model metadata (`cfg`), falling back to 6. */
function metadataCfg(metadata: Readonly<Record<string, string>>): number {
  const s = metadata.cfg;
  if (s === undefined || s.trim() === '') return DEFAULT_CFG;
  const v = Number(s);
  return Number.isFinite(v) && v >= 0 && v <= MAX_CFG ? v : DEFAULT_CFG;
}

/** Reads the colour-fix default from model metadata (`color_fix`), falling back to `'adain'`. */
function metadataColorFix(metadata: Readonly<Record<string, string>>): ColorFix {
  const s = metadata.color_fix?.trim();
  // a residual-latent model (metadata latent = "residual") adds the upsampled LR back: no fix by default
  const fallback = metadata.latent === 'residual' ? 'none' : 'adain';
  return (COLOR_FIXES as readonly string[]).includes(s ?? '') ? (s as ColorFix) : fallback;
}

/** Resolves the model path and checks that the file exists, with a clear error if not. */
async function resolveModelPath(model: string | undefined): Promise<string> {
  const path = model ?? DEFAULT_MODEL_PATH;
  try {
    await access(path);
  } catch (err) {
    if (model === undefined) {
      throw new AlignvarError(
        `The embedded default model ${DEFAULT_MODEL_RELATIVE_PATH} is not in this package yet (looked for ${path}); ` +
          "pass a model file: createUpscaler({ model: '/path/to/model.safetensors' }) or --model <path>",
        'ERR_NO_MODEL',
        { cause: err },
      );
    }
    throw new AlignvarError(`Model file not found: ${path}`, 'ERR_NO_MODEL', { cause: err });
  }
  return path;
}

/**
 * Reads a model file's configuration and metadata without loading its weights.
 *
 * @param model - Path of a `.safetensors` file; default the embedded model.
 * @throws {AlignvarError} `ERR_NO_MODEL` when the file does not exist.
 * @throws {WeightsError} When it is not a valid AlignVAR model.
 */
export async function inspectModel(model?: string): Promise<ModelInfo> {
  if (model !== undefined && (typeof model !== 'string' || model.length === 0)) {
    throw invalidOption('model', 'non-empty string (path of a .safetensors file)', model);
  }
  const path = await resolveModelPath(model);
  const file = await SafetensorsFile.open(path);
  try {
    return {
      path,
      config: detectConfig(file, path),
      metadata: Object.freeze(
        Object.fromEntries(Object.entries(file.metadata).map(([k, v]) => [escapeControl(k), escapeControl(v)])),
      ),
      defaultCfg: metadataCfg(file.metadata),
      defaultColorFix: metadataColorFix(file.metadata),
      hasRefiner:
        [...file.tensors.keys()].some((k) => k.startsWith('diffloss.')) && file.tensors.has('decoder_norm.weight'),
    };
  } finally {
    await file.close();
  }
}

/**
 * What each compute backend of this build can do on this machine (loads the native addon).
 *
 * @returns One entry per backend, CPU first: whether it is compiled in and available, and why not.
 */
export function backendInfo(): BackendInfo[] {
  return loadAddon().backendInfo();
}

/** An AlignVAR x4 upscaler bound to one model on one device. Create with {@link createUpscaler}. */
export class Upscaler {
  /** Path of the loaded model file. */
  readonly model: string;
  /** The device in use. */
  readonly device: 'cpu' | 'cuda';
  /** Why `device: 'auto'` fell back to the CPU (the CUDA backend's reason); undefined otherwise. */
  readonly fallbackReason: string | undefined;
  /** The model's hyper-parameters (`lrSize`: tile side in input pixels, `hrSize` = 4 x lrSize). */
  readonly modelConfig: ModelConfig;
  /** Enlargement factor (4). */
  readonly scale: number;
  /** The options in effect, defaults filled in. */
  readonly options: Readonly<
    Omit<ResolvedUpscalerOptions, 'cfg' | 'model' | 'colorFix'> & { cfg: number; model: string; colorFix: ColorFix }
  >;
  readonly #engine: Engine;
  readonly #batcher: TileBatcher;
  #disposed = false;

  private constructor(engine: Engine, options: Upscaler['options'], fallbackReason: string | undefined) {
    this.#engine = engine;
    this.options = Object.freeze(options);
    this.model = options.model;
    this.device = engine.backend === 'cuda' ? 'cuda' : 'cpu';
    this.fallbackReason = fallbackReason;
    this.modelConfig = engine.config;
    this.scale = engine.hrSize / engine.lrSize;
    this.#batcher = new TileBatcher(this.#tileEngine(), {
      maxBatchTiles: options.maxBatchTiles,
      maxBatchDelayMs: options.maxBatchDelayMs,
      maxQueuedTiles: options.maxQueuedTiles,
      maxQueuedRequests: options.maxQueuedRequests,
    });
  }

  /**
   * Loads a model and prepares the device. Prefer {@link createUpscaler}.
   *
   * @param options - See {@link UpscalerOptions}; all optional.
   * @throws {TypeError} For an invalid option (`Expected <what> for <name> but received <value>`).
   * @throws {AlignvarError} `ERR_NO_MODEL` when the model file does not exist.
   * @throws {WeightsError} When the model file is invalid.
   * @throws {NativeError} When the device cannot be used (e.g. `device: 'cuda'` without a GPU).
   */
  static async create(options?: UpscalerOptions): Promise<Upscaler> {
    const o = validateUpscalerOptions(options);
    const info = await inspectModel(o.model);
    const engine = await Engine.create(info.path, {
      backend: o.device,
      device: o.gpu,
      kvCache: o.kvCache,
      refiner: o.refiner,
    });
    let fallbackReason: string | undefined;
    if (o.device === 'auto' && engine.backend !== 'cuda') {
      const cuda = backendInfo().find((b) => b.name === 'cuda');
      fallbackReason = cuda?.reason || 'CUDA is unavailable';
    }
    const resolved = {
      ...o,
      model: info.path,
      cfg: o.cfg ?? info.defaultCfg,
      colorFix: o.colorFix ?? info.defaultColorFix,
    };
    return new Upscaler(engine, resolved, fallbackReason);
  }

  /**
   * Upscales one image x4.
   *
   * @param input - A file path, the encoded image bytes (Buffer or Uint8Array), or a sharp
   *   instance (used with its own settings and operations). Inputs are never modified.
   * @param options - See {@link UpscaleOptions}.
   * @returns The encoded image (see `format`), or raw pixels `{ data, info }` with `raw: true`.
   *   The output keeps the input's channel layout (gray, alpha), its 16-bit depth where the
   *   format allows, its ICC profile, EXIF (orientation reset) and XMP.
   * @throws {TypeError} For invalid options or input.
   * @throws {ImageError} For an unreadable, corrupt, unsupported or too large image.
   * @throws {AlignvarError} `ERR_QUEUE_FULL` at once when `maxQueuedRequests` calls are in
   *   flight, or after the image header is read when its tiles would pass `maxQueuedTiles`;
   *   `ERR_TIMEOUT` when `timeout` ms pass first; `ERR_DISPOSED` after {@link dispose}.
   * @throws An error named `'AbortError'` when `signal` aborts.
   */
  upscale(input: ImageInput, options: UpscaleOptions & { raw: true }): Promise<RawImage>;
  upscale(input: ImageInput, options?: UpscaleOptions & { raw?: false | undefined }): Promise<Buffer>;
  upscale(input: ImageInput, options?: UpscaleOptions): Promise<Buffer | RawImage>;
  upscale(input: ImageInput, options?: UpscaleOptions): Promise<Buffer | RawImage> {
    return this.#upscale(input, options);
  }

  /**
   * How many model tiles an image is cut into (what `onProgress` counts as `tilesTotal`), so
   * that a caller can size a progress total before upscaling.
   *
   * @param width - Input width in pixels, >= 1.
   * @param height - Input height in pixels, >= 1.
   * @returns The number of tiles, >= 1.
   */
  tileCount(width: number, height: number): number {
    const lr = this.modelConfig.lrSize;
    return planTiles(Math.max(1, width), Math.max(1, height), tileSpec(lr, this.scale)).tiles.length;
  }

  async #upscale(input: ImageInput, options: UpscaleOptions | undefined): Promise<Buffer | RawImage> {
    const o = validateUpscaleOptions(options);
    if (!isImageInput(input)) {
      throw invalidOption('input', 'file path, Buffer, Uint8Array or sharp instance', input);
    }
    if (this.#disposed) throw new AlignvarError('The upscaler has been disposed', 'ERR_DISPOSED');
    const name = inputName(input);
    throwIfAborted(o.signal);
    const slot = this.#batcher.reserve();
    // The timeout and the caller's signal become one signal for everything below.
    const timeoutCtl = o.timeout === undefined ? undefined : new AbortController();
    const timeoutErr =
      o.timeout === undefined
        ? undefined
        : new AlignvarError(`The upscale of ${name} timed out after ${o.timeout} ms`, 'ERR_TIMEOUT');
    const timer = timeoutCtl && setTimeout(() => timeoutCtl.abort(timeoutErr), o.timeout);
    const signal =
      timeoutCtl === undefined
        ? o.signal
        : o.signal === undefined
          ? timeoutCtl.signal
          : AbortSignal.any([o.signal, timeoutCtl.signal]);
    try {
      throwIfAborted(signal);
      const img = await decodeImage(input, { maxOutputPixels: this.options.maxOutputPixels, scale: this.scale, name });
      const width = img.width * this.scale;
      const height = img.height * this.scale;
      const format = o.format ?? defaultOutputFormat(img.format, img.compression);
      const maxSide = FORMAT_MAX_SIDE[format];
      if (!o.raw && maxSide !== undefined && (width > maxSide || height > maxSide)) {
        throw new ImageError(
          name,
          `the ${width}x${height} output is too large for ${format.toUpperCase()} (at most ${maxSide} pixels a side); choose another format`,
        );
      }
      const rgb = await upscaleRgbBatched(slot, this.#tileEngine(), img, {
        seed: o.seed ?? this.options.seed,
        cfg: this.options.cfg,
        topK: Math.min(this.options.topK, this.modelConfig.vocab),
        topP: this.options.topP,
        colorFix: this.options.colorFix,
        signal,
        onProgress: o.onProgress,
      });
      const pixels = composePixels(rgb, width, height, this.#upscaleAlpha(img), img.gray, img.depth);
      if (o.raw) {
        const data = Buffer.from(pixels.data.buffer, pixels.data.byteOffset, pixels.data.byteLength);
        return {
          data,
          info: { width, height, channels: pixels.channels, depth: pixels.depth === 16 ? 'ushort' : 'uchar' },
        };
      }
      throwIfAborted(signal);
      return await encodeImage(pixels, format, { quality: o.quality, metadata: img.metadata, name });
    } catch (err) {
      if (timeoutCtl?.signal.aborted && !o.signal?.aborted) throw timeoutErr;
      if (o.signal?.aborted && (err === o.signal.reason || (err instanceof Error && err.name === 'AbortError'))) {
        throw abortError(o.signal);
      }
      throw err;
    } finally {
      if (timer) clearTimeout(timer);
      slot.release();
    }
  }

  /**
   * Batching and queue counters, for health checks and metrics: calls queued and running,
   * tiles queued, batches and tiles run, mean batch size and engine throughput (see
   * {@link BatcherStats} for each field's meaning and unit).
   */
  stats(): BatcherStats {
    return this.#batcher.stats();
  }

  #tileEngine(): TileEngine {
    const e = this.#engine;
    return {
      lrSize: e.lrSize,
      hrSize: e.hrSize,
      scales: e.schedule.K,
      run: (tiles, n, options) => e.run(tiles, n, options),
    };
  }

  /** Enlarges the alpha plane with the centre-aligned lanczos3 resampler, at its own depth. */
  #upscaleAlpha(img: DecodedImage): Uint8Array | Uint16Array | undefined {
    if (img.alpha === undefined) return undefined;
    const w = img.width * this.scale;
    const h = img.height * this.scale;
    const out = img.alpha instanceof Uint16Array ? new Uint16Array(w * h) : new Uint8Array(w * h);
    resizeInto(img.alpha, img.width, img.height, 1, out, w, h, 'lanczos3');
    return out;
  }

  /**
   * Frees the model and the device. Waits for a running tile batch; queued calls and calls
   * made afterwards reject with `ERR_DISPOSED`. Calling it again does nothing.
   */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await this.#batcher.close();
    await this.#engine.dispose();
  }
}

/**
 * Loads a model and returns an {@link Upscaler}.
 *
 * @param options - Model path, device, sampling settings and limits; all optional
 *   (see {@link UpscalerOptions} for ranges and defaults).
 * @example
 * ```ts
 * const up = await createUpscaler({ device: 'auto' });
 * const png = await up.upscale('photo.png');
 * await up.dispose();
 * ```
 */
export function createUpscaler(options?: UpscalerOptions): Promise<Upscaler> {
  return Upscaler.create(options);
}
