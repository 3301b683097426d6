/**
 * Plain node:http client calls for the server tests: one connection per request (no pooling,
 * so 200 concurrent requests are 200 sockets), the whole answer buffered.
 */
import { type IncomingHttpHeaders, request as httpRequest } from 'node:http';

import sharp from 'sharp';
import { expect } from 'vitest';

/** A buffered answer. */
export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Options of {@link call}. */
export interface CallOptions {
  method?: string;
  body?: Buffer | string;
  headers?: Record<string, string>;
  /** Time in ms for the whole answer to arrive, else the call rejects (and the socket is destroyed); default none. */
  timeoutMs?: number;
}

/** Sends one request and buffers the answer. */
export function call(url: string, options: CallOptions = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const method = options.method ?? 'GET';
    const req = httpRequest(url, { method, headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
      res.on('error', reject);
    });
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => req.destroy(new Error(`No answer to ${method} ${url} within ${options.timeoutMs} ms`)),
            options.timeoutMs,
          );
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(options.body);
  });
}

/** `POST /v1/upscale` with `body` and the query parameters (see {@link CallOptions} for `timeoutMs`). */
export function upscale(
  base: string,
  body: Buffer | string,
  query: Record<string, string> = {},
  headers?: Record<string, string>,
  timeoutMs?: number,
): Promise<HttpAnswer> {
  const qs = new URLSearchParams(query).toString();
  return call(`${base}/v1/upscale${qs ? `?${qs}` : ''}`, { method: 'POST', body, headers, timeoutMs });
}

/** The JSON body of an error answer. */
export function errorBody(a: HttpAnswer): { code: string; message: string } {
  return JSON.parse(a.body.toString('utf8')) as { code: string; message: string };
}

/** Asserts that the server's `/healthz` answers 200 with nothing queued or running. */
export async function expectIdle(base: string, timeoutMs?: number): Promise<void> {
  const health = await call(`${base}/healthz`, { timeoutMs });
  expect(health.status).toBe(200);
  expect(JSON.parse(health.body.toString())).toEqual({
    status: 'ok',
    queuedRequests: 0,
    runningRequests: 0,
    queuedTiles: 0,
  });
}

/** A smooth RGB test image of `w` x `h` pixels, encoded as `format`. */
export async function testImage(w: number, h: number, format: 'png' | 'jpeg' = 'png'): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      raw[i] = Math.round((255 * x) / Math.max(1, w - 1));
      raw[i + 1] = Math.round((255 * y) / Math.max(1, h - 1));
      raw[i + 2] = Math.round(128 + 100 * Math.sin(x / 5) * Math.cos(y / 7));
    }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .toFormat(format)
    .toBuffer();
}

/** Reads one sample of a Prometheus text exposition, e.g. `name{a="b"}`; undefined when absent. */
export function metric(text: string, sample: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return undefined;
}

/** Calls `probe` until it returns a value other than undefined (the test's timeout bounds it). */
export async function waitFor<T>(probe: () => Promise<T | undefined>, everyMs = 25): Promise<T> {
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
