/**
 * `alignvar serve` as a real child process (`node --import tsx src/cli/main.ts serve`): SIGTERM
 * stops accepting connections, the request in flight is still answered in full, and the process
 * exits 0. Also the command's usage errors. Skipped while the tiny model fixture does not exist.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';

import { call, testImage, upscale, waitFor } from './http.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'src', 'cli', 'main.ts');
const MODEL = join(ROOT, 'test', 'fixtures', 'golden', 'tiny-model.safetensors');
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`server/sigterm: skipped: fixture ${MODEL} does not exist yet`);

/** A running `alignvar serve` child, its stderr so far, and its exit. */
interface Child {
  proc: ChildProcess;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function serve(args: string[]): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(proc);
  let err = '';
  proc.stderr!.on('data', (c: Buffer) => {
    err += c.toString();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return { proc, stderr: () => err, exit };
}

/** Resolves when stderr matches `re`, with the match; rejects if the child exits first. */
async function line(child: Child, re: RegExp): Promise<RegExpMatchArray> {
  let exited = false;
  void child.exit.then(() => {
    exited = true;
  });
  return waitFor(async () => {
    const m = child.stderr().match(re);
    if (m) return m;
    if (exited) throw new Error(`alignvar serve exited before printing ${re}; stderr:\n${child.stderr()}`);
    return undefined;
  });
}

describe.skipIf(!HAVE_MODEL)('alignvar serve (child process)', () => {
  it('drains on SIGTERM: stops accepting, answers the request in flight, exits 0', async () => {
    const child = serve(['--model', MODEL, '--device', 'cpu', '--port', '0', '--max-queue', '4']);
    const base = (await line(child, /listening on (http:\/\/127\.0\.0\.1:\d+)/))[1]!;
    expect((await call(`${base}/healthz`)).status).toBe(200);

    // 160 x 160 pixels: 16 tiles, several engine batches on the CPU.
    const image = await testImage(160, 160);
    let answeredAt = -1;
    let events = 0;
    // A keep-alive client: the server must still close its connection once the answer is sent.
    const inFlight = upscale(base, image, {}, { connection: 'keep-alive' }).then((a) => {
      answeredAt = events++;
      return a;
    });
    await waitFor(async () => {
      const h = JSON.parse((await call(`${base}/healthz`)).body.toString()) as { runningRequests: number };
      return h.runningRequests > 0 ? true : undefined;
    });
    child.proc.kill('SIGTERM');
    await line(child, /SIGTERM: draining/);
    const drainingAt = events++;
    // The listening socket is closed: a new connection is refused.
    await expect(call(`${base}/healthz`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    const a = await inFlight;
    expect(answeredAt).toBeGreaterThan(drainingAt);
    expect(a.status).toBe(200);
    expect(await sharp(a.body).metadata()).toMatchObject({ format: 'png', width: 640, height: 640 });
    expect(await child.exit).toEqual({ code: 0, signal: null });
    expect(child.stderr()).toMatch(/alignvar serve: stopped\n$/);
  });

  it('rejects bad arguments before loading the model: usage errors exit 2, API option errors 1', async () => {
    for (const [args, message] of [
      [['--max-body', '12q'], '--max-body must be a size such as 1048576, 512k, 32m or 1g, not "12q"'],
      [['--timeout', 'soon'], '--timeout must be a number of seconds >= 0, not "soon"'],
      [['extra'], 'serve takes no arguments, got "extra"'],
      [['--port', '99999'], 'Expected integer between 0 and 65535 for port but received 99999'],
    ] as const) {
      const child = serve([...args, '--model', MODEL]);
      const { code } = await child.exit;
      expect(child.stderr()).toContain(message);
      expect(code, args.join(' ')).toBe(args[0] === '--port' ? 1 : 2);
    }
  });
});
