/**
 * `alignvar serve` as a library: real HTTP on 127.0.0.1 (ephemeral ports), the tiny model
 * fixture on the CPU, no mocks. Each error status, the answer's bytes against the API's, 200
 * concurrent requests against a queue of 16, client disconnects, metrics.
 * Skipped, with the reason printed, while the fixture does not exist.
 */
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type AlignvarServer, type Upscaler, createUpscaler, startServer } from '../../src/index.js';
import { call, errorBody, expectIdle, metric, testImage, upscale, waitFor } from './http.js';

const MODEL = fileURLToPath(new URL('../fixtures/golden/tiny-model.safetensors', import.meta.url));
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`server: skipped: fixture ${MODEL} does not exist yet`);

type Started = AlignvarServer & { url: string };

describe.skipIf(!HAVE_MODEL)('alignvar serve (tiny model)', () => {
  let server: Started;
  let small: Buffer;
  beforeAll(async () => {
    server = await startServer({
      port: 0,
      maxBodyBytes: 1024 * 1024,
      upscalerOptions: { model: MODEL, device: 'cpu', maxQueuedRequests: 16, maxOutputPixels: 160 * 160 * 16 },
    });
    small = await testImage(16, 16);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('answers the upscaled image with its Content-Type, the same bytes as the API', async () => {
    const a = await upscale(server.url, small);
    expect(a.status).toBe(200);
    expect(a.headers['content-type']).toBe('image/png');
    expect(a.headers['x-request-id']).toMatch(/^req-/);
    const meta = await sharp(a.body).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 64, 64]);
    expect(a.body.equals(await server.upscaler.upscale(small, {}))).toBe(true);

    const webp = await upscale(server.url, small, { format: 'webp', quality: '80', seed: '3' });
    expect(webp.status).toBe(200);
    expect(webp.headers['content-type']).toBe('image/webp');
    expect(webp.body.equals(await server.upscaler.upscale(small, { format: 'webp', quality: 80, seed: 3 }))).toBe(true);

    const jpeg = await upscale(server.url, await testImage(20, 12, 'jpeg'), {}, { 'content-type': 'application/json' });
    expect(jpeg.status).toBe(200);
    expect(jpeg.headers['content-type']).toBe('image/jpeg');
    expect(await sharp(jpeg.body).metadata()).toMatchObject({ width: 80, height: 48 });
  });

  it('echoes a safe client request id and replaces an unsafe one', async () => {
    const a = await upscale(server.url, 'x', {}, { 'x-request-id': 'import-42' });
    expect(a.headers['x-request-id']).toBe('import-42');
    expect(errorBody(a).message).toContain('request import-42');
    const b = await upscale(server.url, 'x', {}, { 'x-request-id': 'a b\u00e9' });
    expect(b.headers['x-request-id']).toMatch(/^req-/);
  });

  it('answers 400 with the API message for bad query options', async () => {
    const cases: Array<[Record<string, string> | string, string]> = [
      [{ format: 'bmp' }, 'Expected one of "png", "jpeg", "webp", "tiff", "avif", "gif" for format but received "bmp"'],
      [{ quality: '0' }, 'Expected integer between 1 and 100 for quality but received 0'],
      [{ quality: 'high' }, 'Expected integer between 1 and 100 for quality but received "high"'],
      [{ seed: '-1' }, 'Expected integer between 0 and 9007199254740991 for seed but received -1'],
      [{ seed: '1.5' }, 'Expected integer between 0 and 9007199254740991 for seed but received 1.5'],
      [{ top_k: '3' }, 'Expected one of "format", "quality", "seed" for query parameter but received "top_k"'],
      [{ raw: 'true' }, 'Expected one of "format", "quality", "seed" for query parameter but received "raw"'],
      ['seed=1&seed=2', "Expected a single value for query parameter seed but received [ '1', '2' ]"],
    ];
    for (const [query, message] of cases) {
      const a =
        typeof query === 'string'
          ? await call(`${server.url}/v1/upscale?${query}`, { method: 'POST', body: small })
          : await upscale(server.url, small, query);
      expect(a.status, JSON.stringify(query)).toBe(400);
      expect(a.headers['content-type']).toMatch(/^application\/json/);
      expect(errorBody(a)).toEqual({
        code: 'ERR_INVALID_OPTION',
        message: `${message} (request ${a.headers['x-request-id']})`,
      });
    }
  });

  it('answers 400 for a corrupt image and for no body', async () => {
    const truncated = await upscale(server.url, small.subarray(0, 60));
    expect(truncated.status).toBe(400);
    const e = errorBody(truncated);
    expect(e.code).toBe('ERR_INVALID_IMAGE');
    expect(e.message).toMatch(
      new RegExp(`^Cannot upscale request ${truncated.headers['x-request-id']}: corrupt or truncated`),
    );

    const empty = await call(`${server.url}/v1/upscale`, { method: 'POST' });
    expect(empty.status).toBe(400);
    expect(errorBody(empty).code).toBe('ERR_EMPTY_BODY');
  });

  it('answers 413 for a body over the limit and for an image over the pixel limit', async () => {
    const big = await upscale(server.url, Buffer.alloc(1024 * 1024 + 1, 7));
    expect(big.status).toBe(413);
    expect(errorBody(big).code).toBe('ERR_BODY_TOO_LARGE');

    // 161 x 160 input pixels: the x4 output passes maxOutputPixels (160 x 160 x 16).
    const wide = await upscale(server.url, await testImage(161, 160));
    expect(wide.status).toBe(413);
    const e = errorBody(wide);
    expect(e.code).toBe('ERR_IMAGE_TOO_LARGE');
    expect(e.message).toContain('161x160 pixels would give a 644x640 output');
    expect(e.message).toContain(`request ${wide.headers['x-request-id']}`);
  });

  it('answers 415 for data that is no image format', async () => {
    const a = await upscale(server.url, 'just some text, not an image', {}, { 'content-type': 'image/png' });
    expect(a.status).toBe(415);
    expect(errorBody(a)).toEqual({
      code: 'ERR_UNSUPPORTED_IMAGE',
      message: `Cannot upscale request ${a.headers['x-request-id']}: unsupported or unrecognised image format`,
    });
  });

  it('answers 404 as JSON for other routes', async () => {
    const a = await call(`${server.url}/v2/upscale`, { method: 'POST', body: small });
    expect(a.status).toBe(404);
    expect(errorBody(a).code).toBe('ERR_NOT_FOUND');
  });

  it('answers every one of 200 concurrent requests against a queue of 16 with 200 or 503', async () => {
    const answers = await Promise.all(Array.from({ length: 200 }, () => upscale(server.url, small)));
    const ok = answers.filter((a) => a.status === 200);
    const full = answers.filter((a) => a.status === 503);
    expect(ok.length + full.length).toBe(200);
    expect(ok.length).toBeGreaterThanOrEqual(16);
    expect(full.length).toBeGreaterThan(0);
    const expected = await server.upscaler.upscale(small, {});
    for (const a of ok) expect(a.body.equals(expected)).toBe(true);
    for (const a of full) {
      expect(Number(a.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      const e = errorBody(a);
      expect(e.code).toBe('ERR_QUEUE_FULL');
      expect(e.message).toContain(`(request ${a.headers['x-request-id']})`);
    }
    await expectIdle(server.url);
  });

  it('aborts the work of a client that disconnects', async () => {
    const before = await (await call(`${server.url}/metrics`)).body.toString();
    const aborted0 = metric(before, 'alignvar_upscales_total{outcome="aborted"}') ?? 0;
    const closed0 = metric(before, 'alignvar_http_requests_total{method="POST",route="/v1/upscale",status="499"}') ?? 0;
    // 160 x 160 pixels: 16 tiles, many engine batches; the client leaves during the first.
    const image = await testImage(160, 160);
    const socket = connect(Number(new URL(server.url).port), '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.write(`POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: ${image.length}\r\n\r\n`);
    socket.write(image);
    let answered = false;
    socket.on('data', () => {
      answered = true;
    });
    await waitFor(async () => {
      const s = server.upscaler.stats?.();
      return s !== undefined && s.runningRequests > 0 ? true : undefined;
    });
    socket.destroy();
    const after = await waitFor(async () => {
      const text = (await call(`${server.url}/metrics`)).body.toString();
      return (metric(text, 'alignvar_upscales_total{outcome="aborted"}') ?? 0) > aborted0 ? text : undefined;
    });
    expect(answered).toBe(false);
    expect(metric(after, 'alignvar_http_requests_total{method="POST",route="/v1/upscale",status="499"}')).toBe(
      closed0 + 1,
    );
    await waitFor(async () => (server.upscaler.stats?.().runningRequests === 0 ? true : undefined));
    expect(server.upscaler.stats?.()).toMatchObject({ queuedRequests: 0, runningRequests: 0, queuedTiles: 0 });
    expect((await upscale(server.url, small)).status).toBe(200);
  });

  it('serves Prometheus metrics: requests by route and status, latency, queue depth, batch size', async () => {
    const a = await call(`${server.url}/metrics`);
    expect(a.status).toBe(200);
    expect(a.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = a.body.toString();
    for (const name of [
      'alignvar_http_requests_total',
      'alignvar_http_request_duration_seconds',
      'alignvar_http_requests_in_flight',
      'alignvar_upscales_total',
      'alignvar_queue_requests',
      'alignvar_running_requests',
      'alignvar_queue_tiles',
      'alignvar_batch_size_mean',
      'alignvar_engine_batches_total',
      'alignvar_engine_tiles_total',
    ]) {
      expect(text, name).toMatch(new RegExp(`^# HELP ${name} .+\\n# TYPE ${name} (counter|gauge|histogram)$`, 'm'));
    }
    const route = 'method="POST",route="/v1/upscale"';
    expect(metric(text, `alignvar_http_requests_total{${route},status="200"}`)).toBeGreaterThanOrEqual(16);
    expect(metric(text, `alignvar_http_requests_total{${route},status="503"}`)).toBeGreaterThan(0);
    for (const s of ['400', '413', '415']) {
      expect(metric(text, `alignvar_http_requests_total{${route},status="${s}"}`), s).toBeGreaterThan(0);
    }
    expect(metric(text, 'alignvar_http_requests_total{method="POST",route="unmatched",status="404"}')).toBe(1);
    const count = metric(text, `alignvar_http_request_duration_seconds_count{${route}}`)!;
    expect(metric(text, `alignvar_http_request_duration_seconds_bucket{le="+Inf",${route}}`)).toBe(count);
    expect(count).toBeGreaterThan(200);
    // This scrape itself is the only request in flight.
    expect(metric(text, 'alignvar_http_requests_in_flight')).toBe(1);
    expect(metric(text, 'alignvar_queue_requests')).toBe(0);
    expect(metric(text, 'alignvar_queue_tiles')).toBe(0);
    const stats = server.upscaler.stats!();
    expect(metric(text, 'alignvar_engine_batches_total')).toBe(stats.batchesRun);
    expect(metric(text, 'alignvar_engine_tiles_total')).toBe(stats.tilesRun);
    expect(metric(text, 'alignvar_batch_size_mean')).toBeCloseTo(stats.meanBatchSize, 10);
    expect(metric(text, 'alignvar_batch_size_mean')).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);
  });
});

describe.skipIf(!HAVE_MODEL)('alignvar serve: timeouts and shared upscalers', () => {
  let up: Upscaler;
  beforeAll(async () => {
    up = await createUpscaler({ model: MODEL, device: 'cpu' });
  });
  afterAll(async () => {
    await up?.dispose();
  });

  it('answers 504 when a call runs past the timeout, and keeps serving', async () => {
    // 1 ms: the decode alone (two sharp calls on the thread pool) takes longer.
    const server = await startServer({ port: 0, upscaler: up, timeoutMs: 1 });
    try {
      const a = await upscale(server.url, await testImage(128, 128));
      expect(a.status).toBe(504);
      expect(errorBody(a).code).toBe('ERR_TIMEOUT');
      expect(errorBody(a).message).toContain(`(request ${a.headers['x-request-id']})`);
      expect((await call(`${server.url}/healthz`)).status).toBe(200);
    } finally {
      await server.close();
    }
    // close() leaves an upscaler it did not create alone.
    expect((await up.upscale(await testImage(8, 8))).length).toBeGreaterThan(0);
  });

  it('rejects invalid server options with the API wording', async () => {
    await expect(startServer({ port: 70000, upscaler: up })).rejects.toThrow(
      'Expected integer between 0 and 65535 for port but received 70000',
    );
    await expect(startServer({ maxBodyBytes: 0, upscaler: up })).rejects.toThrow(
      'Expected integer between 1 and 2147483647 for maxBodyBytes but received 0',
    );
    await expect(startServer({ timeoutMs: -1, upscaler: up })).rejects.toThrow(
      'Expected integer between 0 and 2147483647 for timeoutMs but received -1',
    );
    await expect(startServer({ maxQueue: 3 } as never)).rejects.toThrow('for options key but received "maxQueue"');
  });
});
