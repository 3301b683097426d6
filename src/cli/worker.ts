/**
 * `alignvar worker --redis <url> [--queue <name>] [options]`: argv -> options -> createWorker
 * (src/queue/). Runs until SIGTERM or Ctrl-C, then drains (see USAGE) and exits 0 (130 for Ctrl-C).
 */
import { parseArgs } from 'node:util';

import type { UpscalerOptions } from '../options.js';
import { createWorker } from '../queue/index.js';
import { UsageError, interruptSignal, log, num } from './shared.js';

/** Usage text of `alignvar worker`. */
export const USAGE = `alignvar worker --redis <url> [--queue <name>] [options]

Take upscale jobs { input, output, options } from a BullMQ queue on Redis and run them on one
upscaler (one model on one device). Outputs are written atomically; a job whose output already
exists and is complete is marked done without work. A bad image fails its job at once (no retry);
other failures are retried with backoff. SIGTERM (or Ctrl-C) stops taking jobs and lets running
ones finish; past --drain-timeout they are handed back to the queue. Then the worker exits 0.

Worker options:
      --redis <url>          Redis address, redis://host:port (required)
      --queue <name>         queue name (default alignvar)
      --concurrency <n>      jobs at once on the one upscaler, 1-64 (default 1); their tiles share
                             model batches, so values above 1 help on GPUs
      --device <d>           auto | cpu | cuda (default auto; auto logs why it fell back to CPU)
      --gpu <n>              CUDA device index (default 0): run one worker per GPU
      --model <path>         model .safetensors file (default: the embedded model)
      --tile-batch <n>       tiles per model batch, 1-64 (default 4)
      --drain-timeout <s>    on SIGTERM, seconds to wait for running jobs before handing them
                             back to the queue (default: wait until they finish)
      --lock-duration <s>    job lock, seconds (default 30): a dead worker's jobs are taken over
                             by another worker about this long after it died
  -q, --quiet                log only start, stop, failures and Redis errors
`;

function seconds(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const v = num(value);
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
    throw new UsageError(`Expected number of seconds >= ${min} for --${name} but received ${JSON.stringify(value)}`);
  }
  return v;
}

/**
 * Runs `alignvar worker`.
 *
 * @param argv - Arguments after `worker`.
 * @returns The exit status: 0 after a SIGTERM drain, 130 after Ctrl-C.
 */
export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      redis: { type: 'string' },
      queue: { type: 'string' },
      concurrency: { type: 'string' },
      device: { type: 'string' },
      gpu: { type: 'string' },
      model: { type: 'string' },
      'tile-batch': { type: 'string' },
      'drain-timeout': { type: 'string' },
      'lock-duration': { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  if (values.redis === undefined) throw new UsageError('missing --redis <url>');
  const drainTimeout = seconds('drain-timeout', values['drain-timeout'], 0);
  const lockDuration = seconds('lock-duration', values['lock-duration'], 1);

  const quiet = values.quiet ?? false;
  const say = (line: string): void => {
    if (quiet && /^job \S+ (wrote|skipped)/.test(line)) return;
    log(`alignvar worker: ${line}`);
  };
  const w = await createWorker({
    redis: values.redis,
    queue: values.queue,
    concurrency: num(values.concurrency) as number | undefined,
    lockDuration: lockDuration === undefined ? undefined : Math.round(lockDuration * 1000),
    upscaler: {
      model: values.model,
      device: values.device,
      gpu: num(values.gpu),
      tileBatch: num(values['tile-batch']),
    } as UpscalerOptions,
    log: say,
  });

  const interrupt = interruptSignal();
  const signalName = await new Promise<'SIGTERM' | 'SIGINT'>((resolveSignal) => {
    const onTerm = (): void => resolveSignal('SIGTERM');
    process.once('SIGTERM', onTerm);
    if (interrupt.aborted) resolveSignal('SIGINT');
    interrupt.addEventListener('abort', () => resolveSignal('SIGINT'), { once: true });
  });
  say(
    `${signalName}: no new jobs; finishing running ones` +
      (drainTimeout === undefined ? '' : ` (handing them back after ${drainTimeout} s)`),
  );
  const { handedBack } = await w.close({ drainTimeout: drainTimeout === undefined ? undefined : drainTimeout * 1000 });
  say(
    `stopped${handedBack > 0 ? ` (${handedBack} running job${handedBack === 1 ? '' : 's'} handed back to the queue)` : ''}`,
  );
  return signalName === 'SIGINT' ? 130 : 0;
}
