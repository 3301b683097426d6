#!/usr/bin/env node
/**
 * The `alignvar` command: argv -> options -> Upscaler (no image logic of its own).
 *
 *   alignvar upscale <input...> -o <output> [options]
 *   alignvar info [--model <path>]
 *
 * Logs and progress go to stderr; `info` prints its report to stdout. Outputs are written to a
 * temporary file in the target folder and renamed into place, so a failed or interrupted run
 * leaves no partial file. Exit status: 0 all done, 1 something failed, 2 usage error,
 * 130 interrupted (Ctrl-C).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';

import sharp from 'sharp';

import { packageRoot } from './binding/load.js';
import { OUTPUT_FORMATS, type OutputFormat, type UpscalerOptions } from './options.js';
import { DEFAULT_MODEL_PATH, backendInfo, createUpscaler, inspectModel, type Upscaler } from './upscaler.js';

const HELP = `Usage:
  alignvar upscale <input...> -o <output> [options]
  alignvar info [--model <path>]
  alignvar --help | --version

Upscale images x4 with AlignVAR. With one input, -o is the output file (or an existing
folder); with several, -o is a folder (created if missing) and each output keeps its input's
name. A file that fails is reported and the others continue; the exit status is 1 if any failed.

Upscale options:
  -o, --output <path>    output file or folder (required)
      --model <path>     model .safetensors file (default: the embedded model)
      --device <d>       auto | cpu | cuda (default auto)
      --seed <n>         sampler seed, integer >= 0 (default 0)
      --cfg <x>          guidance weight, 0-100 (default: the model's, else 6)
      --top-k <n>        top-k sampling, 0 = off (default 1: greedy)
      --top-p <x>        top-p sampling, 0-1, 0 = off (default 0.75)
      --tile-batch <n>   tiles per model batch, 1-64 (default 4)
      --color-fix <m>    adain | wavelet | none (default: the model's, else adain)
      --no-color-fix     same as --color-fix none
      --format <f>       png | jpeg | webp | tiff | avif | gif
                         (default: from the -o extension, else the input's format)
      --quality <n>      JPEG/WebP/AVIF quality, 1-100
  -q, --quiet            no progress output

Info options:
      --model <path>     also describe this model file (default: the embedded model, if present)
`;

/** Extensions written for each format (the first is the canonical one). */
const EXTENSIONS: Record<OutputFormat, string[]> = {
  png: ['.png'],
  jpeg: ['.jpg', '.jpeg', '.jpe'],
  webp: ['.webp'],
  tiff: ['.tif', '.tiff'],
  avif: ['.avif'],
  gif: ['.gif'],
};

class UsageError extends Error {}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

/** Numbers as numbers; anything else stays a string so that the API's message shows it. */
function num(value: string | undefined): number | string | undefined {
  if (value === undefined) return undefined;
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(value.trim()) ? Number(value) : value;
}

function formatOfPath(path: string): OutputFormat | undefined {
  const ext = extname(path).toLowerCase();
  return OUTPUT_FORMATS.find((f) => EXTENSIONS[f].includes(ext));
}

