/**
 * The hostile corpus (test/helpers/hostile.ts) through `POST /v1/upscale`, one real HTTP request
 * per file: each bad file gets a 4xx JSON error naming the request with the API's own problem
 * text, each good one the API's bytes; the input is unchanged, and the server keeps serving.
 * Then the whole corpus and a few good images at once, against one server: each answer is the
 * one it gets alone. Skipped while the tiny model fixture does not exist.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type AlignvarServer, ImageError, type UpscaleOptions, createUpscaler, startServer } from '../../src/index.js';
import { type HostileCase, makeHostileCorpus } from '../helpers/hostile.js';
import { type HttpAnswer, call, errorBody, expectIdle, testImage, upscale } from './http.js';

const MODEL = fileURLToPath(new URL('../fixtures/golden/tiny-model.safetensors', import.meta.url));
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`server/hostile: skipped: fixture ${MODEL} does not exist yet`);

/** Status and code the server answers for each ImageError reason. */
const BY_REASON: Record<ImageError['reason'], [number, string]> = {
  unsupported: [415, 'ERR_UNSUPPORTED_IMAGE'],
  'too-large': [413, 'ERR_IMAGE_TOO_LARGE'],
  corrupt: [400, 'ERR_INVALID_IMAGE'],
  'not-found': [400, 'ERR_INVALID_IMAGE'],
};

const hash = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const sha256 = async (file: string) => hash(await readFile(file));

/** Longest wait for one answer in the concurrent test: a request that hangs fails it. */
const ANSWER_TIMEOUT_MS = 30_000;

/** One request of the concurrent test. */
interface Job {
  name: string;
  /** The corpus file the bytes were read from (the good images have none). */
  file?: string;
  bytes: Buffer;
  query: Record<string, string>;
  options: UpscaleOptions & { raw?: false };
  /** Whether the API upscales it (else it must fail with an `ImageError`, or the body is empty). */
  ok: boolean;
  /** The Content-Type its options ask for (the good images). */
  type?: string;
}

/** The answer the library API's result for the same input and options means. */
type Expected = { status: 200; type: string; body: Buffer } | { status: number; code: string; message?: string };

/** Content-Type of each format sharp's metadata names (sharp writes AVIF as `heif`). */
const IMAGE_TYPES: Record<string, string> = {
  png: 'image/png',
  jpeg: 'image/jpeg',
  webp: 'image/webp',
  gif: 'image/gif',
  tiff: 'image/tiff',
  heif: 'image/avif',
};

