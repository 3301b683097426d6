/**
 * alignvar/queue: upscale workers and producers on a Redis queue (BullMQ).
 *
 * A worker ({@link createWorker}) takes jobs `{ input, output, options }` (paths on storage all
 * machines share) and runs them on one Upscaler; a producer ({@link openQueue},
 * {@link enqueueUpscale}, {@link waitForJobs}) adds them and can wait for their results.
 *
 * ```ts
 * import { openQueue, enqueueUpscale } from 'alignvar/queue';
 * const q = openQueue({ redis: 'redis://10.0.0.5:6379', queue: 'upscale' });
 * await enqueueUpscale(q, { input: '/shared/in/a.jpg', output: '/shared/out/a.jpg', options: { quality: 90 } });
 * await q.close();
 * ```
 *
 * Importing this module does not load the native addon; {@link createWorker} does.
 */
export {
  DEFAULT_ATTEMPTS,
  DEFAULT_BACKOFF_MS,
  DEFAULT_QUEUE_NAME,
  UPSCALE_JOB_NAME,
  jobIdFor,
  validateJobData,
  type UpscaleJobData,
  type UpscaleJobOptions,
  type UpscaleJobProgress,
  type UpscaleJobResult,
} from './job.js';
export {
  enqueueUpscale,
  openQueue,
  waitForJobs,
  type EnqueueOptions,
  type JobOutcome,
  type UpscaleJob,
  type UpscaleQueue,
  type UpscaleQueueOptions,
  type WaitOptions,
} from './producer.js';
export {
  DEFAULT_LOCK_DURATION_MS,
  MAX_CONCURRENCY,
  createWorker,
  type UpscaleWorker,
  type UpscaleWorkerCloseOptions,
  type UpscaleWorkerOptions,
} from './worker.js';
export { validateRedisUrl, type RedisTarget } from './connection.js';
export { QUEUE_TEMP_SUFFIX, isOutputComplete } from './output.js';