/** The input's file name with an extension that fits `format`. */
function outputName(input: string, format: OutputFormat): string {
  const ext = extname(input);
  if (EXTENSIONS[format].includes(ext.toLowerCase())) return basename(input);
  return basename(input, ext) + EXTENSIONS[format][0]!;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** Writes `data` to `path` through a temporary file in the same folder, then renames it. */
async function writeAtomic(path: string, data: Buffer): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, data, { flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function runUpscale(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' },
      model: { type: 'string' },
      device: { type: 'string' },
      seed: { type: 'string' },
      cfg: { type: 'string' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      'tile-batch': { type: 'string' },
      'color-fix': { type: 'string' },
      'no-color-fix': { type: 'boolean' },
      format: { type: 'string' },
      quality: { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError('no input files');
  if (values.output === undefined) throw new UsageError('missing -o <output>');
  const several = positionals.length > 1;
  const outIsDir =
    several || values.output.endsWith(sep) || values.output.endsWith('/') || (await isDirectory(values.output));
  if (outIsDir) await mkdir(values.output, { recursive: true });
  const format = (values.format ?? (outIsDir ? undefined : formatOfPath(values.output))) as OutputFormat | undefined;

  const options = {
    model: values.model,
    device: values.device,
    seed: num(values.seed),
    cfg: num(values.cfg),
    topK: num(values['top-k']),
    topP: num(values['top-p']),
    tileBatch: num(values['tile-batch']),
    colorFix: values['no-color-fix'] ? 'none' : values['color-fix'],
  } as UpscalerOptions;
  const quality = num(values.quality) as number | undefined;

  const controller = new AbortController();
  const onSigint = (): void => controller.abort(new Error('interrupted'));
  process.once('SIGINT', onSigint);
  let up: Upscaler | undefined;
  let failed = 0;
  try {
    up = await createUpscaler(options);
    log(
      `alignvar: model ${up.model} on ${up.device}` +
        (up.fallbackReason ? ` (CUDA not used: ${up.fallbackReason})` : ''),
    );
    // A model file may say what it is good for (e.g. an under-trained preview): always show it.
    const status = (await inspectModel(up.model)).metadata.status;
    if (status) log(`alignvar: note: model status: ${status}`);
    const written = new Set<string>();
    const inputs = new Set(positionals.map((p) => resolve(p)));
    for (const [i, input] of positionals.entries()) {
      const tag = several ? `[${i + 1}/${positionals.length}] ` : '';
      const t0 = performance.now();
      let lastLine = '';
      const progress =
        values.quiet || !process.stderr.isTTY
          ? undefined
          : (p: { tilesDone: number; tilesTotal: number; scalesDone: number; scalesTotal: number }) => {
              const line = `${tag}${input}: ${Math.floor((100 * p.scalesDone) / p.scalesTotal)}% (tiles ${p.tilesDone}/${p.tilesTotal})`;
              if (line !== lastLine) process.stderr.write(`\r${line}\x1b[K`);
              lastLine = line;
            };
      try {
        const data = await up.upscale(input, {
          format,
          quality,
          signal: controller.signal,
          onProgress: progress,
        });
        if (lastLine) process.stderr.write('\r\x1b[K');
        const meta = await sharp(data).metadata();
        const target = outIsDir
          ? join(values.output, outputName(input, meta.format === 'heif' ? 'avif' : (meta.format as OutputFormat)))
          : values.output;
        const abs = resolve(target);
        if (inputs.has(abs)) throw new Error(`refusing to overwrite the input file ${target}`);
        if (written.has(abs)) throw new Error(`${target} was already written by an earlier input of this run`);
        await writeAtomic(target, data);
        written.add(abs);
        const secs = ((performance.now() - t0) / 1000).toFixed(1);
        if (!values.quiet) log(`${tag}${input} -> ${target} (${meta.width}x${meta.height}, ${secs} s)`);
      } catch (err) {
        if (lastLine) process.stderr.write('\r\x1b[K');
        if (controller.signal.aborted) throw err;
        failed++;
        const msg = errorMessage(err);
        log(`${tag}alignvar: error: ${msg.includes(input) ? msg : `${input}: ${msg}`}`);
      }
    }
  } finally {
    process.removeListener('SIGINT', onSigint);
    await up?.dispose();
  }
  if (several && failed > 0) log(`alignvar: ${failed} of ${positionals.length} inputs failed`);
  return failed > 0 ? 1 : 0;
}

async function runInfo(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { model: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const out: string[] = ['Backends:'];
  for (const b of backendInfo()) {
    const state = b.available ? 'available' : b.compiled ? `unavailable: ${b.reason}` : 'not compiled in';
    out.push(`  ${b.name}: ${state}${b.detail ? ` (${b.detail})` : ''}`);
    for (const d of b.devices) {
      out.push(`    ${d.name}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB, compute capability ${d.computeCapability}`);
    }
  }
  let status = 0;
  const model =
    values.model ?? ((await stat(DEFAULT_MODEL_PATH).catch(() => undefined)) ? DEFAULT_MODEL_PATH : undefined);
  if (model === undefined) {
    out.push(`Model: none (the embedded model ${DEFAULT_MODEL_PATH} is not present; pass --model <path>)`);
  } else {
    try {
      const m = await inspectModel(model);
      const c = m.config;
      out.push(`Model: ${m.path}`);
      out.push(`  tile: ${c.lrSize}x${c.lrSize} -> ${c.hrSize}x${c.hrSize} (x${c.hrSize / c.lrSize})`);
      out.push(`  transformer: depth ${c.depth}, width ${c.width}, heads ${c.heads}, vocabulary ${c.vocab}`);
      out.push(
        `  scales: ${c.patchNums.join(',')}; SCA ${c.sca ? 'on' : 'off'}; default cfg ${m.defaultCfg}, colour fix ${m.defaultColorFix}`,
      );
      out.push(`  VQVAE: ${c.vqCh} channels x (${c.vqChMult.join(',')}), latent ${c.cvae}`);
      if (m.metadata.status) out.push(`  status: ${m.metadata.status}`);
    } catch (err) {
      out.push(`Model: ${model}: ${errorMessage(err)}`);
      status = 1;
    }
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return status;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'upscale':
        return await runUpscale(rest);
      case 'info':
        return await runInfo(rest);
      case '--version':
      case '-v': {
        const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };
        process.stdout.write(`${pkg.version}\n`);
        return 0;
      }
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        process.stdout.write(HELP);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      log(`alignvar: ${errorMessage(err)}\nRun "alignvar --help" for usage.`);
      return 2;
    }
    if (err instanceof Error && err.name === 'AbortError') {
      log('alignvar: interrupted');
      return 130;
    }
    log(`alignvar: error: ${errorMessage(err)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
