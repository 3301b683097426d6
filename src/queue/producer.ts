/**
 * The producer side: open a queue, add upscale jobs, and wait for them (progress, results,
 * failure reasons) through BullMQ's QueueEvents, with a slow poll of the job states as a
 * backstop (an event missed while Redis restarted must not make a wait hang).
 */
import { type Job, Queue, QueueEvents } from 'bullmq';

import { invalidOption } from '../errors.js';
import { type RedisTarget, closeClient, redisClient } from './connection.js';
import {
  DEFAULT_BACKOFF_MS,
  DEFAULT_JOB_OPTIONS,
  DEFAULT_QUEUE_NAME,
  UPSCALE_JOB_NAME,
  type UpscaleJobData,
  type UpscaleJobProgress,
  type UpscaleJobResult,
  jobIdFor,
  validateJobData,
} from './job.js';

/** Options of {@link openQueue}. */
export interface UpscaleQueueOptions {
  /** Redis URL (`redis://host:port`) or an ioredis client (not closed by {@link UpscaleQueue.close}). */
  redis: RedisTarget;
  /** Queue name. Default `'alignvar'`. */
  queue?: string | undefined;
}

/** An open upscale queue. */
export interface UpscaleQueue {
  /** The queue name. */
  readonly name: string;
  /** The BullMQ queue (counts, pause, clean, ...). */
  readonly queue: Queue<UpscaleJobData, UpscaleJobResult>;
  /** Closes the queue and its connection. */
  close(): Promise<void>;
}

/** An upscale job as BullMQ returns it. */
export type UpscaleJob = Job<UpscaleJobData, UpscaleJobResult>;

/** Options of {@link enqueueUpscale}. */
export interface EnqueueOptions {
  /**
   * Job id. Default: derived from the absolute output path, so that the same output is never
   * queued twice at once. A finished (completed or failed) job of that id is replaced.
   */
  jobId?: string | undefined;
  /** Attempts (first run + retries): an integer between 1 and 100. Default 3. */
  attempts?: number | undefined;
  /** First retry delay in ms (doubling after each retry): an integer between 0 and 3600000. Default 1000. */
  backoffMs?: number | undefined;
  /** BullMQ priority: 0 (default, first come first served) or 1 (highest) to 2097152. */
  priority?: number | undefined;
}

/** How one waited-for job ended. */
export interface JobOutcome {
  /** Job id. */
  id: string;
  /** Its data. */
  data: UpscaleJobData;
  /** The result when it completed. */
  result?: UpscaleJobResult | undefined;
  /** The failure reason when it failed (the ImageError message for a bad image). */
  error?: string | undefined;
}

/** Options of {@link waitForJobs}. */
export interface WaitOptions {
  /** Called with each job's progress event. */
  onProgress?: ((job: UpscaleJob, progress: UpscaleJobProgress) => void) | undefined;
  /** Called once per job when it completes or fails for good. */
  onSettled?: ((outcome: JobOutcome) => void) | undefined;
  /** Stops waiting (the jobs stay queued); the promise rejects with an AbortError. */
  signal?: AbortSignal | undefined;
}

/** How often pending jobs' states are polled as a backstop to events, ms. */
const POLL_MS = 2000;
/** Most pending jobs read per poll. */
const POLL_BATCH = 500;

function checkQueueName(queue: unknown): string {
  if (typeof queue !== 'string' || queue.length === 0 || queue.includes(':')) {
    throw invalidOption('queue', 'non-empty name without ":"', queue);
  }
  return queue;
}

/**
 * Opens an upscale queue for adding jobs.
 *
 * @example
 * ```ts
 * import { openQueue, enqueueUpscale } from 'alignvar/queue';
 * const q = openQueue({ redis: 'redis://10.0.0.5:6379', queue: 'upscale' });
 * await enqueueUpscale(q, { input: '/shared/in/a.jpg', output: '/shared/out/a.jpg' });
 * await q.close();
 * ```
 */
export function openQueue(options: UpscaleQueueOptions): UpscaleQueue {
  if (typeof options !== 'object' || options === null) throw invalidOption('options', 'object', options);
  const name = checkQueueName(options.queue ?? DEFAULT_QUEUE_NAME);
  const conn = redisClient(options.redis);
  const queue = new Queue<UpscaleJobData, UpscaleJobResult>(name, { connection: conn.client });
  queue.on('error', () => undefined);
  return {
    name,
    queue,
    async close() {
      await queue.close().catch(() => undefined);
      await closeClient(conn);
    },
  };
}

/**
 * Adds one upscale job. Relative paths are resolved against this process's working folder;
 * the data is checked with the worker's validator, so bad options fail here, not in a worker.
 *
 * @returns The job (the existing one when a job for the same output is still queued or running).
 * @throws {TypeError} For invalid data or options.
 */
