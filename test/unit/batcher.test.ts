/**
 * The dynamic batcher (src/batch/batcher.ts) over a stand-in engine: batch composition
 * (round-robin across calls, settings groups), bounds, abort/timeout removal, the batch delay
 * and stats. No addon.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';

import { type BatchEngine, type BatchRunSettings, type TileSource, TileBatcher } from '../../src/batch/batcher.js';
import type { EngineRunOptions } from '../../src/engine.js';
import { AlignvarError } from '../../src/errors.js';

const LR = 2;
const HR = 4;
const LR_BYTES = LR * LR * 3;
const HR_BYTES = HR * HR * 3;
const GREEDY: BatchRunSettings = { seed: 0, cfg: 0, topK: 1, topP: 0, colorFix: 'none' };

interface Call {
  n: number;
  keys: number[];
  /** First byte of each tile: which call and tile it came from (see `source`). */
  tags: number[];
  options: EngineRunOptions;
}

/**
 * An engine whose batches wait for `release()` (or run at once when `auto`); an HR tile is a
 * pure function of (seed, key, LR bytes), like the real engine's.
 */
class FakeEngine implements BatchEngine {
  readonly lrSize = LR;
  readonly hrSize = HR;
  readonly scales = 3;
  readonly calls: Call[] = [];
  auto = false;
  #gates: (() => void)[] = [];

