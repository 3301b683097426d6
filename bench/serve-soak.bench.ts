/**
 * Soak of `alignvar serve`: a real server child process (`node --import tsx src/cli/main.ts
 * serve`), then rounds of concurrent `POST /v1/upscale` requests from this process, one socket
 * each. After every round (once the server is idle) the server's RSS is read from its own
 * `/metrics` (`process_resident_memory_bytes`, prom-client's reading of /proc; V8's used heap
 * too). The check: RSS after the last round at most 10% above the first round's. The requests mix sizes (8x8 to 64x64),
 * formats (PNG, JPEG, WebP in; PNG, WebP, JPEG out) and a few bad bodies (corrupt, text), so the
 * error paths are soaked too.
 *
 * ```sh
 * npm run bench:soak                                  # 5 rounds of 200, queue 16, tiny model, CPU
 * npx tsx bench/serve-soak.bench.ts --rounds 3 --requests 100 --max-queue 8
 * npx tsx bench/serve-soak.bench.ts --model models/alignvar-default.safetensors --device cuda
 * ```
 *
 * Writes bench/results/serve-soak.json (override with --out).
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import sharp from 'sharp';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    requests: { type: 'string', default: '200' },
    'max-queue': { type: 'string', default: '16' },
    model: { type: 'string', default: join(ROOT, 'test', 'fixtures', 'golden', 'tiny-model.safetensors') },
    device: { type: 'string', default: 'cpu' },
    out: { type: 'string', default: join(ROOT, 'bench', 'results', 'serve-soak.json') },
  },
});
const ROUNDS = Number(values.rounds);
const REQUESTS = Number(values.requests);

/** Figures of one round. */
interface Round {
  round: number;
  ok: number;
  queueFull: number;
  clientErrors: number;
  other: number;
  wallS: number;
  p50Ms: number;
  p99Ms: number;
  rssBytes: number;
  heapUsedBytes: number;
}

interface Answer {
  status: number;
  ms: number;
}

