/**
 * Public option types, their defaults, and every user-facing check of the API (STYLE rule 6).
 *
 * Each validator throws the TypeError of {@link invalidOption}, whose message reads
 * `Expected <what> for <name> but received <value>`, e.g.
 * `Expected integer between 1 and 64 for tileBatch but received 0`. `undefined` always means
 * "use the default"; `null` is rejected like any other wrong value. Unknown option names are
 * rejected too, so that a typo (`top_k`) does not silently fall back to a default.
 */
import { invalidOption } from './errors.js';

/** Compute device: `'auto'` uses CUDA when available and falls back to the CPU. */
export type Device = 'auto' | 'cpu' | 'cuda';

/**
 * Colour correction of each model output tile against the bicubic-enlarged input (spec 2.2):
 * `'adain'` matches per-channel mean and standard deviation (the reference's default),
 * `'wavelet'` keeps the model's high-frequency bands and takes the lowest band (5 levels of a
 * dilated blur) from the enlarged input, `'none'` keeps the model's colours.
 */
export type ColorFix = 'adain' | 'wavelet' | 'none';

/** Image formats the upscaler writes. */
export type OutputFormat = 'png' | 'jpeg' | 'webp' | 'tiff' | 'avif' | 'gif';

/** Every {@link Device}, in documentation order. */
export const DEVICES: readonly Device[] = Object.freeze(['auto', 'cpu', 'cuda'] as const);
/** Every {@link ColorFix} mode. */
export const COLOR_FIXES: readonly ColorFix[] = Object.freeze(['adain', 'wavelet', 'none'] as const);
/** Every {@link OutputFormat}. */
export const OUTPUT_FORMATS: readonly OutputFormat[] = Object.freeze([
  'png',
  'jpeg',
  'webp',
  'tiff',
  'avif',
  'gif',
] as const);

/** Largest seed: the largest integer a JavaScript number holds exactly (2^53 - 1). */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;
/** Largest CUDA device index accepted for `gpu`. */
export const MAX_GPU = 255;
/** Largest classifier-free guidance weight accepted. */
export const MAX_CFG = 100;
/** Largest top-k accepted (larger values keep the whole vocabulary, like 0). */
export const MAX_TOP_K = 1_000_000;
/** Largest number of tiles run through the model at once. */
export const MAX_TILE_BATCH = 64;
/** Default output pixel limit: 16384 x 16384. */
export const DEFAULT_MAX_OUTPUT_PIXELS = 16384 * 16384;
/** Largest accepted `maxOutputPixels`: 32768 x 32768. */
export const MAX_OUTPUT_PIXELS_LIMIT = 32768 * 32768;
/** Guidance weight used when the model file's metadata names none (spec 5.1). */
export const DEFAULT_CFG = 6.0;
/** Longest `maxBatchDelayMs` accepted: 60 s. */
export const MAX_BATCH_DELAY_MS = 60_000;
/** Default `maxBatchDelayMs`: how long a batch that is not full waits for more tiles. */
export const DEFAULT_MAX_BATCH_DELAY_MS = 2;
/** Largest `maxQueuedTiles` / `maxQueuedRequests` accepted (2^31 - 1; leave unset for no bound). */
export const MAX_QUEUE_BOUND = 2 ** 31 - 1;
/** Longest per-call `timeout` accepted, in ms (2^31 - 1, the longest Node timer). */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** KV cache dtypes ({@link UpscalerOptions.kvCache}). */
export const KV_CACHE_DTYPES = ['f32', 'bf16'] as const;
/** A KV cache dtype. */
export type KvCacheDtype = (typeof KV_CACHE_DTYPES)[number];

