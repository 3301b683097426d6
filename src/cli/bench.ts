/**
 * `alignvar bench`: per-scale step latency (with tokens and GFLOP/s from the spec's cost model),
 * the diffusion refiner as its own row when the model runs one, prepare and decode times,
 * end-to-end time per 512x512 output and tiles per second, for each tile batch size, on the
 * chosen device. The measuring lives in src/bench/engine-bench.ts; this file turns argv into its
 * options and prints a table or, with `--json`, one JSON document.
 */
import { parseArgs } from 'node:util';

import { type BatchBench, type Spread, benchEngine } from '../bench/engine-bench.js';
import { DEVICES, type Device, MAX_TILE_BATCH } from '../options.js';
import { UsageError, log } from './shared.js';

/** Usage text of `alignvar bench`. */
export const USAGE = `alignvar bench [--model <path>] [--device auto|cpu|cuda] [--tile-batch 1,4,8] [--warmup N] [--runs N] [--no-refiner] [--json]
      --model <path>       model file (default: the embedded model)
      --device <name>      auto (default), cpu or cuda
      --no-refiner         skip VARSR's diffusion refiner in a model that has one (default: run and time it)
      --tile-batch <list>  tile batch sizes to time, comma-separated, each 1-${MAX_TILE_BATCH} (default 1,4,8)
      --warmup <N>         untimed runs per batch size first, 0-100 (default 1)
      --runs <N>           timed runs per batch size, 1-1000 (default 5); figures are median [min-max]
      --json               print one JSON document on stdout instead of tables
`;

function intArg(flag: string, value: string | undefined, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  const v = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(v) || v < min || v > max) {
    throw new UsageError(
      `Expected integer between ${min} and ${max} for --${flag} but received ${JSON.stringify(value)}`,
    );
  }
  return v;
}

function batchList(value: string | undefined): number[] {
  if (value === undefined) return [1, 4, 8];
  const parts = value.split(',');
  const out = parts.map((p) => intArg('tile-batch', p, 1, MAX_TILE_BATCH, 0));
  return [...new Set(out)];
}

const f = (v: number, d = 1): string => v.toFixed(d);
const sp = (s: Spread, d = 1): string => `${f(s.median, d)} [${f(s.min, d)}-${f(s.max, d)}]`;

/**
 * The text report of one tile batch size, as `alignvar bench` prints it: the per-scale table (and
 * the refiner's row when the engine ran one), then the stage times, throughput and the 512x512 time.
 */
export function batchTable(r: BatchBench): string {
  const ref = r.refiner;
  const lines = [
    `tile batch ${r.tileBatch}: step latency per scale (ms: median [min-max]; GFLOP for the batch, spec 9)` +
      (ref ? `; refiner: ${ref.steps} diffusion steps over the last scale's tokens` : ''),
    '| si | pn | tokens | Lq | Lk | ms | GFLOP | GFLOP/s |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...r.scales.map(
      (s) =>
        `| ${s.si} | ${s.pn} | ${s.tokens} | ${s.lq} | ${s.lk} | ${sp(s.ms, 2)} | ${f(s.gflop, 3)} | ${f(s.gflops)} |`,
    ),
    ...(ref
      ? [`| refiner | ${ref.pn} | ${ref.tokens} | - | - | ${sp(ref.ms, 2)} | ${f(ref.gflop, 3)} | ${f(ref.gflops)} |`]
      : []),
    `prepare ${sp(r.prepareMs)} ms, steps ${sp(r.stepsMs)} ms, ${ref ? `refiner ${sp(ref.ms)} ms, ` : ''}decode ${sp(r.decodeMs)} ms; batch ${sp(r.batchMs)} ms`,
    `${f(r.tilesPerSecond, 2)} tiles/s, ${f(r.gflop.total, 2)} GFLOP per batch (transformer ${f(r.gflop.transformer, 2)}, conditioning ${f(r.gflop.condNet, 2)}, ${ref ? `refiner ${f(r.gflop.refiner, 2)}, ` : ''}decoder ${f(r.gflop.decoder, 2)}), ${f(r.gflops)} GFLOP/s`,
    `end to end per 512x512 output (128x128 input, tile loop without file decode/encode): ${sp(r.per512Ms, 0)} ms`,
  ];
  return lines.join('\n');
}

/**
 * Runs `alignvar bench`.
 *
 * @param argv - The arguments after `bench`.
 * @returns 0 when every batch size was timed (errors propagate to the dispatcher: 1, or 2 for
 *   usage errors).
 */
export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      model: { type: 'string' },
      device: { type: 'string' },
      'tile-batch': { type: 'string' },
      warmup: { type: 'string' },
      runs: { type: 'string' },
      'no-refiner': { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(`Usage:\n  ${USAGE}`);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const device = values.device ?? 'auto';
  if (!(DEVICES as readonly string[]).includes(device)) {
    throw new UsageError(`Expected one of "auto", "cpu", "cuda" for --device but received ${JSON.stringify(device)}`);
  }
  const tileBatches = batchList(values['tile-batch']);
  const warmup = intArg('warmup', values.warmup, 0, 100, 1);
  const runs = intArg('runs', values.runs, 1, 1000, 5);
  const json = values.json ?? false;
  const result = await benchEngine({
    model: values.model,
    device: device as Device,
    tileBatches,
    warmup,
    runs,
    refiner: !values['no-refiner'],
    onRun: json ? undefined : (B, i, w) => log(`  tile batch ${B}: ${w ? 'warm-up' : 'run'} ${i + 1}`),
  });
  if (json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  }
  const c = result.config;
  const head =
    `${result.model}: depth ${c.depth}, width ${c.width}, vocabulary ${c.vocab}, tile ${c.lrSize} -> ${c.hrSize}, ${c.scales} scales` +
    `${c.refiner ? `, refiner W ${c.refiner.width} x ${c.refiner.blocks} blocks` : ''}; ` +
    `${result.device} (${result.backendDetail}); cfg ${result.settings.cfg}, greedy, colour fix ${result.settings.colorFix}; ` +
    `${result.settings.warmup} warm-up + ${result.settings.runs} timed runs; ${result.tilesPer512} tiles per 512x512 output`;
  process.stdout.write(`${[head, ...result.results.map(batchTable)].join('\n\n')}\n`);
  return 0;
}
