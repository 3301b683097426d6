/**
 * `alignvar enqueue <file|folder>... -o <folder> --redis <url> [options]`: argv -> job data ->
 * enqueueUpscale (src/queue/); with --wait, waitForJobs with a progress bar (plain lines when
 * stderr is not a terminal), a summary, and the exit status of `upscale`.
 */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import cliProgress from 'cli-progress';
import sharp from 'sharp';

import { defaultOutputFormat } from '../image/io.js';
import { OUTPUT_FORMATS, type OutputFormat } from '../options.js';
import {
  type JobOutcome,
  type UpscaleJob,
  type UpscaleJobData,
  type UpscaleJobOptions,
  enqueueUpscale,
  openQueue,
  waitForJobs,
} from '../queue/index.js';
import { expandInputs, formatOfPath, outputName } from './inputs.js';
import { UsageError, interruptSignal, log, num } from './shared.js';

/** Usage text of `alignvar enqueue`. */
export const USAGE = `alignvar enqueue <file|folder>... -o <folder> --redis <url> [options]

Add one upscale job per input image to a BullMQ queue, for "alignvar worker" processes on any
machine that sees the same paths (shared storage). Folders add the images in them (chosen by
content, as for "alignvar upscale"; -r also walks subfolders and mirrors them under -o).
Outputs go to the -o folder under the input's name, with the extension of the output format. An output already queued or running is not queued twice.
Without --wait, prints one line "<job id> <output>" per job and exits 0.

Enqueue options:
  -o, --output <folder>  output folder (required; created by the workers when missing)
      --redis <url>      Redis address, redis://host:port (required)
      --queue <name>     queue name (default alignvar)
  -r, --recursive        also the images in subfolders (mirrored under -o)
      --wait             wait until every job is done: progress, a summary, and exit status 1
                         if any failed
      --format <f>       png | jpeg | webp | tiff | avif | gif (default: the input's format)
      --quality <n>      JPEG/WebP/AVIF quality, 1-100
      --seed <n>         sampler seed, integer >= 0 (default: the worker's, 0)
      --attempts <n>     runs per job before it fails, 1-100 (default 3)
  -q, --quiet            with --wait: no progress, only failures and the summary
`;

/** How long `enqueue` waits for Redis before it gives up, ms. */
const CONNECT_TIMEOUT_MS = 10_000;

/** The output format of one input: --format, else what the API would pick from its content. */
async function formatFor(input: string, format: OutputFormat | undefined): Promise<OutputFormat> {
  if (format !== undefined) return format;
  const meta = await sharp(input)
    .metadata()
    .catch(() => undefined);
  if (meta !== undefined) return defaultOutputFormat(meta.format, meta.compression);
  // Unreadable: the worker reports why; keep a name that says what it was meant to be.
  return formatOfPath(input) ?? 'png';
}

function describe(o: JobOutcome): string {
  if (o.error !== undefined)
    return `alignvar: error: ${o.error.includes(o.data.input) ? o.error : `${o.data.input}: ${o.error}`}`;
  const r = o.result;
  if (r === undefined) return `${o.data.input} -> ${o.data.output}`;
  return `${o.data.input} -> ${r.output} (${r.width}x${r.height}, ${r.skipped ? 'already complete' : `${r.ms} ms on ${r.device}`})`;
}

/**
 * Runs `alignvar enqueue`.
 *
 * @param argv - Arguments after `enqueue`.
 * @returns 0 when queued (and, with --wait, all done), 1 when any job failed.
 */
