/**
 * alignvar: x4 image super-resolution with AlignVAR.
 *
 * ```ts
 * import { createUpscaler } from 'alignvar';
 * const up = await createUpscaler();
 * const png = await up.upscale('photo.png');
 * await up.dispose();
 * ```
 *
 * Importing this module does not load the native addon; {@link createUpscaler} and
 * {@link backendInfo} do.
 */
export {
  DEFAULT_MODEL_PATH,
  DEFAULT_MODEL_RELATIVE_PATH,
  Upscaler,
  backendInfo,
  createUpscaler,
  inspectModel,
  type ModelInfo,
  type RawImage,
  type RawImageInfo,
} from './upscaler.js';
export {
  COLOR_FIXES,
  DEFAULT_CFG,
  DEFAULT_MAX_OUTPUT_PIXELS,
  DEVICES,
  OUTPUT_FORMATS,
  type ColorFix,
  type Device,
  type OutputFormat,
  type UpscaleOptions,
  type UpscaleProgress,
  type UpscalerOptions,
} from './options.js';
export { ImageError, type ImageErrorReason, type ImageInput } from './image/io.js';
export { AlignvarError, NativeError, WeightsError } from './errors.js';
export { escapeControl } from './text.js';
export type { BatcherStats as UpscalerStats } from './batch/batcher.js';
export type { ModelConfig } from './model/config.js';
export {
  CONVERT_DTYPES,
  ConvertError,
  convertCheckpoint,
  type ConvertDType,
  type ConvertOptions,
  type ConvertResult,
} from './convert/index.js';
export {
  createServer,
  startServer,
  type AlignvarServer,
  type QueueStats,
  type ServeUpscaler,
  type ServerOptions,
} from './server/index.js';
export type { BackendInfo, DeviceInfo } from './binding/types.js';