/** Options of {@link createUpscaler}. Every field is optional. */
export interface UpscalerOptions {
  /**
   * Path of an AlignVAR `.safetensors` model file.
   * Default: the embedded model `models/alignvar-default.safetensors` of this package.
   */
  model?: string | undefined;
  /** Compute device. Default `'auto'` (CUDA when usable, else CPU, with the reason logged). */
  device?: Device | undefined;
  /**
   * CUDA device index (CUDA's numbering, within `CUDA_VISIBLE_DEVICES` when it is set): an
   * integer between 0 and 255. Default 0. Used when the device is `'cuda'` or `'auto'` picks CUDA;
   * ignored on the CPU.
   */
  gpu?: number | undefined;
  /**
   * KV cache dtype of the transformer: `'f32'` (default) or `'bf16'`. `'bf16'` halves the
   * cache (at d24 with guidance about 1.9 GB per image in f32), so larger tile batches fit a
   * GPU; k and v are rounded to bf16 once, when written, which moves logits by about 1e-3
   * relative and can change a few greedy tokens (0.99 agreement measured on photos).
   */
  kvCache?: KvCacheDtype | undefined;
  /**
   * Run VARSR's diffusion refiner (spec 6) when the model file holds one (a converted
   * `VARSR.pth`; see {@link ModelInfo.hasRefiner}): 10 diffusion steps per token after the last
   * scale, as VARSR's published results use. Default true; false skips the stage (and leaves its
   * weights unloaded), giving VARSR's transformer output alone. AlignVAR models have no refiner.
   */
  refiner?: boolean | undefined;
  /**
   * Seed of the sampler's counter-based RNG: an integer between 0 and 9007199254740991
   * (2^53 - 1). Default 0.
   * With the default greedy sampling (`topK` 1) the output does not depend on it.
   */
  seed?: number | undefined;
  /**
   * Classifier-free guidance weight at the last scale (it grows linearly from 0 over the
   * scales): a finite number between 0 and 100. Default: the model file's `cfg` metadata
   * value when present, else 6.0.
   */
  cfg?: number | undefined;
  /**
   * Top-k sampling: keep the k most likely tokens; an integer between 0 and 1000000, where 0
   * disables top-k (values above the model's vocabulary size also keep every token).
   * Default 1 (greedy decoding).
   */
  topK?: number | undefined;
  /**
   * Top-p (nucleus) sampling: keep the smallest set of tokens whose probability reaches p; a
   * number between 0 and 1, where 0 disables it. Default 0.75.
   */
  topP?: number | undefined;
  /**
   * Tiles run through the model at once: an integer between 1 and 64. Default 4.
   * Larger batches are faster on GPUs and need more memory; the output does not depend on it.
   * The default of `maxBatchTiles`, which takes precedence when both are given.
   */
  tileBatch?: number | undefined;
  /**
   * Dynamic batching: most tiles in one engine batch, taken round-robin from all concurrent
   * `upscale()` calls on this upscaler (one tile per call in turn, so a large image does not
   * starve small ones): an integer between 1 and 64. Default: `tileBatch` (4). The output
   * bytes do not depend on it nor on which calls share a batch.
   */
  maxBatchTiles?: number | undefined;
  /**
   * Dynamic batching: longest wait, in milliseconds, for more tiles before a batch that is not
   * full is started (counted from when its oldest tile was queued; a full batch starts at
   * once): an integer between 0 and 60000. Default 2.
   */
  maxBatchDelayMs?: number | undefined;
  /**
   * Queue bound: most tiles waiting for the engine (queued, not yet in a batch) over all calls:
   * an integer between 1 and 2147483647. A call whose tiles would pass it rejects with
   * `AlignvarError` code `'ERR_QUEUE_FULL'` right after its image header is read, unless
   * nothing else is queued (so an image larger than the bound still runs, alone). Default: no
   * bound.
   */
  maxQueuedTiles?: number | undefined;
  /**
   * Queue bound: most `upscale()` calls in flight at once (queued + running in
   * {@link Upscaler.stats}: from the call until its last tile leaves the engine): an integer
   * between 1 and 2147483647. One more call rejects at once with `AlignvarError` code
   * `'ERR_QUEUE_FULL'`, before its input is read. Default: no bound.
   */
  maxQueuedRequests?: number | undefined;
  /**
   * Colour correction of each tile (see {@link ColorFix}). Default: the model's metadata key
   * `color_fix` when it names a mode, else `'adain'`.
   */
  colorFix?: ColorFix | undefined;
  /**
   * Largest output image accepted, in pixels (output width x height): an integer between 1 and
   * 1073741824 (32768 x 32768). Default 268435456 (16384 x 16384). Inputs whose x4 output would
   * be larger are rejected before they are decoded.
   */
  maxOutputPixels?: number | undefined;
}

/**
 * Progress of one {@link Upscaler.upscale} call, reported after every model scale step and
 * after every finished tile batch.
 */
export interface UpscaleProgress {
  /** Tiles finished so far (0 to `tilesTotal`). */
  tilesDone: number;
  /** Tiles of this image. */
  tilesTotal: number;
  /** Scale steps finished so far, counted per tile (0 to `scalesTotal`). */
  scalesDone: number;
  /** Tiles x scales per tile: `scalesDone / scalesTotal` is the overall fraction done. */
  scalesTotal: number;
}

