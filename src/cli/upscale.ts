/**
 * `alignvar upscale <file|folder>... -o <output> [options]`: argv -> options -> Upscaler.
 *
 * - Folders expand to the images in them (see ./inputs.ts); `-r` mirrors the tree under `-o`.
 * - Resume is the default: an output that exists is skipped (`--overwrite` redoes it). Outputs
 *   are written to a hidden temporary file and renamed into place, so after `kill -9` an output
 *   either exists whole or not at all; the next run removes the dead run's temporary files.
 * - Several files run at once (`--jobs`, bounded by pixels in flight): the next file is decoded
 *   while this one computes, and tiles of concurrent calls share the engine's batches.
 * - Progress and logs go to stderr; `--json` writes one JSON line per file to stdout.
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';

import sharp from 'sharp';

import type { BatcherStats } from '../batch/batcher.js';
import { sniffFormat } from '../image/sniff.js';
import { OUTPUT_FORMATS, validateUpscaleOptions, validateUpscalerOptions, type OutputFormat } from '../options.js';
import { createUpscaler, inspectModel, type Upscaler } from '../upscaler.js';
import { checkNameTemplate, expandInputs, formatOfPath, outputName, readHead, removeStaleTemps } from './inputs.js';
import { BatchProgress, type ProgressMode } from './progress.js';
import {
  MODEL_FLAGS,
  UsageError,
  errorCode,
  errorMessage,
  escapeControl,
  interruptSignal,
  isDirectory,
  log,
  modelOptions,
  num,
  writeAtomic,
} from './shared.js';

/** Usage text of `alignvar upscale`. */
export const USAGE = `alignvar upscale <input...> -o <output> [options]

Upscale images x4 with AlignVAR. Inputs are files or folders; a folder stands for the images
in it, recognised by their content (hidden files are skipped). With one input file, -o is the
output file (or an existing folder); otherwise -o is a folder (created if missing) and each
output keeps its input's name. An output that already exists is skipped, so running the same
command again finishes an interrupted batch. A file that fails is reported and the others
continue; the exit status is 1 if any failed.

Upscale options:
  -o, --output <path>    output file or folder (required)
  -r, --recursive        also upscale images in subfolders, mirroring the tree under -o
      --overwrite        redo outputs that already exist (default: skip them)
      --name <template>  output file name: {name} (input name without extension), {ext},
                         {format}; e.g. '{name}-x4.{ext}' (default: the input's name)
      --json             one JSON line per file on stdout (input, output, status, ms, error)
  -j, --jobs <n>         files in flight at once, 1-64: the next is decoded while one computes
                         and tiles of small files share batches (default 4; large images run
                         alone)
      --model <path>     model .safetensors file (default: the embedded model)
      --device <d>       auto | cpu | cuda (default auto)
      --seed <n>         sampler seed, integer >= 0 (default 0)
      --cfg <x>          guidance weight, 0-100 (default: the model's, else 6)
      --top-k <n>        top-k sampling, 0 = off (default 1: greedy)
      --top-p <x>        top-p sampling, 0-1, 0 = off (default 0.75)
      --tile-batch <n>   tiles per model batch, 1-64 (default 4)
      --color-fix <m>    adain | wavelet | none (default: the model's, else adain)
      --no-color-fix     same as --color-fix none
      --kv-cache <t>     f32 | bf16: the transformer's KV cache dtype (default f32; bf16 halves it)
      --no-refiner       skip VARSR's diffusion refiner in a model that has one (default: run it)
      --format <f>       png | jpeg | webp | tiff | avif | gif
                         (default: from the -o extension, else the input's format)
      --quality <n>      JPEG/WebP/AVIF quality, 1-100
  -q, --quiet            no progress output (errors and a failure summary only)
`;

/** Most input pixels in flight when several files run at once (one larger image runs alone). */
const PIXELS_IN_FLIGHT = 4 * 1024 * 1024;
/** Default `--jobs` (bench/results/cpu-cli-folder*.json: faster for small files, even for large). */
const DEFAULT_JOBS = 4;
/** Most header reads at once while planning. */
const PLAN_CONCURRENCY = 8;

