/**
 * Redis connections for the queue: one ioredis client per Queue, Worker or QueueEvents (BullMQ
 * duplicates it for its blocking commands), set up to survive a Redis restart: unlimited
 * retries per command (BullMQ requires `maxRetriesPerRequest: null` for workers) and a
 * reconnect delay that grows to 2 s and never gives up, so commands wait while Redis is down
 * and run once it is back.
 */
import { Redis } from 'ioredis';

import { invalidOption } from '../errors.js';

/** A Redis address `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS), or a client. */
export type RedisTarget = string | Redis;

/**
 * Checks a Redis URL.
 *
 * @throws {TypeError} `Expected redis:// or rediss:// URL for <name> but received ...`.
 */
export function validateRedisUrl(name: string, value: unknown): string {
  if (typeof value === 'string') {
    try {
      const url = new URL(value);
      if ((url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== '') return value;
    } catch {
      // Reported below.
    }
  }
  throw invalidOption(name, 'redis:// or rediss:// URL (redis://host:port)', value);
}

/** Reconnect delay: 100 ms, 200 ms, ... up to 2 s, for ever. */
function retryStrategy(times: number): number {
  return Math.min(times * 100, 2000);
}

/**
 * A client for `target`: a new one for a URL (the caller owns it and must `quit` it), or the
 * given client itself.
 *
 * @param target - URL or client.
 * @param name - Option name for error messages.
 */
export function redisClient(target: RedisTarget, name = 'redis'): { client: Redis; owned: boolean } {
  if (target instanceof Redis) return { client: target, owned: false };
  const url = validateRedisUrl(name, target);
  const client = new Redis(url, { maxRetriesPerRequest: null, retryStrategy, lazyConnect: false });
  // Connection errors are retried; BullMQ reports them through its own 'error' events.
  client.on('error', () => undefined);
  return { client, owned: true };
}

/** Closes a client this package created (QUIT, or a hard disconnect when Redis is down). */
export async function closeClient(c: { client: Redis; owned: boolean }): Promise<void> {
  if (!c.owned) return;
  if (c.client.status === 'ready') {
    await c.client.quit().catch(() => c.client.disconnect());
  } else {
    c.client.disconnect();
  }
}
