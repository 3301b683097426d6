/**
 * Options of {@link createServer} and their checks (with the API's validators and messages,
 * `Expected <what> for <name> but received <value>`).
 */
import { invalidOption } from '../errors.js';
import type { UpscaleOptions, UpscalerOptions } from '../options.js';
import { validateInteger } from '../options.js';
import type { QueueStats } from './metrics.js';

/** Default largest request body: 32 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024;
/** Default time limit of one upscale request: 120 s. */
export const DEFAULT_TIMEOUT_MS = 120_000;
/** Default `maxQueuedRequests` of an upscaler the server creates. */
export const DEFAULT_MAX_QUEUE = 64;
/** Largest accepted body limit and timeout (2^31 - 1). */
const MAX_INT32 = 2 ** 31 - 1;

/**
 * What the server needs of an upscaler ({@link Upscaler} has it): `upscale()` of encoded bytes,
 * and optionally `stats()` for the queue metrics and `Retry-After`.
 */
export interface ServeUpscaler {
  /** Upscales encoded image bytes into encoded image bytes. */
  upscale(input: Buffer, options: UpscaleOptions & { raw?: false | undefined }): Promise<Buffer>;
  /** Queue and batch counters. */
  stats?(): QueueStats;
  /** Frees the model (called by `close()` when the server created the upscaler). */
  dispose(): Promise<void>;
}

/** Options of {@link createServer}. Every field is optional. */
export interface ServerOptions {
  /** Interface to listen on. Default `'127.0.0.1'` (this machine only). */
  host?: string | undefined;
  /** TCP port: an integer between 0 and 65535, 0 = any free port. Default 8080. */
  port?: number | undefined;
  /**
   * Largest request body, in bytes: an integer between 1 and 2147483647. Default 33554432
   * (32 MiB). A larger body is answered 413 `ERR_BODY_TOO_LARGE` before it is read.
   */
  maxBodyBytes?: number | undefined;
  /**
   * Time limit of one upscale request in milliseconds (decode, queue wait, engine, encode): an
   * integer between 0 and 2147483647, 0 = none. Default 120000. Past it the call is cancelled
   * and answered 504 `ERR_TIMEOUT`.
   */
  timeoutMs?: number | undefined;
  /**
   * Options of the upscaler the server creates (model, device, batching, limits). Its
   * `maxQueuedRequests` defaults to 64 here: one more concurrent request is answered 503.
   * Ignored when `upscaler` is given.
   */
  upscalerOptions?: UpscalerOptions | undefined;
  /**
   * An upscaler to serve with instead (not disposed by `close()`); set its own
   * `maxQueuedRequests` to bound the queue.
   */
  upscaler?: ServeUpscaler | undefined;
  /**
   * fastify's logger: `false` (default) for none, `true` or pino options (`{ level: 'info' }`)
   * for one JSON line per request on stdout.
   */
  logger?: boolean | { level: string } | undefined;
}

/** {@link ServerOptions} after validation. */
export interface ResolvedServerOptions {
  host: string;
  port: number;
  maxBodyBytes: number;
  timeoutMs: number;
  upscalerOptions: UpscalerOptions;
  upscaler: ServeUpscaler | undefined;
  logger: boolean | { level: string };
}

const SERVER_KEYS = ['host', 'port', 'maxBodyBytes', 'timeoutMs', 'upscalerOptions', 'upscaler', 'logger'];

/**
 * Validates {@link ServerOptions} and fills in the defaults. The upscaler's own options are
 * checked by `createUpscaler`.
 *
 * @throws {TypeError} `Expected <what> for <name> but received <value>`.
 */
export function validateServerOptions(options: unknown): ResolvedServerOptions {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidOption('options', 'object', options);
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!SERVER_KEYS.includes(key)) {
      throw invalidOption('options key', `one of ${SERVER_KEYS.map((k) => JSON.stringify(k)).join(', ')}`, key);
    }
  }
  const host = o.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host.length === 0) throw invalidOption('host', 'non-empty string', o.host);
  const upscalerOptions = o.upscalerOptions ?? {};
  if (typeof upscalerOptions !== 'object' || upscalerOptions === null || Array.isArray(upscalerOptions)) {
    throw invalidOption('upscalerOptions', 'object', o.upscalerOptions);
  }
  const upscaler = o.upscaler;
  if (upscaler !== undefined && (typeof upscaler !== 'object' || upscaler === null || !('upscale' in upscaler))) {
    throw invalidOption('upscaler', 'Upscaler', upscaler);
  }
  const logger = o.logger ?? false;
  if (
    typeof logger !== 'boolean' &&
    !(typeof logger === 'object' && logger !== null && typeof (logger as { level?: unknown }).level === 'string')
  ) {
    throw invalidOption('logger', "boolean or { level: 'info' | 'warn' | ... }", logger);
  }
  return {
    host,
    port: validateInteger('port', o.port, 0, 65535, 8080),
    maxBodyBytes: validateInteger('maxBodyBytes', o.maxBodyBytes, 1, MAX_INT32, DEFAULT_MAX_BODY_BYTES),
    timeoutMs: validateInteger('timeoutMs', o.timeoutMs, 0, MAX_INT32, DEFAULT_TIMEOUT_MS),
    upscalerOptions: {
      ...(upscalerOptions as UpscalerOptions),
      maxQueuedRequests: (upscalerOptions as UpscalerOptions).maxQueuedRequests ?? DEFAULT_MAX_QUEUE,
    },
    upscaler: upscaler as ServeUpscaler | undefined,
    logger: logger as boolean | { level: string },
  };
}