export async function enqueueUpscale(
  queue: UpscaleQueue,
  data: UpscaleJobData,
  options: EnqueueOptions = {},
): Promise<UpscaleJob> {
  const checked = validateJobData(data, process.cwd());
  const jobId = options.jobId ?? jobIdFor(checked.output);
  if (typeof jobId !== 'string' || jobId.length === 0 || /^\d+$/.test(jobId) || jobId.includes(':')) {
    throw invalidOption('jobId', 'non-empty string, not all digits, without ":"', jobId);
  }
  const attempts = options.attempts ?? DEFAULT_JOB_OPTIONS.attempts;
  if (!Number.isInteger(attempts) || (attempts as number) < 1 || (attempts as number) > 100) {
    throw invalidOption('attempts', 'integer between 1 and 100', options.attempts);
  }
  const backoffMs = options.backoffMs ?? DEFAULT_BACKOFF_MS;
  if (!Number.isInteger(backoffMs) || backoffMs < 0 || backoffMs > 3_600_000) {
    throw invalidOption('backoffMs', 'integer between 0 and 3600000', options.backoffMs);
  }
  const priority = options.priority ?? 0;
  if (!Number.isInteger(priority) || priority < 0 || priority > 2_097_152) {
    throw invalidOption('priority', 'integer between 0 and 2097152', options.priority);
  }
  // BullMQ ignores an add whose id exists. A finished job of that id is history: replace it, so
  // that enqueueing an output again (after a failure was fixed, or the file was deleted) runs.
  const existing = await queue.queue.getJob(jobId);
  if (existing) {
    const state = await existing.getState();
    if (state === 'completed' || state === 'failed') await existing.remove();
    else return existing;
  }
  return queue.queue.add(UPSCALE_JOB_NAME, checked, {
    ...DEFAULT_JOB_OPTIONS,
    jobId,
    attempts,
    backoff: { type: 'exponential', delay: backoffMs },
    ...(priority > 0 ? { priority } : {}),
  });
}

function parseResult(value: unknown): UpscaleJobResult | undefined {
  if (typeof value === 'string') {
    try {
      return JSON.parse(value) as UpscaleJobResult;
    } catch {
      return undefined;
    }
  }
  return (value ?? undefined) as UpscaleJobResult | undefined;
}

function abortError(signal: AbortSignal): Error {
  const err = new Error('The wait was aborted', { cause: signal.reason });
  err.name = 'AbortError';
  return err;
}

/**
 * Waits until every job has completed or failed for good (retries included).
 *
 * @param queue - The queue the jobs are in.
 * @param jobs - Jobs returned by {@link enqueueUpscale}.
 * @param options - Progress and settle callbacks, abort signal.
 * @returns One outcome per job, in the order given.
 */
export async function waitForJobs(
  queue: UpscaleQueue,
  jobs: readonly UpscaleJob[],
  options: WaitOptions = {},
): Promise<JobOutcome[]> {
  const byId = new Map<string, UpscaleJob>();
  for (const job of jobs) if (job.id !== undefined) byId.set(job.id, job);
  const outcomes = new Map<string, JobOutcome>();
  const events = new QueueEvents(queue.name, { connection: queue.queue.opts.connection as never });
  events.on('error', () => undefined);
  let finish: (() => void) | undefined;
  const done = new Promise<void>((resolveDone) => {
    finish = resolveDone;
  });
  const settle = (id: string, result: UpscaleJobResult | undefined, error: string | undefined): void => {
    const job = byId.get(id);
    if (job === undefined || outcomes.has(id)) return;
    const outcome: JobOutcome = error === undefined ? { id, data: job.data, result } : { id, data: job.data, error };
    outcomes.set(id, outcome);
    options.onSettled?.(outcome);
    if (outcomes.size === byId.size) finish?.();
  };
  const failedReasons = new Map<string, string>();
  const reasonlessReads = new Map<string, number>();
  const check = async (ids: string[]): Promise<void> => {
    await Promise.all(
      ids.map(async (id) => {
        const job = await queue.queue.getJob(id);
        if (job === undefined) {
          settle(id, undefined, 'the job was removed from the queue before it finished');
          return;
        }
        const state = await job.getState();
        if (state === 'completed') settle(id, parseResult(job.returnvalue), undefined);
        else if (state === 'failed') {
          // The reason from the job hash, else from the 'failed' event. A read that races the
          // worker's write of the hash can see the state before the reason: read it again on the
          // next poll (a few times) rather than report a bare 'failed'.
          const reason = job.failedReason || failedReasons.get(id);
          const reads = (reasonlessReads.get(id) ?? 0) + 1;
          if (reason) settle(id, undefined, reason);
          else if (reads >= 3) settle(id, undefined, 'failed (no reason recorded)');
          else reasonlessReads.set(id, reads);
        }
      }),
    );
  };
  events.on('completed', ({ jobId, returnvalue }) => settle(jobId, parseResult(returnvalue), undefined));
  events.on('failed', ({ jobId, failedReason }) => {
    if (failedReason) failedReasons.set(jobId, failedReason);
    // Read the state: only a job in the failed set has failed for good.
    void check([jobId]).catch(() => undefined);
  });
  events.on('progress', ({ jobId, data }) => {
    const job = byId.get(jobId);
    if (job && !outcomes.has(jobId) && typeof data === 'object' && data !== null) {
      options.onProgress?.(job, data as UpscaleJobProgress);
    }
  });
  const onAbort = (): void => finish?.();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  let offset = 0;
  const poll = async (): Promise<void> => {
    const pending = [...byId.keys()].filter((id) => !outcomes.has(id));
    if (pending.length > 0) {
      offset %= pending.length;
      const batch = pending.slice(offset, offset + POLL_BATCH);
      offset += POLL_BATCH;
      await check(batch).catch(() => undefined);
    }
    if (outcomes.size < byId.size && !options.signal?.aborted) timer = setTimeout(() => void poll(), POLL_MS);
  };
  try {
    if (options.signal?.aborted) throw abortError(options.signal);
    if (byId.size === 0) return [];
    await events.waitUntilReady();
    // Jobs that finished before the events stream was read.
    await check([...byId.keys()]).catch(() => undefined);
    if (outcomes.size < byId.size) {
      timer = setTimeout(() => void poll(), POLL_MS);
      await done;
    }
    if (options.signal?.aborted) throw abortError(options.signal);
    return jobs.map((j) => outcomes.get(j.id ?? '') ?? { id: j.id ?? '', data: j.data, error: 'unknown job' });
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    await events.close().catch(() => undefined);
  }
}
