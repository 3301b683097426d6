/**
 * The upscale worker: a BullMQ Worker whose processor feeds every job into ONE Upscaler, so that
 * with `concurrency` > 1 the tiles of several jobs share engine batches.
 *
 * Per job: check the data (same validator as the API), return at once when the output already
 * exists and is complete, remove temporary files an earlier attempt left, upscale with progress
 * (`job.updateProgress`), write the output atomically, return `{ output, width, height, ms,
 * device }`. A bad image or bad options fail the job at once (UnrecoverableError, no retry);
 * anything else is retried by BullMQ (attempts with backoff). {@link UpscaleWorker.close} drains:
 * no new jobs, running ones finish, and past the drain timeout they are aborted and moved back
 * to the waiting list for another worker.
 */
import { type Job, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import sharp from 'sharp';

import { invalidOption } from '../errors.js';
import type { UpscalerOptions } from '../options.js';
import { Upscaler, createUpscaler } from '../upscaler.js';
import { type RedisTarget, closeClient, redisClient } from './connection.js';
import {
  DEFAULT_QUEUE_NAME,
  type UpscaleJobData,
  type UpscaleJobProgress,
  type UpscaleJobResult,
  validateJobData,
} from './job.js';
import { expectedOutput, formatOfPath, isOutputComplete, removeStaleTemps, writeOutputAtomic } from './output.js';

/** Largest worker concurrency accepted. */
export const MAX_CONCURRENCY = 64;
/** Default job lock duration, ms: a killed worker's job is taken over after about this long. */
export const DEFAULT_LOCK_DURATION_MS = 30_000;
/** Least time between two progress updates of one job, ms (each is a Redis round trip). */
const PROGRESS_INTERVAL_MS = 200;

/** Options of {@link createWorker}. */
export interface UpscaleWorkerOptions {
  /** Redis URL (`redis://host:port`) or an ioredis client (not closed by the worker). */
  redis: RedisTarget;
  /** Queue name. Default `'alignvar'`. */
  queue?: string | undefined;
  /**
   * Jobs run at once, all on the one upscaler (their tiles share batches): an integer between 1
   * and 64. Default 1.
   */
  concurrency?: number | undefined;
  /**
   * The upscaler to run jobs on (shared, not disposed by the worker), or the options of one
   * that the worker creates and disposes (`model`, `device`, `gpu`, ...). Default: all defaults.
   */
  upscaler?: Upscaler | UpscalerOptions | undefined;
  /**
   * Job lock duration in ms, an integer between 1000 and 3600000: the worker renews the lock of
   * each running job every half of it, and when a worker dies its jobs go back to the queue
   * once their lock has expired (found by the others' stalled-job check, which runs at this
   * interval too). Default 30000.
   */
  lockDuration?: number | undefined;
  /** Receives one line per event (start, job done/failed/skipped, stalled, Redis errors). */
  log?: ((line: string) => void) | undefined;
}

/** Options of {@link UpscaleWorker.close}. */
export interface UpscaleWorkerCloseOptions {
  /**
   * Longest wait, in ms, for running jobs to finish before they are aborted and handed back to
   * the queue (moved to waiting, attempts unchanged): a number >= 0. Default: wait for ever.
   */
  drainTimeout?: number | undefined;
}

/** A running upscale worker. */
export interface UpscaleWorker {
  /** The BullMQ worker (events: `completed`, `failed`, `progress`, `error`, ...). */
  readonly worker: Worker<UpscaleJobData, UpscaleJobResult>;
  /** The upscaler every job runs on. */
  readonly upscaler: Upscaler;
  /** The device jobs run on: `'cpu'` or `'cuda:N'`. */
  readonly device: string;
  /**
   * Stops taking jobs, lets running ones finish (or hands them back past `drainTimeout`),
   * closes the Redis connections and disposes an upscaler the worker created. Calling it again
   * returns the same promise.
   *
   * @returns How many running jobs were handed back to the queue.
   */
  close(options?: UpscaleWorkerCloseOptions): Promise<{ handedBack: number }>;
}

/** Whether a thrown value is an ImageError or an option TypeError of this package. */
function isInputError(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
  return code === 'ERR_INVALID_IMAGE' || code === 'ERR_INVALID_OPTION';
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Starts a worker that takes upscale jobs from a BullMQ queue.
 *
 * @param options - Redis, queue, concurrency, upscaler, lock duration, log.
 * @returns The worker, already taking jobs.
 * @throws {TypeError} For an invalid option.
 * @throws What {@link createUpscaler} throws when the upscaler cannot be created.
 * @example
 * ```ts
 * import { createWorker } from 'alignvar/queue';
 * const w = await createWorker({ redis: 'redis://10.0.0.5:6379', queue: 'upscale', concurrency: 4, upscaler: { gpu: 1 } });
 * process.once('SIGTERM', () => void w.close({ drainTimeout: 60_000 }));
 * ```
 */
export async function createWorker(options: UpscaleWorkerOptions): Promise<UpscaleWorker> {
  if (typeof options !== 'object' || options === null) throw invalidOption('options', 'object', options);
  const queue = options.queue ?? DEFAULT_QUEUE_NAME;
  if (typeof queue !== 'string' || queue.length === 0 || queue.includes(':')) {
    throw invalidOption('queue', 'non-empty name without ":"', queue);
  }
  const concurrency = options.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY) {
    throw invalidOption('concurrency', `integer between 1 and ${MAX_CONCURRENCY}`, options.concurrency);
  }
  const lockDuration = options.lockDuration ?? DEFAULT_LOCK_DURATION_MS;
  if (!Number.isInteger(lockDuration) || lockDuration < 1000 || lockDuration > 3_600_000) {
    throw invalidOption('lockDuration', 'integer between 1000 and 3600000', options.lockDuration);
  }
  if (options.log !== undefined && typeof options.log !== 'function')
    throw invalidOption('log', 'function', options.log);
  const log = options.log ?? ((): void => undefined);
  const conn = redisClient(options.redis);

  let up: Upscaler;
  let ownUpscaler = false;
  try {
    if (options.upscaler instanceof Upscaler) {
      up = options.upscaler;
    } else {
      up = await createUpscaler(options.upscaler);
      ownUpscaler = true;
    }
  } catch (err) {
    await closeClient(conn);
    throw err;
  }
  const device = up.device === 'cuda' ? `cuda:${up.options.gpu}` : 'cpu';
  log(
    `model ${up.model} on ${device}` +
      (up.fallbackReason ? ` (device auto: CUDA not used: ${up.fallbackReason})` : '') +
      `, queue ${queue}, concurrency ${concurrency}`,
  );

  let handingBack = false;
  let handedBack = 0;

  const processor = async (
    job: Job<UpscaleJobData, UpscaleJobResult>,
    token: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<UpscaleJobResult> => {
    const t0 = performance.now();
    const handBack = async (): Promise<never> => {
      await job.moveToWait(token);
      handedBack++;
      log(`job ${job.id} handed back to the queue (drain timeout)`);
      throw new WaitingError();
    };
    // A job fetched together with the previous one's completion can start after the drain
    // timeout has cancelled the running ones: it goes straight back.
    if (handingBack && token !== undefined) return handBack();
    let data: UpscaleJobData;
    try {
      data = validateJobData(job.data);
    } catch (err) {
      log(`job ${job.id} failed: ${message(err)}`);
      throw new UnrecoverableError(message(err));
    }
    const format = data.options?.format ?? formatOfPath(data.output);
    // An earlier attempt (or another worker whose job stalled) may have written it already.
    const expected = await expectedOutput(data.input, up.scale, format).catch(() => undefined);
    const done = expected && (await isOutputComplete(data.output, expected));
    if (done) {
      log(`job ${job.id} skipped: ${data.output} is already complete`);
      return { output: data.output, ...done, ms: Math.round(performance.now() - t0), device, skipped: true };
    }
    await removeStaleTemps(data.output);
    let lastSent = 0;
    const onProgress = (p: UpscaleJobProgress): void => {
      const now = Date.now();
      if (p.scalesDone < p.scalesTotal && now - lastSent < PROGRESS_INTERVAL_MS) return;
      lastSent = now;
      job.updateProgress({ ...p }).catch(() => undefined);
    };
    try {
      const out = await up.upscale(data.input, {
        format,
        quality: data.options?.quality,
        seed: data.options?.seed,
        signal,
        onProgress,
      });
      const meta = await sharp(out).metadata();
      await writeOutputAtomic(data.output, out);
      const ms = Math.round(performance.now() - t0);
      log(`job ${job.id} wrote ${data.output} (${meta.width}x${meta.height}, ${ms} ms)`);
      return { output: data.output, width: meta.width, height: meta.height, ms, device, skipped: false };
    } catch (err) {
      if (handingBack && signal?.aborted && token !== undefined) return handBack();
      log(`job ${job.id} failed (attempt ${job.attemptsMade + 1}): ${message(err)}`);
      if (isInputError(err)) throw new UnrecoverableError(message(err));
      throw err;
    }
  };

  const worker = new Worker<UpscaleJobData, UpscaleJobResult>(queue, processor, {
    connection: conn.client,
    concurrency,
    lockDuration,
    stalledInterval: lockDuration,
    maxStalledCount: 1,
  });
  let lastError = 0;
  worker.on('error', (err) => {
    // While Redis is down every command fails the same way: one line per 5 s is enough.
    if (Date.now() - lastError < 5000) return;
    lastError = Date.now();
    log(`redis: ${message(err)} (retrying)`);
  });
  worker.on('stalled', (jobId) =>
    log(`job ${jobId} stalled (its worker stopped renewing the lock): back in the queue`),
  );

  let closing: Promise<{ handedBack: number }> | undefined;
  const close = (closeOptions: UpscaleWorkerCloseOptions = {}): Promise<{ handedBack: number }> => {
    if (closing) return closing;
    const drainTimeout = closeOptions.drainTimeout ?? Infinity;
    if (typeof drainTimeout !== 'number' || Number.isNaN(drainTimeout) || drainTimeout < 0) {
      return Promise.reject(invalidOption('drainTimeout', 'number >= 0 (ms)', closeOptions.drainTimeout));
    }
    closing = (async () => {
      let timer: NodeJS.Timeout | undefined;
      if (Number.isFinite(drainTimeout)) {
        timer = setTimeout(() => {
          handingBack = true;
          worker.cancelAllJobs('drain timeout');
        }, drainTimeout);
      }
      try {
        await worker.close();
      } finally {
        clearTimeout(timer);
        const st = up.stats();
        log(`engine: ${st.batchesRun} batches, ${st.tilesRun} tiles, mean batch ${st.meanBatchSize.toFixed(2)} tiles`);
        if (ownUpscaler) await up.dispose().catch(() => undefined);
        await closeClient(conn);
      }
      return { handedBack };
    })();
    return closing;
  };

  return { worker, upscaler: up, device, close };
}