  async run(tiles: Uint8Array, n: number, options: EngineRunOptions): Promise<Uint8Array> {
    const keys = Array.from(options.imageKeys ?? []);
    this.calls.push({ n, keys, tags: Array.from({ length: n }, (_, k) => tiles[k * LR_BYTES]!), options });
    if (!this.auto) await new Promise<void>((res) => this.#gates.push(res));
    for (let s = 0; s < this.scales; s++) {
      options.signal?.throwIfAborted();
      options.onProgress?.({ scale: s, scales: this.scales, patchNum: s + 1, ms: 0 });
    }
    const out = new Uint8Array(n * HR_BYTES);
    for (let k = 0; k < n; k++)
      out.fill(
        (tiles[k * LR_BYTES]! * 7 + keys[k]! * 3 + Number(options.seed)) & 255,
        k * HR_BYTES,
        (k + 1) * HR_BYTES,
      );
    return out;
  }

  /** Lets the oldest waiting batch run; resolves once the batcher has seen its result. */
  async release(): Promise<void> {
    this.#gates.shift()?.();
    await flush();
  }

  get waiting(): number {
    return this.#gates.length;
  }
}

/** Lets pending promise callbacks run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}

/** A call of `count` tiles whose pixels are all `tag + i`; collects what `onTile` receives. */
function source(
  tag: number,
  count: number,
  extra: Partial<TileSource> = {},
): TileSource & { got: Map<number, number>; progress: [number, number][]; batches: number[] } {
  const got = new Map<number, number>();
  const progress: [number, number][] = [];
  const batches: number[] = [];
  return {
    count,
    key: (i) => i,
    tile: (i) => new Uint8Array(LR_BYTES).fill(tag + i),
    settings: GREEDY,
    onTile: (i, hr) => {
      expect(hr.length).toBe(HR_BYTES);
      got.set(i, hr[0]!);
    },
    onScale: (tiles, scale) => progress.push([tiles, scale]),
    onBatch: (tiles) => batches.push(tiles),
    ...extra,
    got,
    progress,
    batches,
  };
}

const opts = { maxBatchTiles: 4, maxBatchDelayMs: 0, maxQueuedTiles: Infinity, maxQueuedRequests: Infinity };

afterEach(() => {
  vi.useRealTimers();
});

describe('TileBatcher', () => {
  it('fills batches round-robin across calls, oldest first, so a large call cannot starve small ones', async () => {
    const engine = new FakeEngine();
    const b = new TileBatcher(engine, opts);
    const done: string[] = [];
    // A one-tile call takes the engine; the others queue behind it.
    const first = b.reserve().run(source(200, 1));
    await flush();
    expect(engine.calls.map((c) => c.n)).toEqual([1]);
    const big = source(0, 10);
    const small = [source(100, 2), source(110, 2), source(120, 3)];
    const pBig = b
      .reserve()
      .run(big)
      .then(() => done.push('big'));
    const pSmall = small.map((s, k) =>
      b
        .reserve()
        .run(s)
        .then(() => done.push(`small${k}`)),
    );
    expect(b.stats()).toMatchObject({ queuedTiles: 17, queuedRequests: 4, runningRequests: 1 });
    await engine.release();
    // Batch 2: one tile of each of the four calls, in arrival order.
    expect(engine.calls[1]!.tags).toEqual([0, 100, 110, 120]);
    expect(engine.calls[1]!.keys).toEqual([0, 0, 0, 0]);
    await engine.release();
    expect(engine.calls[2]!.tags).toEqual([1, 101, 111, 121]);
    await engine.release();
    // small0 and small1 are done: the big call and small2 share the rest.
    expect(done).toEqual(['small0', 'small1']);
    expect(engine.calls[3]!.tags).toEqual([2, 122, 3, 4]);
    await engine.release();
    expect(done).toEqual(['small0', 'small1', 'small2']);
    while (engine.waiting > 0) await engine.release();
    await Promise.all([first, pBig, ...pSmall]);
    expect(done).toEqual(['small0', 'small1', 'small2', 'big']);
    expect(engine.calls.slice(4).map((c) => c.tags)).toEqual([[5, 6, 7, 8], [9]]);
    // Every tile came back to its own call, computed from its own pixels and key.
    for (let i = 0; i < 10; i++) expect(big.got.get(i)).toBe((i * 7 + i * 3) & 255);
    expect(small[2]!.got.get(2)).toBe((122 * 7 + 2 * 3) & 255);
    expect(small[2]!.batches).toEqual([1, 1, 1]);
    expect(big.batches).toEqual([1, 1, 3, 4, 1]);
    expect(big.progress.slice(0, 3)).toEqual([
      [1, 0],
      [1, 1],
      [1, 2],
    ]);
    expect(b.stats()).toMatchObject({
      queuedRequests: 0,
      runningRequests: 0,
      queuedTiles: 0,
      batchesRun: 6,
      tilesRun: 18,
      meanBatchSize: 3,
    });
    expect(b.stats().tilesPerSecond).toBeGreaterThan(0);
  });

  it('mixes calls that differ only in seed under greedy sampling, and keeps other settings apart', async () => {
    const engine = new FakeEngine();
    const b = new TileBatcher(engine, opts);
    const blocker = b.reserve().run(source(200, 1));
    await flush();
    const sampled = (seed: number): BatchRunSettings => ({ ...GREEDY, topK: 0, seed });
    const ps = [
      b.reserve().run(source(0, 1, { settings: { ...GREEDY, seed: 1 } })),
      b.reserve().run(source(10, 1, { settings: { ...GREEDY, seed: 2 } })),
      b.reserve().run(source(20, 1, { settings: sampled(1) })),
      b.reserve().run(source(30, 1, { settings: sampled(2) })),
      b.reserve().run(source(40, 1, { settings: sampled(1) })),
    ];
    engine.auto = true;
    await engine.release();
    await Promise.all([blocker, ...ps]);
    expect(engine.calls.slice(1).map((c) => [c.tags, Number(c.options.seed), c.options.topK])).toEqual([
      [[0, 10], 1, 1],
      [[20, 40], 1, 0],
      [[30], 2, 0],
    ]);
  });

  it('refuses past maxQueuedRequests at once, and counts a call until its last tile leaves the engine', async () => {
    const engine = new FakeEngine();
    const b = new TileBatcher(engine, { ...opts, maxQueuedRequests: 2 });
    const s1 = b.reserve();
    const s2 = b.reserve();
    let err: unknown;
    try {
      b.reserve();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AlignvarError);
    expect(err).toMatchObject({ code: 'ERR_QUEUE_FULL' });
    expect((err as Error).message).toMatch(/maxQueuedRequests 2/);
    s2.release();
    s2.release();
    const s3 = b.reserve();
    const p1 = s1.run(source(0, 1));
    await flush();
    expect(() => b.reserve()).toThrow(/queue is full/);
    await engine.release();
    await p1;
    // s1 finished with the engine: its place is free again without an explicit release.
    const s4 = b.reserve();
    s3.release();
    s4.release();
    expect(b.stats().queuedRequests).toBe(0);
  });

  it('refuses a call whose tiles pass maxQueuedTiles, except when nothing else is queued', async () => {
    const engine = new FakeEngine();
    const b = new TileBatcher(engine, { ...opts, maxBatchTiles: 1, maxQueuedTiles: 5 });
    // Alone in the queue, a call larger than the bound is accepted.
    const big = b.reserve().run(source(0, 8));
    await flush();
    expect(b.stats().queuedTiles).toBe(7);
    const slot = b.reserve();
    await expect(slot.run(source(50, 1))).rejects.toMatchObject({ code: 'ERR_QUEUE_FULL' });
    slot.release();
    expect(b.stats()).toMatchObject({ queuedTiles: 7, queuedRequests: 0, runningRequests: 1 });
    engine.auto = true;
    await engine.release();
    await big;
    const engine2 = new FakeEngine();
    const b2 = new TileBatcher(engine2, { ...opts, maxBatchTiles: 1, maxQueuedTiles: 5 });
    const a = b2.reserve().run(source(0, 1));
    await flush();
    const q = b2.reserve().run(source(10, 3));
    await expect(b2.reserve().run(source(20, 3))).rejects.toThrow(
      /3 tiles are queued and this image has 3 \(maxQueuedTiles 5\)/,
    );
    const fits = b2.reserve().run(source(30, 2));
    engine2.auto = true;
    await engine2.release();
    await Promise.all([a, q, fits]);
  });

  it('takes an aborted call out of the queue at once and never runs its tiles', async () => {
    const engine = new FakeEngine();
    const b = new TileBatcher(engine, opts);
    const blocker = b.reserve().run(source(200, 1));
    await flush();
    const ac = new AbortController();
    const aborted = b.reserve().run(source(0, 6, { signal: ac.signal }));
    const other = b.reserve().run(source(100, 2));
    expect(b.stats().queuedTiles).toBe(8);
    const reason = new AlignvarError('too slow', 'ERR_TIMEOUT');
    ac.abort(reason);
    await expect(aborted).rejects.toBe(reason);
    expect(b.stats()).toMatchObject({ queuedTiles: 2, queuedRequests: 1 });
    engine.auto = true;
    await engine.release();
    await Promise.all([blocker, other]);
    expect(engine.calls.slice(1).map((c) => c.tags)).toEqual([[100, 101]]);
    // An already aborted signal is refused without queueing.
    const slot = b.reserve();
    await expect(slot.run(source(0, 1, { signal: AbortSignal.abort(reason) }))).rejects.toBe(reason);
    expect(b.stats().queuedTiles).toBe(0);
  });

  it('aborts a running batch only when every call in it is cancelled', async () => {
    const engine = new FakeEngine();
    const b = new TileBatcher(engine, opts);
    const a1 = new AbortController();
    const a2 = new AbortController();
    const p1 = b.reserve().run(source(0, 1, { signal: a1.signal }));
    const p2 = b.reserve().run(source(10, 1, { signal: a2.signal }));
    await flush();
    expect(engine.calls[0]!.n).toBe(2);
    const batchSignal = engine.calls[0]!.options.signal!;
    a1.abort(new Error('one'));
    await expect(p1).rejects.toThrow('one');
    expect(batchSignal.aborted).toBe(false);
    a2.abort(new Error('two'));
    await expect(p2).rejects.toThrow('two');
    expect(batchSignal.aborted).toBe(true);
    await engine.release();
    expect(b.stats()).toMatchObject({ queuedRequests: 0, runningRequests: 0, batchesRun: 1 });
    // A partly cancelled batch still delivers to the others.
    const a3 = new AbortController();
    const s4 = source(30, 1);
    const p3 = b.reserve().run(source(20, 1, { signal: a3.signal }));
    const p4 = b.reserve().run(s4);
    await flush();
    a3.abort(new Error('three'));
    await expect(p3).rejects.toThrow('three');
    await engine.release();
    await p4;
    expect(s4.got.get(0)).toBe((30 * 7) & 255);
  });

  it('waits up to maxBatchDelayMs for a fuller batch, and starts a full one at once', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    const engine = new FakeEngine();
    engine.auto = true;
    const b = new TileBatcher(engine, { ...opts, maxBatchTiles: 3, maxBatchDelayMs: 50 });
    const p1 = b.reserve().run(source(0, 1));
    await vi.advanceTimersByTimeAsync(49);
    expect(engine.calls).toHaveLength(0);
    const p2 = b.reserve().run(source(10, 1));
    await vi.advanceTimersByTimeAsync(1);
    expect(engine.calls.map((c) => c.tags)).toEqual([[0, 10]]);
    await Promise.all([p1, p2]);
    // Three tiles fill a batch: no waiting.
    const p3 = b.reserve().run(source(20, 3));
    await vi.advanceTimersByTimeAsync(0);
    expect(engine.calls.map((c) => c.n)).toEqual([2, 3]);
    await p3;
  });

  it('fails every call of a batch the engine rejects, and a call whose callback throws alone', async () => {
    const engine = new FakeEngine();
    engine.auto = true;
    const failing: BatchEngine = {
      lrSize: LR,
      hrSize: HR,
      scales: 1,
      run: () => Promise.reject(new Error('device lost')),
    };
    const bf = new TileBatcher(failing, opts);
    const r = await Promise.allSettled([bf.reserve().run(source(0, 1)), bf.reserve().run(source(1, 1))]);
    expect(r.map((x) => x.status)).toEqual(['rejected', 'rejected']);
    expect(bf.stats()).toMatchObject({ queuedRequests: 0, batchesRun: 1 });
    const b = new TileBatcher(engine, opts);
    const bad = source(0, 2, {
      onTile: () => {
        throw new Error('blend failed');
      },
    });
    const good = source(10, 2);
    const [x, y] = await Promise.allSettled([b.reserve().run(bad), b.reserve().run(good)]);
    expect(x).toMatchObject({ status: 'rejected', reason: { message: 'blend failed' } });
    expect(y.status).toBe('fulfilled');
    expect(good.got.size).toBe(2);
  });

  it('rejects queued calls with ERR_DISPOSED on close and waits for the running batch', async () => {
    const engine = new FakeEngine();
    const b = new TileBatcher(engine, opts);
    const running = b.reserve().run(source(0, 1));
    await flush();
    const queued = b.reserve().run(source(10, 1));
    const closing = b.close();
    await expect(queued).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    await engine.release();
    await closing;
    await running;
    expect(() => b.reserve()).toThrow(/disposed/);
  });
});
