/**
 * The upscale job: its data `{ input, output, options }`, its result, the checks a producer and
 * a worker share, and the default BullMQ job settings (attempts, backoff, retention, id).
 *
 * `options` is the serialisable part of the API's {@link UpscaleOptions} (`format`, `quality`,
 * `seed`), checked by the API's own validator (src/options.ts) so that the messages are the same.
 */
import { createHash } from 'node:crypto';
import { isAbsolute, resolve } from 'node:path';

import type { JobsOptions } from 'bullmq';

import { invalidOption } from '../errors.js';
import { type OutputFormat, type UpscaleProgress, validateUpscaleOptions } from '../options.js';

/** Name of every job this package adds (BullMQ job name). */
export const UPSCALE_JOB_NAME = 'upscale';

/** Queue name used when none is given. */
export const DEFAULT_QUEUE_NAME = 'alignvar';

/** Per-job options: the part of {@link UpscaleOptions} that travels through Redis. */
export interface UpscaleJobOptions {
  /**
   * Output format. Default: from the output path's extension (`.png`, `.jpg`, `.webp`, ...),
   * else the input's format, else PNG (as the API does).
   */
  format?: OutputFormat | undefined;
  /** Encoder quality for JPEG, WebP and AVIF: an integer between 1 and 100. */
  quality?: number | undefined;
  /** Sampler seed for this job: an integer between 0 and 2^53 - 1. Default: the worker's (0). */
  seed?: number | undefined;
}

/** The data of one upscale job. Paths are on storage every worker shares. */
export interface UpscaleJobData {
  /** Absolute path of the input image. */
  input: string;
  /** Absolute path of the output file (its folder is created when missing). */
  output: string;
  /** Encoding and seed for this job; all optional. */
  options?: UpscaleJobOptions | undefined;
}

/** What a finished job returns (BullMQ `returnvalue`). */
export interface UpscaleJobResult {
  /** The output path written (or found complete). */
  output: string;
  /** Output width in pixels. */
  width: number;
  /** Output height in pixels. */
  height: number;
  /** Time spent on the job by the worker, in milliseconds. */
  ms: number;
  /** Device of the worker that ran it: `'cpu'`, or `'cuda:N'` with the CUDA device index. */
  device: string;
  /** True when the output already existed and was complete, so nothing was computed. */
  skipped: boolean;
}

/** What a job reports with `job.updateProgress` (the API's progress, unchanged). */
export type UpscaleJobProgress = UpscaleProgress;

const JOB_KEYS: readonly string[] = ['input', 'output', 'options'];
const JOB_OPTION_KEYS: readonly string[] = ['format', 'quality', 'seed'];

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkPath(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.includes('\0')) {
    throw invalidOption(name, 'non-empty path string', value);
  }
  return value;
}

/**
 * Checks job data as the worker receives it (and as a producer sends it).
 *
 * @param data - Anything.
 * @param base - Folder that relative paths are resolved against; when undefined, relative
 *   paths are rejected (a worker cannot know the producer's working folder).
 * @returns The data with absolute paths and only the known option keys.
 * @throws {TypeError} `Expected <what> for <name> but received <value>`.
 */
export function validateJobData(data: unknown, base?: string): UpscaleJobData {
  if (!isPlainObject(data)) throw invalidOption('job data', 'object { input, output, options }', data);
  for (const key of Object.keys(data)) {
    if (!JOB_KEYS.includes(key)) throw invalidOption('job data key', `one of ${JOB_KEYS.join(', ')}`, key);
  }
  const paths = (['input', 'output'] as const).map((name) => {
    const path = checkPath(name, data[name]);
    if (isAbsolute(path)) return resolve(path);
    if (base === undefined) throw invalidOption(name, 'absolute path', path);
    return resolve(base, path);
  });
  const [input, output] = paths as [string, string];
  if (input === output) throw invalidOption('output', 'path other than the input', output);
  let options: UpscaleJobOptions | undefined;
  if (data.options !== undefined) {
    if (!isPlainObject(data.options)) throw invalidOption('options', 'object', data.options);
    for (const key of Object.keys(data.options)) {
      if (!JOB_OPTION_KEYS.includes(key)) {
        throw invalidOption('options key', `one of ${JOB_OPTION_KEYS.map((k) => JSON.stringify(k)).join(', ')}`, key);
      }
    }
    const o = validateUpscaleOptions(data.options);
    options = {};
    if (o.format !== undefined) options.format = o.format;
    if (o.quality !== undefined) options.quality = o.quality;
    if (o.seed !== undefined) options.seed = o.seed;
  }
  return options === undefined ? { input, output } : { input, output, options };
}

/**
 * The default job id: derived from the absolute output path, so that adding the same output
 * twice while the first is queued or running adds nothing (BullMQ ignores an existing id).
 *
 * @param output - Absolute output path.
 */
export function jobIdFor(output: string): string {
  return `out-${createHash('sha256').update(output).digest('hex').slice(0, 32)}`;
}

/** Attempts per job: the first run and two retries. */
export const DEFAULT_ATTEMPTS = 3;
/** First retry delay in ms; it doubles for each further retry. */
export const DEFAULT_BACKOFF_MS = 1000;

/**
 * Job settings used when the caller gives none: 3 attempts with exponential backoff from 1 s;
 * completed jobs kept for an hour (at most 10000), failed ones for a week, so that a producer
 * can still read their result or reason.
 */
export const DEFAULT_JOB_OPTIONS: Readonly<JobsOptions> = Object.freeze({
  attempts: DEFAULT_ATTEMPTS,
  backoff: { type: 'exponential', delay: DEFAULT_BACKOFF_MS },
  removeOnComplete: { age: 3600, count: 10_000 },
  removeOnFail: { age: 7 * 24 * 3600 },
});
