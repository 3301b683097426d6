/**
 * `alignvar serve`: argv -> server options -> startServer (src/server). SIGTERM (and Ctrl-C)
 * stops accepting, finishes the requests in flight and exits (0 after SIGTERM, 130 after
 * Ctrl-C); a second SIGTERM exits at once with 1.
 */
import { parseArgs } from 'node:util';

import type { UpscalerOptions } from '../options.js';
import { startServer } from '../server/index.js';
import { MODEL_FLAGS, UsageError, interruptSignal, log, modelOptions, num } from './shared.js';

/** Usage text of `alignvar serve`. */
export const USAGE = `alignvar serve [options]

HTTP server for server-side import. POST /v1/upscale takes the image as the request body
(query parameters: format, quality, seed) and answers the x4 image with its Content-Type;
errors are JSON { code, message }: 400 bad option or corrupt image, 413 body or image too
large, 415 unsupported format, 503 queue full (Retry-After), 504 timeout. GET /healthz,
GET /metrics (Prometheus). SIGTERM drains the requests in flight and exits 0.

Serve options:
      --host <addr>          interface to listen on (default 127.0.0.1)
      --port <n>             TCP port, 0 = any free one (default 8080)
      --max-queue <n>        requests in flight at once; one more is answered 503 (default 64)
      --max-queued-tiles <n> tiles waiting for the engine; past it 503 (default: no bound)
      --max-body <size>      largest request body: bytes, or with k, m, g (KiB, MiB, GiB)
                             (default 32m)
      --timeout <s>          seconds per request, 0 = none (default 120)
      --max-output-pixels <n> largest output (width x height); larger images get 413
                             (default 268435456)
      --model <path>         model .safetensors file (default: the embedded model)
      --device <d>           auto | cpu | cuda (default auto)
      --seed <n>             sampler seed, integer >= 0 (default 0; a request's seed wins)
      --cfg <x>              guidance weight, 0-100 (default: the model's, else 6)
      --top-k <n>            top-k sampling, 0 = off (default 1: greedy)
      --top-p <x>            top-p sampling, 0-1, 0 = off (default 0.75)
      --tile-batch <n>       tiles per model batch, 1-64 (default 4)
      --max-batch-delay <ms> wait for more tiles before a batch starts (default 2)
      --color-fix <m>        adain | wavelet | none (default: the model's, else adain)
      --no-color-fix         same as --color-fix none
      --kv-cache <t>         f32 | bf16: the transformer's KV cache dtype (default f32; bf16 halves it)
      --no-refiner           skip VARSR's diffusion refiner in a model that has one (default: run it)
      --log-level <l>        one JSON line per request on stdout at info; warn, error,
                             silent (default silent)
`;

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
};

/** `--max-body`: bytes, or a number with a binary unit (`512k`, `32m`, `1g`). */
function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new UsageError(`--max-body must be a size such as 1048576, 512k, 32m or 1g, not ${JSON.stringify(text)}`);
  }
  return Math.round(Number(m[1]) * unit);
}

/** `--timeout`: seconds (fractions allowed) to milliseconds. */
function parseSeconds(text: string): number {
  const s = Number(text);
  if (text.trim() === '' || !Number.isFinite(s) || s < 0) {
    throw new UsageError(`--timeout must be a number of seconds >= 0, not ${JSON.stringify(text)}`);
  }
  return Math.round(s * 1000);
}

/**
 * Runs `alignvar serve`.
 *
 * @param argv - The arguments after `serve`.
 * @returns The exit status, once the server has drained.
 */
export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      'max-queue': { type: 'string' },
      'max-queued-tiles': { type: 'string' },
      'max-body': { type: 'string' },
      timeout: { type: 'string' },
      'max-output-pixels': { type: 'string' },
      ...MODEL_FLAGS,
      'max-batch-delay': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(`Usage:\n  ${USAGE}`);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`serve takes no arguments, got ${JSON.stringify(positionals[0])}`);
  const level = values['log-level'] ?? 'silent';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) {
    throw new UsageError(`--log-level must be one of info, warn, error, silent, not ${JSON.stringify(level)}`);
  }
  const upscalerOptions = {
    ...modelOptions(values),
    maxBatchDelayMs: num(values['max-batch-delay']),
    maxQueuedRequests: num(values['max-queue']),
    maxQueuedTiles: num(values['max-queued-tiles']),
    maxOutputPixels: num(values['max-output-pixels']),
  } as UpscalerOptions;
  // Claim Ctrl-C before the model loads: the dispatcher then leaves stopping to us.
  const interrupted = interruptSignal();
  const server = await startServer({
    host: values.host,
    port: num(values.port) as number | undefined,
    maxBodyBytes: values['max-body'] === undefined ? undefined : parseSize(values['max-body']),
    timeoutMs: values.timeout === undefined ? undefined : parseSeconds(values.timeout),
    upscalerOptions,
    logger: level === 'silent' ? false : { level },
  });
  const up = server.upscaler as { device?: string; model?: string };
  log(`alignvar serve: listening on ${server.url} (device ${up.device ?? '?'}, model ${up.model ?? '?'})`);

  const signal = await new Promise<'SIGTERM' | 'SIGINT'>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    if (interrupted.aborted) resolve('SIGINT');
    interrupted.addEventListener('abort', () => resolve('SIGINT'), { once: true });
  });
  const again = () => {
    log(`alignvar serve: second signal, exiting without draining`);
    process.exit(1);
  };
  // A second Ctrl-C is the dispatcher's: it exits 130 at once.
  process.once('SIGTERM', again);
  log(`alignvar serve: ${signal}: draining the requests in flight`);
  await server.close();
  log('alignvar serve: stopped');
  process.off('SIGTERM', again);
  return signal === 'SIGTERM' ? 0 : 130;
}
