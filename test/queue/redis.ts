/**
 * Redis for the queue tests: the address in ALIGNVAR_REDIS_URL, else a redis-server this file
 * starts (binary from ALIGNVAR_REDIS_SERVER, default `redis-server` on PATH) on a free loopback
 * port with a throwaway data folder and append-only persistence, so that a restart keeps the
 * queue. With neither, the suites skip; with ALIGNVAR_REQUIRE_REDIS=1 (set by .ci/run) or
 * CI=1 they fail instead.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Redis } from 'ioredis';

/** Whether a missing Redis must fail the suite rather than skip it. */
export const REDIS_REQUIRED =
  process.env.ALIGNVAR_REQUIRE_REDIS === '1' || process.env.CI === '1' || process.env.CI === 'true';

const SERVER_BIN = process.env.ALIGNVAR_REDIS_SERVER || 'redis-server';

/** Whether the redis-server binary runs here. */
export function haveRedisServer(): boolean {
  const r = spawnSync(SERVER_BIN, ['--version'], { stdio: 'ignore' });
  return r.status === 0;
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

/** Answers PING within `ms`? */
export async function ping(url: string, ms = 1000): Promise<boolean> {
  const c = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: ms,
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return (await c.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    c.disconnect();
  }
}

/** A redis-server started by a test, restartable on the same port and data folder. */
export class RedisServer {
  readonly url: string;
  #proc: ChildProcess | undefined;

  private constructor(
    readonly port: number,
    readonly dir: string,
  ) {
    this.url = `redis://127.0.0.1:${port}`;
  }

  /** Starts one on a free port with a fresh data folder (append-only, fsync on every write). */
  static async start(): Promise<RedisServer> {
    const s = new RedisServer(await freePort(), await mkdtemp(join(tmpdir(), 'alignvar-redis-')));
    await s.#launch();
    return s;
  }

  async #launch(): Promise<void> {
    const args = [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--dir',
      this.dir,
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
      '--save',
      '',
      '--protected-mode',
      'yes',
    ];
    this.#proc = spawn(SERVER_BIN, args, { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      if (await ping(this.url, 200)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`redis-server on port ${this.port} did not answer`);
  }

  /** Stops the server (SIGTERM: it flushes the append-only file and exits). */
  async stop(): Promise<void> {
    const p = this.#proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await exited;
    this.#proc = undefined;
  }

  /** Stops it and starts it again on the same port and data folder. */
  async restart(downMs: number): Promise<void> {
    await this.stop();
    await new Promise((r) => setTimeout(r, downMs));
    await this.#launch();
  }

  /** Stops it and removes its data folder. */
  async destroy(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * The Redis the suites use: ALIGNVAR_REDIS_URL, else one started here.
 *
 * @returns Its URL and the server when this process started it, or a reason it has none.
 */
export async function acquireRedis(): Promise<{ url: string; server?: RedisServer } | { reason: string }> {
  const env = process.env.ALIGNVAR_REDIS_URL;
  if (env) {
    if (await ping(env, 3000)) return { url: env };
    return { reason: `ALIGNVAR_REDIS_URL=${env} does not answer PING` };
  }
  if (!haveRedisServer()) return { reason: `no ALIGNVAR_REDIS_URL and no ${SERVER_BIN} binary` };
  const server = await RedisServer.start();
  return { url: server.url, server };
}