function post(base: string, path: string, body: Buffer): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, { method: 'POST', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function get(base: string, path: string): Promise<string> {
  const r = await fetch(`${base}${path}`);
  return r.text();
}

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (line === undefined) throw new Error(`no ${name} in /metrics`);
  return Number(line.slice(name.length + 1));
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** The request bodies of one round: request i gets bodies[i % bodies.length]. */
async function bodies(): Promise<Array<{ path: string; body: Buffer }>> {
  const out: Array<{ path: string; body: Buffer }> = [];
  const formats = ['png', 'jpeg', 'webp'] as const;
  const outs = ['', '?format=webp', '?format=jpeg&quality=80'];
  let k = 0;
  for (const side of [8, 16, 24, 32, 48, 64]) {
    const raw = Buffer.alloc(side * side * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 37 + side * 11) & 255;
    const img = await sharp(raw, { raw: { width: side, height: side, channels: 3 } })
      .toFormat(formats[k % 3]!)
      .toBuffer();
    out.push({ path: `/v1/upscale${outs[k % 3]}`, body: img });
    k++;
  }
  const good = out[1]!.body;
  out.push({ path: '/v1/upscale', body: good.subarray(0, Math.floor(good.length / 2)) });
  out.push({ path: '/v1/upscale', body: Buffer.from('not an image\n') });
  return out;
}

async function main(): Promise<void> {
  const args = ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'serve', '--port', '0'];
  args.push('--model', values.model, '--device', values.device, '--max-queue', values['max-queue']);
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const base = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
      const m = /listening on (http:\/\/[^\s]+)/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`alignvar serve exited with ${code}:\n${stderr}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const load0 = loadavg();
  const rssStart = metric(await get(base, '/metrics'), 'process_resident_memory_bytes');
  const work = await bodies();
  const rounds: Round[] = [];
  console.log(`server ${base}, RSS before the first request ${(rssStart / 2 ** 20).toFixed(1)} MiB`);
  console.log('round     ok    503    4xx  other wall s p50 ms p99 ms  RSS MiB  heap MiB');
  for (let r = 1; r <= ROUNDS; r++) {
    const t0 = performance.now();
    const answers = await Promise.all(
      Array.from({ length: REQUESTS }, (_, i) => post(base, work[i % work.length]!.path, work[i % work.length]!.body)),
    );
    const wallS = (performance.now() - t0) / 1000;
    // Idle: nothing queued or running before RSS is read.
    for (;;) {
      const h = JSON.parse(await get(base, '/healthz')) as { queuedRequests: number; runningRequests: number };
      if (h.queuedRequests === 0 && h.runningRequests === 0) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    const scrape = await get(base, '/metrics');
    const rss = metric(scrape, 'process_resident_memory_bytes');
    const okMs = answers
      .filter((a) => a.status === 200)
      .map((a) => a.ms)
      .sort((a, b) => a - b);
    const row: Round = {
      round: r,
      ok: okMs.length,
      queueFull: answers.filter((a) => a.status === 503).length,
      clientErrors: answers.filter((a) => a.status >= 400 && a.status < 500).length,
      other: answers.filter((a) => a.status !== 200 && a.status !== 503 && (a.status < 400 || a.status >= 500)).length,
      wallS: Number(wallS.toFixed(2)),
      p50Ms: Math.round(percentile(okMs, 50)),
      p99Ms: Math.round(percentile(okMs, 99)),
      rssBytes: rss,
      heapUsedBytes: metric(scrape, 'nodejs_heap_size_used_bytes'),
    };
    rounds.push(row);
    console.log(
      [r, row.ok, row.queueFull, row.clientErrors, row.other, row.wallS, row.p50Ms, row.p99Ms]
        .map((v) => String(v).padStart(6))
        .join(' ') +
        `  ${(rss / 2 ** 20).toFixed(1).padStart(7)}  ${(row.heapUsedBytes / 2 ** 20).toFixed(1).padStart(8)}`,
    );
  }
  const final = await get(base, '/metrics');
  child.kill('SIGTERM');
  const code = await exited;
  const first = rounds[0]!.rssBytes;
  const last = rounds[rounds.length - 1]!.rssBytes;
  const growth = last / first - 1;
  // A leak grows RSS round after round: the check is that the last round is at most 10% above
  // the first. Round 1 also holds the one-time growth (codec and cache set-up, JIT, heap sizing),
  // so later rounds may read lower; that is reported, not failed (docs/decisions.md).
  const pass = growth <= 0.1 && rounds.every((x) => x.other === 0) && code === 0;
  const result = {
    date: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model ?? 'unknown', logicalCores: cpus().length, node: process.version },
    loadAverage1m5m15m: { start: load0, end: loadavg() },
    settings: {
      rounds: ROUNDS,
      requestsPerRound: REQUESTS,
      maxQueue: Number(values['max-queue']),
      model: values.model.startsWith(ROOT) ? values.model.slice(ROOT.length) : values.model,
      device: values.device,
      bodies: work.map((w) => ({ path: w.path, bytes: w.body.length })),
    },
    rssBeforeFirstRequestBytes: rssStart,
    rounds,
    engine: {
      batches: metric(final, 'alignvar_engine_batches_total'),
      tiles: metric(final, 'alignvar_engine_tiles_total'),
      meanBatchSize: metric(final, 'alignvar_batch_size_mean'),
    },
    rssGrowthLastVsFirst: Number(growth.toFixed(4)),
    serverExitCode: code,
    pass,
  };
  await writeFile(values.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(
    `RSS round ${ROUNDS} vs round 1: ${(growth * 100).toFixed(1)}% (limit +10%); server exit ${code}; ${pass ? 'PASS' : 'FAIL'}`,
  );
  console.log(`wrote ${values.out}`);
  if (!pass) process.exitCode = 1;
}

await main();