/** The outcome of one input, as printed with `--json`. */
interface FileResult {
  input: string;
  output: string | null;
  status: 'done' | 'skipped' | 'failed';
  /** Why it was skipped: the output exists, or the file is not an image. */
  reason?: 'exists' | 'not-an-image';
  ms: number;
  width?: number;
  height?: number;
  error: { code: string; message: string } | null;
}

/** One input file and its plan. */
interface Job {
  id: number;
  input: string;
  subdir: string;
  /** The output path, when it can be named before upscaling. */
  target: string | undefined;
  /** Input pixels and tiles (0 when the header cannot be read: the upscale reports why). */
  pixels: number;
  tiles: number;
  /** An error found while planning (output conflict). */
  planError: Error | undefined;
}

/** An error of the CLI's own, with a code for `--json`. */
function cliError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/** Runs `fn` over `items` with at most `limit` at once, keeping the order of results. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Header facts of an input: size and the output format it gives by default. */
async function probe(path: string): Promise<{ width: number; height: number; format: OutputFormat } | undefined> {
  try {
    if (sniffFormat(await readHead(path)) === undefined) return undefined;
    const meta = await sharp(path, { limitInputPixels: false }).metadata();
    const width = meta.autoOrient?.width ?? meta.width;
    const height = meta.autoOrient?.height ?? meta.height;
    const format: OutputFormat =
      meta.format === 'heif'
        ? meta.compression === 'av1'
          ? 'avif'
          : 'png'
        : OUTPUT_FORMATS.includes(meta.format as OutputFormat)
          ? (meta.format as OutputFormat)
          : 'png';
    return { width, height, format };
  } catch {
    return undefined; // the upscale itself reports what is wrong
  }
}

/**
 * Runs `alignvar upscale`.
 *
 * @param argv - The arguments after `upscale`.
 * @returns 0 when every input was done or skipped, 1 when any failed.
 */