export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' },
      redis: { type: 'string' },
      queue: { type: 'string' },
      wait: { type: 'boolean' },
      recursive: { type: 'boolean', short: 'r' },
      format: { type: 'string' },
      quality: { type: 'string' },
      seed: { type: 'string' },
      attempts: { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError('no input files or folders');
  if (values.output === undefined) throw new UsageError('missing -o <folder>');
  if (values.redis === undefined) throw new UsageError('missing --redis <url>');
  const format = values.format as OutputFormat | undefined;
  if (format !== undefined && !OUTPUT_FORMATS.includes(format)) {
    throw new UsageError(
      `Expected one of ${OUTPUT_FORMATS.join(', ')} for --format but received ${JSON.stringify(format)}`,
    );
  }
  const folder = resolve(values.output);
  const { files, ignored } = await expandInputs(positionals, { recursive: values.recursive ?? false, exclude: folder });
  if (ignored.length > 0)
    log(`alignvar: ${ignored.length} file${ignored.length === 1 ? '' : 's'} in the folders are not images (ignored)`);
  if (files.length === 0) throw new UsageError('no images in the given folders');

  const jobs: UpscaleJobData[] = [];
  const byOutput = new Map<string, string>();
  for (const file of files) {
    const input = resolve(file.path);
    const f = await formatFor(input, format);
    const output = join(folder, file.subdir, outputName(input, f));
    const other = byOutput.get(output);
    if (other !== undefined) throw new UsageError(`${other} and ${input} would both be written to ${output}`);
    byOutput.set(output, input);
    const options: UpscaleJobOptions = { format: f };
    if (values.quality !== undefined) options.quality = num(values.quality) as number;
    if (values.seed !== undefined) options.seed = num(values.seed) as number;
    jobs.push({ input, output, options });
  }

  const q = openQueue({ redis: values.redis, queue: values.queue });
  try {
    // A worker waits for Redis for ever; a command line should say it cannot reach it.
    let timer: NodeJS.Timeout | undefined;
    const reachable = await Promise.race([
      q.queue.waitUntilReady().then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), CONNECT_TIMEOUT_MS))),
    ]).finally(() => clearTimeout(timer));
    if (!reachable) throw new Error(`cannot reach Redis at ${values.redis} (waited ${CONNECT_TIMEOUT_MS / 1000} s)`);
    const added: UpscaleJob[] = [];
    for (const data of jobs) {
      added.push(await enqueueUpscale(q, data, { attempts: num(values.attempts) as number | undefined }));
    }
    if (!values.wait) {
      for (const job of added) process.stdout.write(`${job.id}\t${job.data.output}\n`);
      log(`alignvar: queued ${added.length} job${added.length === 1 ? '' : 's'} on ${q.name}`);
      return 0;
    }
    return await waitWithProgress(q, added, values.quiet ?? false);
  } finally {
    await q.close();
  }
}

async function waitWithProgress(q: ReturnType<typeof openQueue>, jobs: UpscaleJob[], quiet: boolean): Promise<number> {
  const total = jobs.length;
  const tty = process.stderr.isTTY === true && !quiet;
  const multi = tty
    ? new cliProgress.MultiBar(
        {
          stream: process.stderr,
          format: ' {bar} {percentage}% | {done}/{jobs} jobs | {failed} failed | ETA {eta_formatted}',
          hideCursor: true,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const bar = multi?.create(total * 1000, 0, { done: 0, jobs: total, failed: 0 });
  const fractions = new Map<string, number>();
  let settled = 0;
  let failed = 0;
  const redraw = (): void => {
    let v = settled * 1000;
    for (const f of fractions.values()) v += Math.round(f * 1000);
    bar?.update(v, { done: settled, jobs: total, failed });
  };
  log(`alignvar: waiting for ${total} job${total === 1 ? '' : 's'} on ${q.name}`);
  const outcomes = await waitForJobs(q, jobs, {
    signal: interruptSignal(),
    onProgress: (job, p) => {
      if (job.id === undefined || p.scalesTotal <= 0) return;
      fractions.set(job.id, p.scalesDone / p.scalesTotal);
      redraw();
    },
    onSettled: (o) => {
      fractions.delete(o.id);
      settled++;
      if (o.error !== undefined) failed++;
      const line = `[${settled}/${total}] ${describe(o)}`;
      if (multi) {
        if (o.error !== undefined) multi.log(`${line}\n`);
      } else if (!quiet || o.error !== undefined) {
        log(line);
      }
      redraw();
    },
  }).finally(() => multi?.stop());
  const skipped = outcomes.filter((o) => o.result?.skipped).length;
  log(
    `alignvar: ${total} job${total === 1 ? '' : 's'}: ${total - failed} done` +
      (skipped > 0 ? ` (${skipped} already complete)` : '') +
      `, ${failed} failed`,
  );
  return failed > 0 ? 1 : 0;
}
