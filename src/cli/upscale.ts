/**
 * `alignvar upscale <input...> -o <output> [options]`: argv -> options -> Upscaler.
 *
 * Logs and progress go to stderr. Outputs are written to a temporary file in the target folder
 * and renamed into place, so a failed or interrupted run leaves no partial file.
 */
import { mkdir } from 'node:fs/promises';
import { basename, extname, join, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';

import sharp from 'sharp';

import { OUTPUT_FORMATS, type OutputFormat, type UpscalerOptions } from '../options.js';
import { createUpscaler, inspectModel, type Upscaler } from '../upscaler.js';
import {
  UsageError,
  errorMessage,
  escapeControl,
  interruptSignal,
  isDirectory,
  log,
  num,
  writeAtomic,
} from './shared.js';

/** Usage text of `alignvar upscale`. */
export const USAGE = `alignvar upscale <input...> -o <output> [options]

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

/**
 * Runs `alignvar upscale`.
 *
 * @param argv - The arguments after `upscale`.
 * @returns 0 when every input was done, 1 when any failed.
 */
export async function run(argv: string[]): Promise<number> {
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
    process.stdout.write(`Usage:\n  ${USAGE}`);
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

  const signal = interruptSignal();
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
    if (status) log(`alignvar: note: model status: ${escapeControl(status)}`);
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
        const data = await up.upscale(input, { format, quality, signal, onProgress: progress });
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
        if (signal.aborted) throw err;
        failed++;
        const msg = errorMessage(err);
        log(`${tag}alignvar: error: ${msg.includes(input) ? msg : `${input}: ${msg}`}`);
      }
    }
  } finally {
    await up?.dispose();
  }
  if (several && failed > 0) log(`alignvar: ${failed} of ${positionals.length} inputs failed`);
  return failed > 0 ? 1 : 0;
}
