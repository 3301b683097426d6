/**
 * The hostile corpus (test/helpers/hostile.ts) through `POST /v1/upscale`, one real HTTP request
 * per file: each bad file gets a 4xx JSON error naming the request with the API's own problem
 * text, each good one the API's bytes; the input is unchanged, and the server keeps serving.
 * Skipped while the tiny model fixture does not exist.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type AlignvarServer, ImageError, startServer } from '../../src/index.js';
import { type HostileCase, makeHostileCorpus } from '../helpers/hostile.js';
import { call, errorBody, testImage, upscale } from './http.js';

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

const sha256 = async (file: string) =>
  createHash('sha256')
    .update(await readFile(file))
    .digest('hex');

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

  it('keeps serving afterwards', async () => {
    expect((await call(`${server.url}/healthz`)).status).toBe(200);
    const a = await upscale(server.url, await testImage(16, 16));
    expect(a.status).toBe(200);
    expect(server.upscaler.stats?.()).toMatchObject({ queuedRequests: 0, runningRequests: 0, queuedTiles: 0 });
  });
});
