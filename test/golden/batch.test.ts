/**
 * Dynamic batching end to end on the tiny fixture model: concurrent calls of mixed sizes and
 * seeds give the bytes of serial calls, share engine batches, and the queue bounds, timeout and
 * abort act on real calls.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';
import { describe, expect, it } from 'vitest';

import { type Upscaler, createUpscaler } from '../../src/upscaler.js';

const MODEL = fileURLToPath(new URL('../fixtures/golden/tiny-model.safetensors', import.meta.url));
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`golden/batch: skipped: fixture ${MODEL} does not exist`);

/** A deterministic RGB PNG of w x h, different per k. */
function image(w: number, h: number, k: number): Promise<Buffer> {
  const px = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      px[i] = (x * 5 + k * 40) & 255;
      px[i + 1] = (y * 3 + ((x * y) % 17) * 4) & 255;
      px[i + 2] = ((x + y) * 2 + k * 90) & 255;
    }
  return sharp(px, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toBuffer();
}

/** Mixed sizes (1, 2, 6 and 2 tiles of 64) with mixed seeds. */
const CASES: [w: number, h: number, seed: number][] = [
  [40, 30, 1],
  [70, 40, 2],
  [150, 90, 1],
  [100, 64, 3],
  [70, 40, 1],
];

async function serialAndConcurrent(
  up: Upscaler,
  inputs: Buffer[],
): Promise<{ serial: Buffer[]; concurrent: Buffer[] }> {
  const serial: Buffer[] = [];
  for (let i = 0; i < inputs.length; i++) serial.push(await up.upscale(inputs[i]!, { seed: CASES[i]![2] }));
  const concurrent = await Promise.all(inputs.map((b, i) => up.upscale(b, { seed: CASES[i]![2] })));
  return { serial, concurrent };
}

describe.skipIf(!HAVE_MODEL)('dynamic batching (tiny model)', () => {
  it('gives serial bytes for concurrent mixed-size, mixed-seed calls, sampled and greedy', async () => {
    const inputs = await Promise.all(CASES.map(([w, h], k) => image(w, h, k)));
    // Sampled (top-k off): the seed matters, and only equal-seed calls share a batch.
    const sampled = await createUpscaler({ model: MODEL, device: 'cpu', topK: 0, topP: 0, maxBatchTiles: 8 });
    try {
      const { serial, concurrent } = await serialAndConcurrent(sampled, inputs);
      concurrent.forEach((c, i) => expect(c.equals(serial[i]!), `call ${i}`).toBe(true));
      // Same image, other seed: other bytes (so the comparison above can fail).
      expect((await sampled.upscale(inputs[1]!, { seed: 1 })).equals(serial[1]!)).toBe(false);
    } finally {
      await sampled.dispose();
    }
    // Greedy: seeds are unused, so every call shares batches.
    const greedy = await createUpscaler({ model: MODEL, device: 'cpu', maxBatchTiles: 8, maxBatchDelayMs: 50 });
    try {
      const before = greedy.stats();
      const serial: Buffer[] = [];
      for (let i = 0; i < inputs.length; i++) serial.push(await greedy.upscale(inputs[i]!, { seed: CASES[i]![2] }));
      const mid = greedy.stats();
      const concurrent = await Promise.all(inputs.map((b, i) => greedy.upscale(b, { seed: CASES[i]![2] })));
      const after = greedy.stats();
      concurrent.forEach((c, i) => expect(c.equals(serial[i]!), `call ${i}`).toBe(true));
      // 100x64 takes 2 x 2 tiles of 64: the tiler's mirrored margin (4 px a side) makes its
      // 64-px axis 72 px long.
      const tiles = 1 + 2 + 6 + 4 + 2;
      expect(mid.tilesRun - before.tilesRun).toBe(tiles);
      expect(after.tilesRun - mid.tilesRun).toBe(tiles);
      // Serial: one batch per call (each has <= 8 tiles). Concurrent: 15 tiles in 2 batches.
      expect(mid.batchesRun - before.batchesRun).toBe(5);
      expect(after.batchesRun - mid.batchesRun).toBe(2);
      expect(after).toMatchObject({ queuedRequests: 0, runningRequests: 0, queuedTiles: 0 });
    } finally {
      await greedy.dispose();
    }
  });

  it('refuses past maxQueuedRequests, times out and aborts queued calls, and stays usable', async () => {
    const up = await createUpscaler({ model: MODEL, device: 'cpu', maxBatchTiles: 1, maxQueuedRequests: 3 });
    try {
      const big = await image(150, 90, 0);
      const small = await image(40, 30, 1);
      const ac = new AbortController();
      // The big call holds the engine (one tile per batch) before the others arrive.
      let started!: () => void;
      const running = new Promise<void>((res) => (started = res));
      const first = up.upscale(big, { onProgress: () => started() });
      await running;
      const timed = up.upscale(small, { timeout: 1 });
      const aborted = up.upscale(small, { signal: ac.signal });
      await expect(up.upscale(small)).rejects.toMatchObject({ code: 'ERR_QUEUE_FULL' });
      await expect(timed).rejects.toMatchObject({ code: 'ERR_TIMEOUT', name: 'AlignvarError' });
      await expect(timed).rejects.toThrow(/timed out after 1 ms/);
      ac.abort();
      await expect(aborted).rejects.toMatchObject({ name: 'AbortError' });
      // Neither cancelled call's tile ran: the big call's 6 tiles and nothing else.
      await first;
      expect(up.stats()).toMatchObject({ tilesRun: 6, batchesRun: 6, queuedRequests: 0, queuedTiles: 0 });
      const again = await up.upscale(small, { timeout: 600_000 });
      expect((await sharp(again).metadata()).width).toBe(160);
    } finally {
      await up.dispose();
    }
  });
});