/** Options of one {@link Upscaler.upscale} call. Every field is optional. */
export interface UpscaleOptions {
  /**
   * Cancels the call: its tiles still queued leave the queue at once and the promise rejects
   * with an error named `'AbortError'` (code `'ABORT_ERR'`). A running engine batch stops
   * between scale steps when all of its tiles belong to cancelled calls; otherwise it finishes
   * for the other calls and this call's tiles are dropped.
   */
  signal?: AbortSignal | undefined;
  /**
   * Time limit of the call in milliseconds, from the call to the result (decode, queue wait,
   * engine, encode): an integer between 1 and 2147483647. Past it the call is cancelled like an
   * aborted `signal` and rejects with `AlignvarError` code `'ERR_TIMEOUT'`. Default: none.
   */
  timeout?: number | undefined;
  /**
   * Called after every scale step of every tile batch and after every finished batch, on the
   * main thread; exceptions it throws abort the call.
   */
  onProgress?: ((progress: UpscaleProgress) => void) | undefined;
  /**
   * Output format. Default: the input's format when it is one of {@link OutputFormat}
   * (HEIF/AVIF input gives `'avif'`), otherwise `'png'`. Ignored when `raw` is true.
   */
  format?: OutputFormat | undefined;
  /**
   * Encoder quality for `'jpeg'`, `'webp'` and `'avif'`: an integer between 1 and 100.
   * Default 95 for JPEG and WebP, 80 for AVIF. Ignored for the other formats.
   */
  quality?: number | undefined;
  /** Seed for this call only: an integer between 0 and 2^53 - 1. Default: the upscaler's. */
  seed?: number | undefined;
  /**
   * Return raw interleaved pixels `{ data, info }` instead of an encoded image. Default false.
   */
  raw?: boolean | undefined;
}

/** {@link UpscalerOptions} after validation, defaults filled in (`cfg` may await the model). */
export interface ResolvedUpscalerOptions {
  model: string | undefined;
  device: Device;
  gpu: number;
  kvCache: KvCacheDtype;
  refiner: boolean;
  seed: number;
  cfg: number | undefined;
  topK: number;
  topP: number;
  tileBatch: number;
  maxBatchTiles: number;
  maxBatchDelayMs: number;
  /** `Infinity` when unbounded. */
  maxQueuedTiles: number;
  /** `Infinity` when unbounded. */
  maxQueuedRequests: number;
  /** Undefined until the model's default is known (see {@link UpscalerOptions.colorFix}). */
  colorFix: ColorFix | undefined;
  maxOutputPixels: number;
}

/** {@link UpscaleOptions} after validation. */
export interface ResolvedUpscaleOptions {
  signal: AbortSignal | undefined;
  timeout: number | undefined;
  onProgress: ((progress: UpscaleProgress) => void) | undefined;
  format: OutputFormat | undefined;
  quality: number | undefined;
  seed: number | undefined;
  raw: boolean;
}

const UPSCALER_KEYS: readonly string[] = [
  'model',
  'device',
  'gpu',
  'kvCache',
  'refiner',
  'seed',
  'cfg',
  'topK',
  'topP',
  'tileBatch',
  'colorFix',
  'maxOutputPixels',
  'maxBatchTiles',
  'maxBatchDelayMs',
  'maxQueuedTiles',
  'maxQueuedRequests',
];
const UPSCALE_KEYS: readonly string[] = ['signal', 'timeout', 'onProgress', 'format', 'quality', 'seed', 'raw'];

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Quotes each choice: `"a", "b", "c"`. */
function quoted(choices: readonly string[]): string {
  return choices.map((c) => JSON.stringify(c)).join(', ');
}

/**
 * Checks an integer option.
 * @returns the value, or `fallback` when it is `undefined`.
 */
export function validateInteger<F extends number | undefined>(
  name: string,
  value: unknown,
  min: number,
  max: number,
  fallback: F,
): number | F {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidOption(name, `integer between ${min} and ${max}`, value);
  }
  return value;
}

/**
 * Checks a finite number option in `[min, max]`.
 * @returns the value, or `fallback` when it is `undefined`.
 */
export function validateNumber<F extends number | undefined>(
  name: string,
  value: unknown,
  min: number,
  max: number,
  fallback: F,
): number | F {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw invalidOption(name, `number between ${min} and ${max}`, value);
  }
  return value;
}

/**
 * Checks a string option against a fixed set of choices.
 * @returns the value, or `fallback` when it is `undefined`.
 */
