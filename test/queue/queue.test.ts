/**
 * The queue end to end on a real Redis (see ./redis.ts for where it comes from; no Redis: the
 * suite is skipped and counted as skipped, or fails under CI). Workers are `alignvar worker`
 * child processes on the tiny model fixture; jobs are small images.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type Upscaler, backendInfo, createUpscaler } from '../../src/index.js';
import {
  QUEUE_TEMP_SUFFIX,
  type UpscaleJob,
  type UpscaleQueue,
  enqueueUpscale,
  jobIdFor,
  openQueue,
  waitForJobs,
} from '../../src/queue/index.js';
import { REDIS_REQUIRED, RedisServer, acquireRedis, haveRedisServer } from './redis.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'src', 'cli', 'main.ts');
const MODEL = join(ROOT, 'test', 'fixtures', 'golden', 'tiny-model.safetensors');

const redis = existsSync(MODEL) ? await acquireRedis() : { reason: `fixture ${MODEL} does not exist` };
const url = 'url' in redis ? redis.url : undefined;
if (url === undefined) {
  const reason = 'reason' in redis ? redis.reason : '';
  if (REDIS_REQUIRED) throw new Error(`queue tests need Redis (CI): ${reason}`);
  console.log(`queue: skipped: ${reason}`);
}

/** A worker child process and what it has written to stderr. */
interface WorkerProc {
  proc: ChildProcess;
  log: () => string;
  exit: Promise<number | string>;
  waitFor: (re: RegExp) => Promise<void>;
}

/** Starts `alignvar worker` on the tiny model; on the CPU unless `args` name a `--device`. */
function startWorker(redisUrl: string, queue: string, ...args: string[]): WorkerProc {
  const proc = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      CLI,
      'worker',
      '--redis',
      redisUrl,
      '--queue',
      queue,
      '--model',
      MODEL,
      ...(args.includes('--device') ? [] : ['--device', 'cpu']),
      ...args,
    ],
    { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NO_COLOR: '1' } },
  );
  let text = '';
  const waiters: { re: RegExp; done: () => void }[] = [];
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (chunk: string) => {
    text += chunk;
    for (const w of [...waiters]) {
      if (w.re.test(text)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.done();
      }
    }
  });
  const exit = new Promise<number | string>((r) => proc.once('exit', (code, signal) => r(code ?? signal ?? -1)));
  return {
    proc,
    log: () => text,
    exit,
    waitFor: (re) =>
      new Promise<void>((resolveWait, reject) => {
        if (re.test(text)) return resolveWait();
        waiters.push({ re, done: resolveWait });
        void exit.then((code) => reject(new Error(`worker exited (${code}) before ${re}:\n${text}`)));
      }),
  };
}