describe.skipIf(!HAVE_MODEL)('alignvar serve: hostile images', () => {
  let server: AlignvarServer & { url: string };
  let dir: string;
  let corpus: HostileCase[];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'alignvar-serve-hostile-'));
    corpus = await makeHostileCorpus(dir);
    // The defaults of `alignvar serve`, but for the model and the device.
    server = await startServer({ port: 0, upscalerOptions: { model: MODEL, device: 'cpu' } });
  });
  afterAll(async () => {
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('has at least 30 cases, both kinds', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(30);
    expect(corpus.some((c) => c.expect === 'ok')).toBe(true);
  });

  it('answers each bad file with a 4xx error naming the request, each good one with the image', async () => {
    const refusedBeforeDecode: string[] = [];
    for (const c of corpus) {
      const before = await sha256(c.file);
      const bytes = await readFile(c.file);
      const id = `hostile-${c.name.replace(/[^\w.-]/g, '_').slice(0, 40)}`;
      const a = await upscale(server.url, bytes, {}, { 'x-request-id': id });
      expect(a.headers['x-request-id'], c.name).toBe(id);
      if (c.expect === 'ok') {
        expect(a.status, `${c.name}: ${a.body.toString().slice(0, 300)}`).toBe(200);
        expect(a.headers['content-type'], c.name).toMatch(/^image\//);
        expect(a.body.equals(await server.upscaler.upscale(bytes, {})), c.name).toBe(true);
      } else if (bytes.length === 0) {
        expect([a.status, errorBody(a).code], c.name).toEqual([400, 'ERR_EMPTY_BODY']);
        expect(errorBody(a).message, c.name).toContain(`(request ${id})`);
      } else {
        // The API's own error for the same bytes gives the status and the text.
        const apiError = await server.upscaler.upscale(bytes, {}).then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(
          apiError,
          `${c.name}: the corpus expects an error, the API itself gives ${String(apiError)}`,
        ).toBeInstanceOf(ImageError);
        const { reason, problem } = apiError as ImageError;
        expect([a.status, errorBody(a)], c.name).toEqual([
          BY_REASON[reason][0],
          { code: BY_REASON[reason][1], message: `Cannot upscale request ${id}: ${problem}` },
        ]);
        if (reason === 'too-large') refusedBeforeDecode.push(c.name);
      }
      expect(await sha256(c.file), `${c.name} unchanged`).toBe(before);
    }
    // Bombs and the 20000x20000 image are refused as too large (413), before their pixels are decoded.
    expect(refusedBeforeDecode.filter((n) => /bomb|20000/.test(n)).length).toBeGreaterThanOrEqual(4);
  });

  it('answers the corpus and good images sent at once each as when sent alone, and keeps serving', async () => {
    // Good images of several sizes, formats and options, sent among the corpus.
    const goods: Job[] = await Promise.all(
      (
        [
          [16, 16, 'png', {}, {}, 'image/png'],
          [37, 23, 'jpeg', {}, {}, 'image/jpeg'],
          [64, 40, 'png', { seed: '7' }, { seed: 7 }, 'image/png'],
          [29, 51, 'jpeg', { format: 'webp', quality: '80' }, { format: 'webp', quality: 80 }, 'image/webp'],
        ] as const
      ).map(async ([w, h, format, query, options, type]) => ({
        name: `good-${w}x${h}-${format}`,
        bytes: await testImage(w, h, format),
        query,
        options,
        ok: true,
        type,
      })),
    );
    const hostile: Job[] = await Promise.all(
      corpus.map(async (c) => ({
        name: c.name,
        file: c.file,
        bytes: await readFile(c.file),
        query: {},
        options: {},
        ok: c.expect === 'ok',
      })),
    );
    // A good image before the corpus and after each further quarter of it.
    const step = Math.ceil(hostile.length / goods.length);
    const jobs = hostile.flatMap((j, k) => (k % step === 0 && k / step < goods.length ? [goods[k / step]!, j] : [j]));
    expect(jobs.length).toBe(hostile.length + goods.length);
    const ids = jobs.map((j, k) => `c${k}-${j.name.replace(/[^\w.-]/g, '_').slice(0, 40)}`);
    const fileHashes = await Promise.all(jobs.map((j) => (j.file === undefined ? '' : sha256(j.file))));
    const byteHashes = jobs.map((j) => hash(j.bytes));

    // What the library API gives for each input alone, on the same model and options.
    const expected: Expected[] = [];
    const ref = await createUpscaler({ model: MODEL, device: 'cpu' });
    try {
      for (const [k, j] of jobs.entries()) {
        if (j.bytes.length === 0) {
          expected.push({ status: 400, code: 'ERR_EMPTY_BODY' });
          continue;
        }
        const got = await ref.upscale(j.bytes, j.options).then(
          (body) => ({ body }),
          (err: unknown) => ({ err }),
        );
        if ('body' in got) {
          expect(j.ok, `${j.name}: the corpus expects an error, the API upscales it`).toBe(true);
          const type = IMAGE_TYPES[(await sharp(got.body).metadata()).format ?? ''];
          expect(type, `${j.name}: the type of the API's output`).toBe(j.type ?? type);
          expected.push({ status: 200, type: type!, body: got.body });
        } else {
          expect(j.ok, `${j.name}: the API fails it: ${String(got.err)}`).toBe(false);
          expect(got.err, `${j.name}: the API gives ${String(got.err)}`).toBeInstanceOf(ImageError);
          const { reason, problem } = got.err as ImageError;
          const [status, code] = BY_REASON[reason];
          expected.push({ status, code, message: `Cannot upscale request ${ids[k]}: ${problem}` });
        }
      }
    } finally {
      await ref.dispose();
    }
    expect(expected.filter((e) => 'body' in e).length).toBe(jobs.filter((j) => j.ok).length);
    expect(hostile.filter((j) => !j.ok).length).toBeGreaterThanOrEqual(30);

    // One server whose queue admits every request at once.
    const busy = await startServer({
      port: 0,
      upscalerOptions: { model: MODEL, device: 'cpu', maxQueuedRequests: jobs.length },
    });
    try {
      const settled = await Promise.allSettled(
        jobs.map((j, k) => upscale(busy.url, j.bytes, j.query, { 'x-request-id': ids[k]! }, ANSWER_TIMEOUT_MS)),
      );
      const unanswered = settled.flatMap((r, k) => (r.status === 'rejected' ? [`${ids[k]}: ${String(r.reason)}`] : []));
      expect(unanswered, 'requests without an answer').toEqual([]);
      const answers = settled.map((r) => (r as PromiseFulfilledResult<HttpAnswer>).value);
      const failed = answers.flatMap((a, k) =>
        a.status >= 500 ? [`${ids[k]}: ${a.status} ${a.body.toString().slice(0, 300)}`] : [],
      );
      expect(failed, 'requests answered 5xx').toEqual([]);

      for (const [k, j] of jobs.entries()) {
        const a = answers[k]!;
        const e = expected[k]!;
        const what = `${j.name}: ${a.status} ${a.headers['content-type']} ${a.body.toString().slice(0, 300)}`;
        expect(a.headers['x-request-id'], j.name).toBe(ids[k]);
        if ('body' in e) {
          expect([a.status, a.headers['content-type']], what).toEqual([200, e.type]);
          expect(a.body.equals(e.body), `${j.name}: the API's bytes`).toBe(true);
        } else {
          expect(a.status, what).toBe(e.status);
          expect(a.headers['content-type'], what).toMatch(/^application\/json/);
          const body = errorBody(a);
          expect(Object.keys(body).sort(), what).toEqual(['code', 'message']);
          expect(body.code, what).toBe(e.code);
          if (e.message === undefined) expect(body.message, what).toContain(`(request ${ids[k]})`);
          else expect(body.message, what).toBe(e.message); // no other request's decoder text
        }
      }

      // The inputs are unchanged, in memory and on disk.
      expect(jobs.map((j) => hash(j.bytes))).toEqual(byteHashes);
      expect(await Promise.all(jobs.map((j) => (j.file === undefined ? '' : sha256(j.file))))).toEqual(fileHashes);

      // Healthy afterwards: nothing left queued or running, and one more good request is served.
      await expectIdle(busy.url, ANSWER_TIMEOUT_MS);
      const k = jobs.indexOf(goods[2]!);
      const again = await upscale(busy.url, jobs[k]!.bytes, jobs[k]!.query, {}, ANSWER_TIMEOUT_MS);
      expect([again.status, again.headers['content-type']], again.body.toString().slice(0, 300)).toEqual([
        200,
        'image/png',
      ]);
      expect(again.body.equals((expected[k] as { body: Buffer }).body)).toBe(true);
    } finally {
      await busy.close();
    }
  }, 60_000);

  it('keeps serving afterwards', async () => {
    expect((await call(`${server.url}/healthz`)).status).toBe(200);
    const a = await upscale(server.url, await testImage(16, 16));
    expect(a.status).toBe(200);
    expect(server.upscaler.stats?.()).toMatchObject({ queuedRequests: 0, runningRequests: 0, queuedTiles: 0 });
  });
});