export function validateChoice<T extends string, F extends T | undefined>(
  name: string,
  value: unknown,
  choices: readonly T[],
  fallback: F,
): T | F {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw invalidOption(name, `one of ${quoted(choices)}`, value);
  }
  return value as T;
}

/** A boolean option, or `fallback` when undefined. */
function validateBooleanOption(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw invalidOption(name, 'boolean', value);
  return value;
}

function validateKeys(name: string, options: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw invalidOption(`${name} key`, `one of ${quoted(known)}`, key);
  }
}

/**
 * Validates the options of {@link createUpscaler} and fills in the defaults.
 *
 * @param options - The user's options object, or `undefined` for all defaults.
 * @returns The resolved options; `cfg` stays `undefined` when not given (the model decides).
 * @throws {TypeError} `Expected <what> for <name> but received <value>` for the first invalid option.
 */
export function validateUpscalerOptions(options: unknown): ResolvedUpscalerOptions {
  if (options === undefined) options = {};
  if (!isPlainObject(options)) throw invalidOption('options', 'object', options);
  validateKeys('options', options, UPSCALER_KEYS);
  const model = options.model;
  if (model !== undefined && (typeof model !== 'string' || model.length === 0)) {
    throw invalidOption('model', 'non-empty string (path of a .safetensors file)', model);
  }
  const tileBatch = validateInteger('tileBatch', options.tileBatch, 1, MAX_TILE_BATCH, 4);
  return {
    model,
    device: validateChoice('device', options.device, DEVICES, 'auto'),
    gpu: validateInteger('gpu', options.gpu, 0, MAX_GPU, 0),
    kvCache: validateChoice('kvCache', options.kvCache, KV_CACHE_DTYPES, 'f32'),
    refiner: validateBooleanOption('refiner', options.refiner, true),
    seed: validateInteger('seed', options.seed, 0, MAX_SEED, 0),
    cfg: validateNumber('cfg', options.cfg, 0, MAX_CFG, undefined),
    topK: validateInteger('topK', options.topK, 0, MAX_TOP_K, 1),
    topP: validateNumber('topP', options.topP, 0, 1, 0.75),
    tileBatch,
    maxBatchTiles: validateInteger('maxBatchTiles', options.maxBatchTiles, 1, MAX_TILE_BATCH, tileBatch),
    maxBatchDelayMs: validateInteger(
      'maxBatchDelayMs',
      options.maxBatchDelayMs,
      0,
      MAX_BATCH_DELAY_MS,
      DEFAULT_MAX_BATCH_DELAY_MS,
    ),
    maxQueuedTiles: validateInteger('maxQueuedTiles', options.maxQueuedTiles, 1, MAX_QUEUE_BOUND, Infinity),
    maxQueuedRequests: validateInteger('maxQueuedRequests', options.maxQueuedRequests, 1, MAX_QUEUE_BOUND, Infinity),
    colorFix: validateChoice('colorFix', options.colorFix, COLOR_FIXES, undefined),
    maxOutputPixels: validateInteger(
      'maxOutputPixels',
      options.maxOutputPixels,
      1,
      MAX_OUTPUT_PIXELS_LIMIT,
      DEFAULT_MAX_OUTPUT_PIXELS,
    ),
  };
}

/**
 * Validates the options of one {@link Upscaler.upscale} call.
 *
 * @param options - The user's options object, or `undefined`.
 * @returns The resolved options (unset fields stay `undefined`, `raw` defaults to false).
 * @throws {TypeError} `Expected <what> for <name> but received <value>` for the first invalid option.
 */
export function validateUpscaleOptions(options: unknown): ResolvedUpscaleOptions {
  if (options === undefined) options = {};
  if (!isPlainObject(options)) throw invalidOption('options', 'object', options);
  validateKeys('options', options, UPSCALE_KEYS);
  const { signal, onProgress, raw } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidOption('signal', 'AbortSignal', signal);
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    throw invalidOption('onProgress', 'function', onProgress);
  }
  if (raw !== undefined && typeof raw !== 'boolean') throw invalidOption('raw', 'boolean', raw);
  return {
    signal,
    timeout: validateInteger('timeout', options.timeout, 1, MAX_TIMEOUT_MS, undefined),
    onProgress: onProgress as ((progress: UpscaleProgress) => void) | undefined,
    format: validateChoice('format', options.format, OUTPUT_FORMATS, undefined),
    quality: validateInteger('quality', options.quality, 1, 100, undefined),
    seed: validateInteger('seed', options.seed, 0, MAX_SEED, undefined),
    raw: raw ?? false,
  };
}