/** Runs `alignvar enqueue <args>` to its end: exit status, stdout and stderr. */
function runEnqueue(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolveRun) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', CLI, 'enqueue', ...args],
      { cwd: ROOT, timeout: 100_000, env: { ...process.env, NO_COLOR: '1' } },
      (err, stdout, stderr) => {
        resolveRun({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

/** `text` as a regular expression that matches it literally. */
const escapeRe = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Lines "job <id> wrote <output>" in worker logs, counted per output. */
function writesPerOutput(...logs: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const log of logs) {
    for (const m of log.matchAll(/job \S+ wrote (\S+) \(/g)) counts.set(m[1]!, (counts.get(m[1]!) ?? 0) + 1);
  }
  return counts;
}

let dir: string;
let inputs: string[] = [];
let reference: Buffer[] = [];
let up: Upscaler;
let seq = 0;

/** 20 small RGB images of different sizes and content, one tile each. */
async function makeInputs(): Promise<string[]> {
  const paths: string[] = [];
  for (let i = 0; i < 20; i++) {
    const w = 24 + (i % 5) * 6;
    const h = 20 + (i % 4) * 8;
    const raw = Buffer.alloc(w * h * 3);
    for (let k = 0; k < raw.length; k++) raw[k] = (k * (7 + i) + i * 31) & 255;
    const p = join(dir, 'in', `img${String(i).padStart(2, '0')}.png`);
    await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
      .png()
      .toFile(p);
    paths.push(p);
  }
  return paths;
}

/** A fresh queue name and output folder per test. */
async function fresh(): Promise<{ queue: string; out: string; q: UpscaleQueue }> {
  const queue = `test-${process.pid}-${++seq}-${Date.now()}`;
  const out = join(dir, `out${seq}`);
  await mkdir(out);
  return { queue, out, q: openQueue({ redis: url!, queue }) };
}

const seedOf = (i: number): number => 1000 + i;

async function enqueueAll(q: UpscaleQueue, out: string): Promise<UpscaleJob[]> {
  const jobs: UpscaleJob[] = [];
  for (const [i, input] of inputs.entries()) {
    jobs.push(
      await enqueueUpscale(
        q,
        { input, output: join(out, `img${i}.png`), options: { seed: seedOf(i) } },
        { backoffMs: 200 },
      ),
    );
  }
  return jobs;
}

/** Every output exists, once, byte-identical to the in-process API's, and no temp file is left. */
async function expectAllOutputs(out: string, logs: string[]): Promise<void> {
  const names = (await readdir(out)).sort();
  expect(names).toEqual(inputs.map((_, i) => `img${i}.png`).sort());
  for (const [i] of inputs.entries()) {
    const got = await readFile(join(out, `img${i}.png`));
    expect(got.equals(reference[i]!), `img${i}.png differs from the API's output`).toBe(true);
  }
  const writes = writesPerOutput(...logs);
  for (const [i] of inputs.entries()) expect(writes.get(join(out, `img${i}.png`)), `writes of img${i}.png`).toBe(1);
}

/** Every file under `root` (dot files included), as paths relative to it, sorted. */
async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(root, join(e.parentPath, e.name)))
    .sort();
}

beforeAll(async () => {
  if (url === undefined) return;
  dir = await mkdtemp(join(tmpdir(), 'alignvar-queue-'));
  await mkdir(join(dir, 'in'));
  inputs = await makeInputs();
  up = await createUpscaler({ model: MODEL, device: 'cpu' });
  reference = [];
  for (const [i, input] of inputs.entries())
    reference.push(await up.upscale(input, { format: 'png', seed: seedOf(i) }));
});
afterAll(async () => {
  await up?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
  if ('server' in redis) await redis.server?.destroy();
});

describe.skipIf(url === undefined)('queue (real Redis)', () => {
  it('2 workers, 20 jobs: every output once, byte-identical to the API', async () => {
    const { queue, out, q } = await fresh();
    const a = startWorker(url!, queue, '--concurrency', '2');
    const b = startWorker(url!, queue, '--concurrency', '2');
    try {
      const jobs = await enqueueAll(q, out);
      // Enqueueing the same outputs again while they are queued adds nothing.
      const again = await enqueueUpscale(q, {
        input: inputs[0]!,
        output: join(out, 'img0.png'),
        options: { seed: seedOf(0) },
      });
      expect(again.id).toBe(jobs[0]!.id);
      const outcomes = await waitForJobs(q, jobs);
      expect(outcomes.map((o) => o.error)).toEqual(jobs.map(() => undefined));
      for (const [i, o] of outcomes.entries()) {
        expect(o.result).toMatchObject({ output: join(out, `img${i}.png`), device: 'cpu', skipped: false });
        const meta = await sharp(reference[i]!).metadata();
        expect([o.result!.width, o.result!.height]).toEqual([meta.width, meta.height]);
        const inMeta = await sharp(inputs[i]!).metadata();
        expect([o.result!.width, o.result!.height]).toEqual([4 * inMeta.width, 4 * inMeta.height]);
        expect(Number.isFinite(o.result!.ms) && o.result!.ms > 0, `ms ${o.result!.ms}`).toBe(true);
      }
      await expectAllOutputs(out, [a.log(), b.log()]);
      // A completed output enqueued again is marked done without work.
      const re = await enqueueUpscale(q, {
        input: inputs[3]!,
        output: join(out, 'img3.png'),
        options: { seed: seedOf(3) },
      });
      const [o] = await waitForJobs(q, [re]);
      expect(o!.result?.skipped).toBe(true);
      expect(writesPerOutput(a.log(), b.log()).get(join(out, 'img3.png'))).toBe(1);
    } finally {
      a.proc.kill('SIGTERM');
      b.proc.kill('SIGTERM');
      expect(await a.exit).toBe(0);
      expect(await b.exit).toBe(0);
      await q.close();
    }
  });

  it('kill -9 of a worker mid-job: another takes its job once the lock expires; all 20 once', async () => {
    const { queue, out, q } = await fresh();
    const a = startWorker(url!, queue, '--lock-duration', '2');
    let b: WorkerProc | undefined;
    try {
      const jobs = await enqueueAll(q, out);
      await a.waitFor(/job \S+ wrote .*\n(.|\n)*job \S+ wrote /);
      // Kill A while it reports progress on a job that is not finished.
      const active = await new Promise<UpscaleJob>((resolveActive) => {
        const t = setInterval(() => {
          void q.queue.getActive().then((list) => {
            const job = list.find((j) => {
              const p = j.progress as { scalesDone?: number; scalesTotal?: number } | number;
              return typeof p === 'object' && p.scalesDone! < p.scalesTotal!;
            });
            if (job) {
              clearInterval(t);
              a.proc.kill('SIGKILL');
              resolveActive(job);
            }
          });
        }, 5);
      });
      expect(await a.exit).toBe('SIGKILL');
      b = startWorker(url!, queue, '--lock-duration', '2');
      const outcomes = await waitForJobs(q, jobs);
      expect(outcomes.map((o) => o.error)).toEqual(jobs.map(() => undefined));
      expect(b.log()).toContain(`job ${active.id} stalled`);
      await expectAllOutputs(out, [a.log(), b.log()]);
    } finally {
      a.proc.kill('SIGKILL');
      b?.proc.kill('SIGTERM');
      if (b) expect(await b.exit).toBe(0);
      await q.close();
    }
  });

  it('a bad job among good ones fails at once with the ImageError message; the others go on', async () => {
    const { queue, out, q } = await fresh();
    const bad = join(dir, 'in-bad');
    await mkdir(bad, { recursive: true });
    const corrupt = join(bad, 'corrupt.png');
    await writeFile(corrupt, Buffer.from('89504e470d0a1a0a0000000d4948445200', 'hex'));
    // A folder: the images in it are chosen by content (a text file is ignored, a .png that is
    // not one is kept and fails).
    for (const i of [0, 1, 2]) await copyFile(inputs[i]!, join(bad, `img0${i}.png`));
    await writeFile(join(bad, 'notes.txt'), 'not an image');
    const w = startWorker(url!, queue);
    try {
      const r = await runEnqueue([bad, '-o', out, '--redis', url!, '--queue', queue, '--wait', '--format', 'png']);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain('alignvar: 4 jobs: 3 done, 1 failed');
      expect(r.stderr).toContain('1 file in the folders are not images (ignored)');
      expect(r.stderr).toMatch(/error: Cannot upscale .*corrupt\.png: /);
      const failed = await q.queue.getFailed();
      expect(failed).toHaveLength(1);
      expect(failed[0]!.failedReason).toMatch(new RegExp(`^Cannot upscale ${corrupt.replace(/[.]/g, '\\.')}: `));
      expect(failed[0]!.attemptsMade).toBe(1);
      expect(w.log().match(/corrupt\.png/g)).toHaveLength(1);
      expect((await readdir(out)).sort()).toEqual(['img00.png', 'img01.png', 'img02.png']);
      for (const i of [0, 1, 2]) {
        expect(
          (await readFile(join(out, `img0${i}.png`))).equals(await up.upscale(inputs[i]!, { format: 'png' })),
        ).toBe(true);
      }
    } finally {
      w.proc.kill('SIGTERM');
      expect(await w.exit).toBe(0);
      await q.close();
    }
  });

  it('SIGTERM: running jobs finish, no new ones are taken, exit 0', async () => {
    const { queue, out, q } = await fresh();
    const w = startWorker(url!, queue, '--concurrency', '2');
    try {
      const jobs = await enqueueAll(q, out);
      await w.waitFor(/job \S+ wrote /);
      w.proc.kill('SIGTERM');
      expect(await w.exit, w.log()).toBe(0);
      expect(w.log()).toContain('SIGTERM: no new jobs; finishing running ones');
      const states = await Promise.all(jobs.map((j) => q.queue.getJobState(j.id!)));
      const completed = jobs.filter((_, i) => states[i] === 'completed');
      expect(states.every((s) => s === 'completed' || s === 'waiting')).toBe(true);
      expect(completed.length).toBeGreaterThan(0);
      expect(completed.length).toBeLessThan(jobs.length);
      expect((await readdir(out)).sort()).toEqual(completed.map((j) => j.data.output.split('/').pop()).sort());
    } finally {
      w.proc.kill('SIGKILL');
      await q.close();
    }
  });

  it('SIGTERM past --drain-timeout hands running jobs back; another worker finishes them once', async () => {
    const { queue, out, q } = await fresh();
    const a = startWorker(url!, queue, '--concurrency', '2', '--drain-timeout', '0');
    let b: WorkerProc | undefined;
    try {
      const jobs = await enqueueAll(q, out);
      await a.waitFor(/job \S+ wrote /);
      a.proc.kill('SIGTERM');
      expect(await a.exit, a.log()).toBe(0);
      const handed = [...a.log().matchAll(/job (\S+) handed back to the queue/g)].map((m) => m[1]!);
      expect(handed.length, a.log()).toBeGreaterThan(0);
      // With the drain timeout 0, whatever was running when SIGTERM came is handed back.
      for (const id of handed) {
        expect(await q.queue.getJobState(id)).toBe('waiting');
        expect((await q.queue.getJob(id))!.attemptsMade).toBe(0);
      }
      expect((await readdir(out)).filter((n) => n.startsWith('.'))).toEqual([]);
      b = startWorker(url!, queue, '--concurrency', '2');
      const outcomes = await waitForJobs(q, jobs);
      expect(outcomes.map((o) => o.error)).toEqual(jobs.map(() => undefined));
      await expectAllOutputs(out, [a.log(), b.log()]);
    } finally {
      a.proc.kill('SIGKILL');
      b?.proc.kill('SIGTERM');
      if (b) expect(await b.exit).toBe(0);
      await q.close();
    }
  });

  it('a transient write error is retried after the backoff: done on attempt 2, one output, no temp file', async () => {
    const { queue, out, q } = await fresh();
    // A regular file where the output's folder goes: mkdir fails (EEXIST) until it is a folder.
    const sub = join(out, 'sub');
    await writeFile(sub, 'not a folder');
    const output = join(sub, 'img0.png');
    const w = startWorker(url!, queue);
    try {
      const job = await enqueueUpscale(
        q,
        { input: inputs[0]!, output, options: { seed: seedOf(0) } },
        { backoffMs: 1000 },
      );
      await w.waitFor(new RegExp(`job ${job.id} failed \\(attempt 1\\): EEXIST`));
      // The mount "comes back" while the job waits out its backoff.
      await rm(sub);
      await mkdir(sub);
      const [o] = await waitForJobs(q, [job]);
      expect(o!.error, w.log()).toBeUndefined();
      expect(o!.result).toMatchObject({ output, device: 'cpu', skipped: false });
      const done = (await q.queue.getJob(job.id!))!;
      expect(await done.getState()).toBe('completed');
      expect(done.attemptsMade).toBe(2);
      // The first attempt failed for the real reason, and only it did.
      expect(done.stacktrace).toHaveLength(1);
      expect(done.stacktrace![0]).toMatch(/^Error: EEXIST: .*mkdir/);
      expect(w.log().match(new RegExp(`job ${job.id} failed`, 'g'))).toHaveLength(1);
      const files = await filesUnder(out);
      expect(files.filter((f) => f.endsWith(QUEUE_TEMP_SUFFIX))).toEqual([]);
      expect(files).toEqual([join('sub', 'img0.png')]);
      expect((await readFile(output)).equals(reference[0]!), 'img0.png differs from the API output').toBe(true);
      expect(writesPerOutput(w.log()).get(output)).toBe(1);
    } finally {
      w.proc.kill('SIGTERM');
      expect(await w.exit).toBe(0);
      await q.close();
    }
  });

  it('an incomplete file at the output (truncated, wrong size, wrong format) is replaced, not marked done', async () => {
    const { queue, out, q } = await fresh();
    const ref = reference[0]!;
    const incomplete = [
      // Cut off mid-data: the header (and so the size) is intact.
      ref.subarray(0, Math.floor(ref.length / 2)),
      // A whole PNG, but the input's size instead of 4x.
      await sharp(inputs[1]!).png().toBuffer(),
      // The right size, but JPEG bytes under a .png name.
      await sharp(reference[2]!).jpeg().toBuffer(),
    ];
    const outputs = incomplete.map((_, i) => join(out, `img${i}.png`));
    const inodes: number[] = [];
    for (const [i, data] of incomplete.entries()) {
      await writeFile(outputs[i]!, data);
      inodes.push((await stat(outputs[i]!)).ino);
    }
    // What a worker killed between write and rename leaves: removed by the job.
    await writeFile(join(out, `.img0.png.999999.0badc0de${QUEUE_TEMP_SUFFIX}`), ref.subarray(0, 100));
    const w = startWorker(url!, queue);
    try {
      const jobs: UpscaleJob[] = [];
      for (const [i, output] of outputs.entries()) {
        jobs.push(await enqueueUpscale(q, { input: inputs[i]!, output, options: { seed: seedOf(i) } }));
      }
      const outcomes = await waitForJobs(q, jobs);
      expect(outcomes.map((o) => o.error)).toEqual(jobs.map(() => undefined));
      for (const [i, o] of outcomes.entries()) {
        expect(o.result).toMatchObject({ output: outputs[i], skipped: false });
        expect((await readFile(outputs[i]!)).equals(reference[i]!), `img${i}.png differs from the API output`).toBe(
          true,
        );
        // Renamed onto the path (a new file), not rewritten in place.
        expect((await stat(outputs[i]!)).ino).not.toBe(inodes[i]);
      }
      expect(w.log()).not.toContain('skipped');
      const writes = writesPerOutput(w.log());
      for (const output of outputs) expect(writes.get(output)).toBe(1);
      expect(await filesUnder(out)).toEqual(['img0.png', 'img1.png', 'img2.png']);
    } finally {
      w.proc.kill('SIGTERM');
      expect(await w.exit).toBe(0);
      await q.close();
    }
  });

  it('--device auto: the start line names the device and why CUDA was not used; jobs report that device', async () => {
    const { queue, out, q } = await fresh();
    // What the worker decides from: the same addon, read here (CUDA when it is available).
    const cuda = backendInfo().find((b) => b.name === 'cuda');
    const device = cuda?.available ? 'cuda:0' : 'cpu';
    const w = startWorker(url!, queue, '--device', 'auto');
    try {
      await w.waitFor(/ concurrency 1\n/);
      const start = w.log().split('\n')[0]!;
      if (device === 'cpu') {
        expect(start).toBe(
          `alignvar worker: model ${MODEL} on cpu (device auto: CUDA not used: ${cuda?.reason || 'CUDA is unavailable'}), ` +
            `queue ${queue}, concurrency 1`,
        );
      } else {
        expect(start).toBe(`alignvar worker: model ${MODEL} on cuda:0, queue ${queue}, concurrency 1`);
      }
      const output = join(out, 'img0.png');
      const job = await enqueueUpscale(q, { input: inputs[0]!, output, options: { seed: seedOf(0) } });
      const [o] = await waitForJobs(q, [job]);
      expect(o!.error, w.log()).toBeUndefined();
      expect(o!.result).toMatchObject({ output, device, skipped: false });
      const inMeta = await sharp(inputs[0]!).metadata();
      expect([o!.result!.width, o!.result!.height]).toEqual([4 * inMeta.width, 4 * inMeta.height]);
      expect(Number.isFinite(o!.result!.ms) && o!.result!.ms > 0, `ms ${o!.result!.ms}`).toBe(true);
      // On the CPU the output is the API's, byte for byte.
      if (device === 'cpu') expect((await readFile(output)).equals(reference[0]!)).toBe(true);
    } finally {
      w.proc.kill('SIGTERM');
      expect(await w.exit).toBe(0);
      await q.close();
    }
  });

  it('enqueue without --wait prints "<job id><tab><output>" per job and exits 0; the jobs stay queued', async () => {
    const { queue, out, q } = await fresh();
    // No worker: the command must return without waiting for any job to run.
    try {
      const r = await runEnqueue([inputs[4]!, inputs[5]!, '-o', out, '--redis', url!, '--queue', queue]);
      expect(r.code, r.stderr).toBe(0);
      const outputs = [join(out, 'img04.png'), join(out, 'img05.png')];
      expect(r.stdout).toBe(outputs.map((o) => `${jobIdFor(o)}\t${o}\n`).join(''));
      expect(r.stderr).toContain(`alignvar: queued 2 jobs on ${queue}\n`);
      expect(r.stderr).not.toContain('waiting for');
      expect(await q.queue.getWaitingCount()).toBe(2);
      for (const [i, output] of outputs.entries()) {
        const job = (await q.queue.getJob(jobIdFor(output)))!;
        expect(await job.getState()).toBe('waiting');
        expect(job.data).toEqual({ input: inputs[4 + i], output, options: { format: 'png' } });
        expect(job.attemptsMade).toBe(0);
      }
      expect(await readdir(out)).toEqual([]);
    } finally {
      await q.close();
    }
  });

  it('enqueue --wait, every job done: one line per job, "2 jobs: 2 done, 0 failed", exit 0', async () => {
    const { queue, out, q } = await fresh();
    const w = startWorker(url!, queue);
    try {
      const picked = [inputs[6]!, inputs[7]!];
      const r = await runEnqueue([...picked, '-o', out, '--redis', url!, '--queue', queue, '--wait']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(`alignvar: waiting for 2 jobs on ${queue}\n`);
      expect(r.stderr).toContain('alignvar: 2 jobs: 2 done, 0 failed\n');
      expect(r.stderr).not.toContain('alignvar: error');
      for (const [i, input] of picked.entries()) {
        const output = join(out, `img0${6 + i}.png`);
        const meta = await sharp(input).metadata();
        // Settled in either order: "[k/2] <input> -> <output> (<w>x<h>, <ms> ms on cpu)", 4x the input.
        const line = `\\[[12]/2\\] ${escapeRe(input)} -> ${escapeRe(output)} \\(${4 * meta.width}x${4 * meta.height}, \\d+ ms on cpu\\)\n`;
        expect(r.stderr).toMatch(new RegExp(line));
        // The worker's default seed (0), as the API's default.
        expect((await readFile(output)).equals(await up.upscale(input, { format: 'png' }))).toBe(true);
        expect((await q.queue.getJob(jobIdFor(output)))!.returnvalue).toMatchObject({ output, skipped: false });
      }
      expect(await q.queue.getCompletedCount()).toBe(2);
      expect(writesPerOutput(w.log()).size).toBe(2);
    } finally {
      w.proc.kill('SIGTERM');
      expect(await w.exit).toBe(0);
      await q.close();
    }
  });
});

const canRestart = url !== undefined && haveRedisServer();
if (url !== undefined && !canRestart) {
  if (REDIS_REQUIRED) throw new Error('the Redis restart test needs the redis-server binary (CI)');
  console.log('queue: Redis restart test skipped: no redis-server binary to start its own server');
}

describe.skipIf(!canRestart)('queue: Redis restarted mid-run', () => {
  let server: RedisServer | undefined;
  afterAll(async () => {
    await server?.destroy();
  });

  it('workers reconnect and finish; nothing is lost or written twice', async () => {
    // Its own server: the shared one must not be restarted under the other suites.
    server = await RedisServer.start();
    const queue = `restart-${process.pid}`;
    const out = join(dir, 'out-restart');
    await mkdir(out);
    const q = openQueue({ redis: server.url, queue });
    const a = startWorker(server.url, queue, '--lock-duration', '5');
    const b = startWorker(server.url, queue, '--lock-duration', '5');
    try {
      const jobs = await enqueueAll(q, out);
      await Promise.race([a.waitFor(/job \S+ wrote /), b.waitFor(/job \S+ wrote /)]);
      const before = writesPerOutput(a.log(), b.log()).size;
      await server.restart(500);
      expect(before).toBeLessThan(jobs.length);
      const outcomes = await waitForJobs(q, jobs);
      expect(outcomes.map((o) => o.error)).toEqual(jobs.map(() => undefined));
      expect(await q.queue.getCompletedCount()).toBe(20);
      await expectAllOutputs(out, [a.log(), b.log()]);
    } finally {
      a.proc.kill('SIGTERM');
      b.proc.kill('SIGTERM');
      expect(await a.exit).toBe(0);
      expect(await b.exit).toBe(0);
      await q.close();
    }
  });
});
