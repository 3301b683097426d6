/**
 * Queue benchmark (npm run bench:queue): what the BullMQ queue costs per job, and the
 * throughput of 1 against 2 worker processes, on the tiny model fixture with small one-tile
 * images (so that the queue's own costs are as visible as they can be).
 *
 *   npx tsx bench/queue.bench.ts [--jobs 40] [--rounds 3] [--time 10]
 *
 * Redis: ALIGNVAR_REDIS_URL, else a throwaway redis-server started here (append-only, as the
 * tests run it).
 *
 * 1. Latency, benchmark.js (`defer: true`), in one process and on one Upscaler:
 *    - direct: `upscale()` of one image + the atomic write of its output;
 *    - queue: `enqueueUpscale` of the same image to a new output, taken by an in-process
 *      `createWorker` (concurrency 1) on that Upscaler, awaited with `job.waitUntilFinished`.
 *    Overhead per job = queue mean - direct mean; and the median of `--pairs` differences of
 *    one direct run and one queued run back to back (robust to a changing machine load); and the
 *    Redis + BullMQ round trip alone: enqueue -> completed as the producer sees it, less the
 *    worker's own time for the job (its result's `ms`).
 * 2. Throughput, in one process: `--jobs` jobs enqueued at once and drained by that worker,
 *    against the same jobs run directly one after the other; (queue - direct) / jobs is the
 *    overhead per job when the queue is never empty (median of `--rounds`, alternated).
 * 3. Throughput of worker processes (`alignvar worker`, concurrency 1, --device cpu): 1 worker
 *    against 2 on this machine, `--jobs` jobs per round, timed from the enqueue of the first to
 *    the completion of the last (workers started and loaded before). Median of `--rounds`.
 *
 * Prints a table and writes bench/results/queue.json.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import Benchmark from 'benchmark';
import { QueueEvents } from 'bullmq';
import sharp from 'sharp';

import { createUpscaler } from '../src/index.js';
import { createWorker, enqueueUpscale, openQueue, waitForJobs, type UpscaleJob } from '../src/queue/index.js';
import { writeOutputAtomic } from '../src/queue/output.js';
import { RedisServer, ping } from '../test/queue/redis.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');
const MODEL = join(ROOT, 'test/fixtures/golden/tiny-model.safetensors');
const CLI = join(ROOT, 'src/cli/main.ts');

const args = process.argv.slice(2);
const argOf = (flag: string, dflt: number): number => {
  const i = args.indexOf(flag);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const JOBS = argOf('--jobs', 40);
const ROUNDS = argOf('--rounds', 3);
const TIME = argOf('--time', 5);
const PAIRS = argOf('--pairs', 40);

const quantile = (xs: number[], q: number): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * q)]!;
const median = (xs: number[]): number => quantile(xs, 0.5);

async function makeImages(dir: string, n: number): Promise<string[]> {
  const paths: string[] = [];
  for (let i = 0; i < n; i++) {
    const w = 40 + (i % 4) * 6;
    const h = 36 + (i % 3) * 8;
    const raw = Buffer.alloc(w * h * 3);
    for (let k = 0; k < raw.length; k++) raw[k] = (k * (5 + i) + 17 * i) & 255;
    const p = join(dir, `in${i}.png`);
    await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
      .png()
      .toFile(p);
    paths.push(p);
  }
  return paths;
}

function runBench(name: string, fn: (d: { resolve(): void }) => void): Promise<Benchmark> {
  return new Promise((res, rej) => {
    const b = new Benchmark(name, {
      defer: true,
      fn,
      minSamples: 10,
      maxTime: TIME,
      onComplete: () => res(b),
      onError: (e: { message?: unknown }) => rej(new Error(String(e.message))),
    });
    b.run({ async: true });
  });
}

function startWorker(url: string, queue: string): Promise<ChildProcess> {
  const p = spawn(
    process.execPath,
    ['--import', 'tsx', CLI, 'worker', '--redis', url, '--queue', queue, '--model', MODEL, '--device', 'cpu'],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return new Promise((res, rej) => {
    let text = '';
    p.stderr!.setEncoding('utf8');
    p.stderr!.on('data', (c: string) => {
      text += c;
      if (text.includes(', queue ')) res(p);
    });
    p.once('exit', (code) => rej(new Error(`worker exited ${code}: ${text}`)));
  });
}

async function stopWorker(p: ChildProcess): Promise<void> {
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await exited;
}

async function main(): Promise<void> {
  const load0 = loadavg();
  const envUrl = process.env.ALIGNVAR_REDIS_URL;
  const server = envUrl ? undefined : await RedisServer.start();
  const url = envUrl ?? server!.url;
  if (!(await ping(url))) throw new Error(`Redis at ${url} does not answer`);
  const dir = await mkdtemp(join(tmpdir(), 'alignvar-qbench-'));
  const images = await makeImages(dir, JOBS);
  const up = await createUpscaler({ model: MODEL, device: 'cpu' });
  let n = 0;
  const out = (): string => join(dir, 'out', `o${n++}.png`);
  try {
    // Warm-up.
    for (const img of images.slice(0, 3)) await writeOutputAtomic(out(), await up.upscale(img, { format: 'png' }));

    // 1. Latency per job: direct vs through the queue, same process, same upscaler.
    const q1 = openQueue({ redis: url, queue: `bench-lat-${process.pid}` });
    const w1 = await createWorker({ redis: url, queue: q1.name, upscaler: up });
    const events = new QueueEvents(q1.name, { connection: { url } });
    await events.waitUntilReady();
    let k = 0;
    const direct = await runBench('direct', (d) => {
      const img = images[k++ % images.length]!;
      void up
        .upscale(img, { format: 'png' })
        .then((buf) => writeOutputAtomic(out(), buf))
        .then(() => d.resolve());
    });
    const viaQueue = await runBench('queue', (d) => {
      const img = images[k++ % images.length]!;
      void enqueueUpscale(q1, { input: img, output: out() })
        .then((job) => job.waitUntilFinished(events))
        .then(() => d.resolve());
    });
    // The same two, alternating one of each, so that a change in the machine's load hits both:
    // the median of the paired differences.
    const diffs: number[] = [];
    const transport: number[] = [];
    for (let i = 0; i < PAIRS; i++) {
      const img = images[i % images.length]!;
      const a = performance.now();
      await writeOutputAtomic(out(), await up.upscale(img, { format: 'png' }));
      const b = performance.now();
      const r = (await (await enqueueUpscale(q1, { input: img, output: out() })).waitUntilFinished(events)) as {
        ms: number;
      };
      const c = performance.now();
      diffs.push(c - b - (b - a));
      // The part the machine's load hardly touches: enqueue -> completed seen by the producer,
      // less the time the worker spent on the job (result.ms, whole milliseconds).
      transport.push(c - b - r.ms);
    }
    await events.close();

    // 2. Throughput in one process: a full queue against a plain loop, alternated ROUNDS times.
    const slice = images.slice(0, JOBS);
    const directBatch: number[] = [];
    const queueBatch: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now();
      for (const img of slice) await writeOutputAtomic(out(), await up.upscale(img, { format: 'png' }));
      directBatch.push(performance.now() - t0);
      const t1 = performance.now();
      const jobs: UpscaleJob[] = [];
      for (const img of slice) jobs.push(await enqueueUpscale(q1, { input: img, output: out() }));
      await waitForJobs(q1, jobs);
      queueBatch.push(performance.now() - t1);
    }
    const directBatchMs = median(directBatch);
    const queueBatchMs = median(queueBatch);
    await w1.close();
    await q1.close();

    // 3. Worker processes: 1 against 2.
    const procRuns: Record<'1' | '2', number[]> = { '1': [], '2': [] };
    for (let r = 0; r < ROUNDS; r++) {
      for (const workers of [1, 2] as const) {
        const q = openQueue({ redis: url, queue: `bench-tp-${process.pid}-${r}-${workers}` });
        const procs = await Promise.all(Array.from({ length: workers }, () => startWorker(url, q.name)));
        const t = performance.now();
        const js: UpscaleJob[] = [];
        for (const img of slice) js.push(await enqueueUpscale(q, { input: img, output: out() }));
        const outcomes = await waitForJobs(q, js);
        const ms = performance.now() - t;
        if (outcomes.some((o) => o.error)) throw new Error(`failed jobs: ${outcomes.find((o) => o.error)!.error}`);
        procRuns[String(workers) as '1' | '2'].push(ms);
        await Promise.all(procs.map(stopWorker));
        await q.close();
      }
    }

    const ms = (b: Benchmark): number => b.stats.mean * 1000;
    const one = median(procRuns['1']);
    const two = median(procRuns['2']);
    const result = {
      date: new Date().toISOString(),
      machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version, loadavgStart: load0 },
      setup: {
        model: 'test/fixtures/golden/tiny-model.safetensors',
        device: 'cpu',
        images: '40-58 x 36-52 px, one tile',
        jobs: JOBS,
      },
      latency: {
        directMs: ms(direct),
        directRme: direct.stats.rme,
        directSamples: direct.stats.sample.length,
        queueMs: ms(viaQueue),
        queueRme: viaQueue.stats.rme,
        queueSamples: viaQueue.stats.sample.length,
        overheadMsPerJob: ms(viaQueue) - ms(direct),
        pairs: PAIRS,
        pairedOverheadMedianMs: median(diffs),
        pairedOverheadQuartilesMs: [quantile(diffs, 0.25), quantile(diffs, 0.75)],
        transportMedianMs: median(transport),
        transportQuartilesMs: [quantile(transport, 0.25), quantile(transport, 0.75)],
      },
      batchInProcess: {
        directRunsMs: directBatch,
        queueRunsMs: queueBatch,
        directMs: directBatchMs,
        queueMs: queueBatchMs,
        overheadMsPerJob: (queueBatchMs - directBatchMs) / JOBS,
      },
      workerProcesses: {
        rounds: procRuns,
        oneWorkerJobsPerS: (JOBS * 1000) / one,
        twoWorkersJobsPerS: (JOBS * 1000) / two,
        speedup: one / two,
      },
      loadavgEnd: loadavg(),
    };
    console.table({
      'direct (upscale + write)': { 'ms/job': ms(direct).toFixed(1), rme: `±${direct.stats.rme.toFixed(1)}%` },
      'queue (enqueue -> completed)': { 'ms/job': ms(viaQueue).toFixed(1), rme: `±${viaQueue.stats.rme.toFixed(1)}%` },
      'overhead per job (latency)': { 'ms/job': result.latency.overheadMsPerJob.toFixed(1), rme: '' },
      [`overhead per job (${PAIRS} alternating pairs, median)`]: {
        'ms/job': median(diffs).toFixed(1),
        rme: `IQR ${quantile(diffs, 0.25).toFixed(1)}..${quantile(diffs, 0.75).toFixed(1)}`,
      },
      'Redis + BullMQ round trip (enqueue -> completed - worker time), median': {
        'ms/job': median(transport).toFixed(1),
        rme: `IQR ${quantile(transport, 0.25).toFixed(1)}..${quantile(transport, 0.75).toFixed(1)}`,
      },
      [`overhead per job (${JOBS} queued)`]: { 'ms/job': result.batchInProcess.overheadMsPerJob.toFixed(1), rme: '' },
    });
    console.table({
      '1 worker process': {
        'jobs/s': result.workerProcesses.oneWorkerJobsPerS.toFixed(2),
        'runs (ms)': procRuns['1'].map(Math.round).join(', '),
      },
      '2 worker processes': {
        'jobs/s': result.workerProcesses.twoWorkersJobsPerS.toFixed(2),
        'runs (ms)': procRuns['2'].map(Math.round).join(', '),
      },
    });
    console.log(`2 workers / 1 worker: ${result.workerProcesses.speedup.toFixed(2)}x on ${cpus().length} cores`);
    const file = join(ROOT, 'bench/results/queue.json');
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`wrote ${file}`);
  } finally {
    await up.dispose();
    await rm(dir, { recursive: true, force: true });
    await server?.destroy();
  }
}

await main();