export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' },
      recursive: { type: 'boolean', short: 'r' },
      overwrite: { type: 'boolean' },
      name: { type: 'string' },
      json: { type: 'boolean' },
      jobs: { type: 'string', short: 'j' },
      ...MODEL_FLAGS,
      format: { type: 'string' },
      quality: { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(`Usage:\n  ${USAGE}`);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError('no input files');
  if (values.output === undefined) throw new UsageError('missing -o <output>');
  if (values.name !== undefined) checkNameTemplate(values.name);
  const jobsArg = values.jobs === undefined ? undefined : Number(values.jobs);
  if (jobsArg !== undefined && (!Number.isInteger(jobsArg) || jobsArg < 1 || jobsArg > 64)) {
    throw new UsageError(`--jobs must be an integer between 1 and 64, not ${JSON.stringify(values.jobs)}`);
  }
  const output = values.output;
  const quality = num(values.quality) as number | undefined;

  const options = modelOptions(values);
  // Option errors first, even when every output already exists.
  validateUpscalerOptions(options);

  const inputDirs: string[] = [];
  for (const p of positionals) if (await isDirectory(p)) inputDirs.push(p);
  const single = positionals.length === 1 && inputDirs.length === 0;
  const outIsDir = !single || output.endsWith(sep) || output.endsWith('/') || (await isDirectory(output));
  if (!outIsDir && values.name !== undefined) throw new UsageError('--name needs -o to be a folder');
  for (const d of inputDirs) {
    if (resolve(d) === resolve(output)) {
      throw new UsageError(`-o ${output} is an input folder: outputs would be read as inputs; choose another folder`);
    }
  }
  const format = (values.format ?? (outIsDir ? undefined : formatOfPath(output))) as OutputFormat | undefined;
  // The library's checks and messages, before anything is read.
  validateUpscaleOptions({ format, quality });

  const mode: ProgressMode = values.quiet ? 'none' : process.stderr.isTTY ? 'bar' : 'lines';
  const emit = (r: FileResult): void => {
    if (values.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  };
  const t0 = performance.now();

  // 1. What to do: inputs, their outputs, and which exist already.
  const expanded = await expandInputs(positionals, { recursive: values.recursive ?? false, exclude: output });
  for (const path of expanded.ignored) {
    emit({ input: path, output: null, status: 'skipped', reason: 'not-an-image', ms: 0, error: null });
  }
  const probes = await mapLimit(expanded.files, PLAN_CONCURRENCY, (f) => probe(f.path));
  const inputs = new Set(expanded.files.map((f) => resolve(f.path)));
  const claimed = new Map<string, string>();
  const todo: Job[] = [];
  let skipped = 0;
  for (const [id, f] of expanded.files.entries()) {
    const info = probes[id];
    const fmt = format ?? info?.format;
    let target: string | undefined;
    if (!outIsDir) target = output;
    else if (fmt !== undefined) target = join(output, f.subdir, outputName(f.path, fmt, values.name));
    let planError: Error | undefined;
    if (target !== undefined) {
      const abs = resolve(target);
      if (inputs.has(abs))
        planError = cliError(`refusing to overwrite the input file ${target}`, 'ERR_OUTPUT_IS_INPUT');
      else if (claimed.has(abs)) {
        planError = cliError(`${target} is also the output of ${claimed.get(abs)}`, 'ERR_OUTPUT_CONFLICT');
      } else claimed.set(abs, f.path);
      if (planError === undefined && !values.overwrite && (await stat(target).catch(() => undefined))?.isFile()) {
        skipped++;
        emit({ input: f.path, output: target, status: 'skipped', reason: 'exists', ms: 0, error: null });
        continue;
      }
    }
    todo.push({
      id,
      input: f.path,
      subdir: f.subdir,
      target,
      pixels: info ? info.width * info.height : 0,
      tiles: 0,
      planError,
    });
  }
  if (outIsDir) await mkdir(output, { recursive: true });

  // 2. Upscale what is left, a few files at once.
  const signal = interruptSignal();
  let failed = 0;
  let done = 0;
  let up: Upscaler | undefined;
  let batches: BatcherStats | undefined;
  const total = expanded.files.length;
  try {
    if (todo.length > 0) {
      up = await createUpscaler(options);
      if (!values.quiet) {
        log(
          `alignvar: model ${up.model} on ${up.device}` +
            (up.fallbackReason ? ` (CUDA not used: ${up.fallbackReason})` : ''),
        );
      }
      // A model file may say what it is good for (e.g. an under-trained preview): always show it.
      const status = (await inspectModel(up.model)).metadata.status;
      if (status) log(`alignvar: note: model status: ${escapeControl(status)}`);
      const dirs = new Set(todo.map((j) => (j.target === undefined ? join(output, j.subdir) : dirname(j.target))));
      for (const d of dirs) await removeStaleTemps(d);
      for (const j of todo) {
        const probed = probes[j.id];
        j.tiles = probed ? up.tileCount(probed.width, probed.height) : 0;
      }
    }
    const progress = new BatchProgress(
      mode,
      todo.length,
      todo.reduce((a, j) => a + j.tiles, 0),
    );
    const several = total > 1;
    const tagOf = (j: Job): string => (several ? `[${j.id + 1}/${total}] ` : '');
    const written = new Set<string>();

    const runJob = async (j: Job, u: Upscaler): Promise<void> => {
      const started = performance.now();
      let tilesTotal = j.tiles;
      try {
        if (j.planError) throw j.planError;
        const data = await u.upscale(j.input, {
          format,
          quality,
          signal,
          onProgress: (p) => {
            tilesTotal = p.tilesTotal;
            progress.update(j.id, (p.scalesDone / p.scalesTotal) * p.tilesTotal);
          },
        });
        const meta = await sharp(data).metadata();
        const fmt = meta.format === 'heif' ? 'avif' : (meta.format as OutputFormat);
        const target = j.target ?? join(output, j.subdir, outputName(j.input, fmt, values.name));
        const abs = resolve(target);
        if (j.target === undefined) {
          // Named only now (the header did not say the format): check what planning checks.
          if (inputs.has(abs)) throw cliError(`refusing to overwrite the input file ${target}`, 'ERR_OUTPUT_IS_INPUT');
          if (written.has(abs) || (claimed.has(abs) && claimed.get(abs) !== j.input)) {
            throw cliError(`${target} was already written by another input of this run`, 'ERR_OUTPUT_CONFLICT');
          }
          if (!values.overwrite && (await stat(target).catch(() => undefined))?.isFile()) {
            throw cliError(`${target} already exists`, 'ERR_OUTPUT_EXISTS');
          }
        }
        await mkdir(dirname(target), { recursive: true });
        await writeAtomic(target, data);
        written.add(abs);
        done++;
        const ms = Math.round(performance.now() - started);
        emit({
          input: j.input,
          output: target,
          status: 'done',
          ms,
          width: meta.width,
          height: meta.height,
          error: null,
        });
        progress.finish(
          j.id,
          tilesTotal,
          escapeControl(
            `${tagOf(j)}${j.input} -> ${target} (${meta.width}x${meta.height}, ${(ms / 1000).toFixed(1)} s)`,
          ),
        );
      } catch (err) {
        if (signal.aborted) throw err;
        failed++;
        const msg = errorMessage(err);
        const message = msg.includes(j.input) ? msg : `${j.input}: ${msg}`;
        emit({
          input: j.input,
          output: j.target ?? null,
          status: 'failed',
          ms: Math.round(performance.now() - started),
          error: { code: errorCode(err) ?? 'ERR_UNKNOWN', message },
        });
        progress.finish(j.id, tilesTotal, `${tagOf(j)}alignvar: error: ${escapeControl(message)}`, true);
      }
    };

    try {
      // Files in flight overlap decoding, encoding and writing with the engine, and their tiles
      // share batches: 1.13x for one-tile files on 2 CPU cores, even for larger ones
      // (bench/results/cpu-cli-folder*.json); the pixel bound keeps large images alone.
      const jobs = jobsArg ?? DEFAULT_JOBS;
      if (up !== undefined) await schedule(todo, jobs, signal, (j) => runJob(j, up!));
    } finally {
      progress.stop();
    }
  } finally {
    batches = up?.stats();
    await up?.dispose();
  }

  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  const parts = [`${done} done`];
  if (skipped > 0) parts.push(`${skipped} skipped (output exists; --overwrite redoes them)`);
  if (failed > 0) parts.push(`${failed} failed`);
  if (expanded.ignored.length > 0) parts.push(`${expanded.ignored.length} ignored (not images)`);
  if (!values.quiet || failed > 0) {
    // How the tiles went through the engine: files in flight share batches (--jobs).
    const engine =
      batches !== undefined && batches.batchesRun > 0
        ? ` (${batches.tilesRun} tiles in ${batches.batchesRun} engine batch${batches.batchesRun === 1 ? '' : 'es'})`
        : '';
    log(`alignvar: ${parts.join(', ')} of ${total} input${total === 1 ? '' : 's'} in ${secs} s${engine}`);
  }
  return failed > 0 ? 1 : 0;
}

/**
 * Runs jobs in order with at most `limit` in flight and at most {@link PIXELS_IN_FLIGHT} input
 * pixels among them (a job larger than that runs when nothing else does). Stops starting jobs
 * once `signal` aborts; rejects with the first job error (the abort) after the others settle.
 */
async function schedule(
  jobs: Job[],
  limit: number,
  signal: AbortSignal,
  runJob: (j: Job) => Promise<void>,
): Promise<void> {
  let next = 0;
  let pixels = 0;
  const running = new Set<Promise<void>>();
  let firstError: unknown;
  while (next < jobs.length && !signal.aborted && firstError === undefined) {
    const j = jobs[next]!;
    const fits = running.size === 0 || (running.size < limit && pixels + j.pixels <= PIXELS_IN_FLIGHT);
    if (!fits) {
      await Promise.race(running);
      continue;
    }
    next++;
    pixels += j.pixels;
    const p: Promise<void> = runJob(j)
      .catch((err: unknown) => {
        firstError ??= err;
      })
      .finally(() => {
        pixels -= j.pixels;
        running.delete(p);
      });
    running.add(p);
  }
  await Promise.all(running);
  if (firstError !== undefined) throw firstError;
  signal.throwIfAborted();
}
