/**
 * The dynamic batcher: tiles of concurrent `upscale()` calls go into shared engine batches.
 *
 * Pure TypeScript over the {@link TileEngine} seam: it knows tiles, keys and run settings, never
 * files, HTTP or Redis. One batch runs at a time (the engine is serial anyway); while it runs,
 * new calls queue their tiles. When the engine is free the next batch is filled round-robin
 * across the queued calls, one tile per call in turn (oldest call first), up to `maxBatchTiles`,
 * so a large image cannot starve small ones: it gets one place per round like any other call. A batch that would not be full waits until its oldest tile has been
 * queued for `maxBatchDelayMs`.
 *
 * The engine's `run` takes one seed/cfg/topK/topP/colorFix per batch and a sampler key per tile,
 * and a tile's tokens depend only on (seed, key, pixels) (docs/decisions.md, "Batch
 * invariance"). So a batch only mixes calls with the same run settings ({@link settingsKey});
 * with greedy sampling (`topK` 1) the seed is never read, and calls that differ only in their
 * seed share batches too. Output bytes therefore equal those of serial calls.
 *
 * Bounds: `maxQueuedRequests` (calls from {@link TileBatcher.reserve} until their last tile
 * leaves the engine) and `maxQueuedTiles` (tiles not yet in a batch); past either the call is
 * refused at once with `ERR_QUEUE_FULL`. A call's AbortSignal takes its queued tiles out of the
 * queue; a running batch whose tiles all belong to cancelled calls is aborted between scales.
 */
import type { EngineRunOptions } from '../engine.js';
import { AlignvarError } from '../errors.js';
import type { ColorFix } from '../options.js';

/** The part of the engine the batcher drives (see {@link TileEngine} in src/upscaler.ts). */
export interface BatchEngine {
  /** LR tile side in pixels. */
  readonly lrSize: number;
  /** HR tile side in pixels. */
  readonly hrSize: number;
  /** Scale steps per batch. */
  readonly scales: number;
  /** Upscales `n` uint8 RGB tiles `[n, lrSize, lrSize, 3]` into `[n, hrSize, hrSize, 3]`. */
  run(tiles: Uint8Array, n: number, options: EngineRunOptions): Promise<Uint8Array>;
}

/** The engine settings shared by every tile of one batch. */
export interface BatchRunSettings {
  /** Sampler seed. */
  seed: number;
  /** Guidance weight. */
  cfg: number;
  /** Top-k, 0 = off, 1 = greedy (the seed is then unused). */
  topK: number;
  /** Top-p, 0 = off. */
  topP: number;
  /** Colour fix. */
  colorFix: ColorFix;
}

/** Batching limits (validated by src/options.ts; see {@link UpscalerOptions} for meaning). */
export interface BatcherOptions {
  /** Most tiles per engine batch, >= 1. */
  maxBatchTiles: number;
  /** Longest wait for a fuller batch, ms, >= 0. */
  maxBatchDelayMs: number;
  /** Most tiles queued (not yet in a batch); `Infinity` for no bound. */
  maxQueuedTiles: number;
  /** Most calls reserved and not finished with the engine; `Infinity` for no bound. */
  maxQueuedRequests: number;
}

/** The tiles of one call, read lazily: a tile is cut only when it joins a batch. */
export interface TileSource {
  /** Number of tiles (>= 1). */
  count: number;
  /** Sampler key of tile `i` (int32; its index in the image's grid). */
  key(i: number): number;
  /** LR pixels of tile `i`: `lrSize * lrSize * 3` bytes. */
  tile(i: number): Uint8Array;
  /** Run settings of every tile of this call. */
  settings: BatchRunSettings;
  /**
   * Receives HR tile `i` (`hrSize * hrSize * 3` bytes, a view valid only during the call).
   * An exception cancels the call with it.
   */
  onTile(i: number, hr: Uint8Array): void;
  /**
   * Called after each scale step of a batch holding `tiles` of this call's tiles (`scale`
   * 0-based). An exception cancels the call with it.
   */
  onScale?: ((tiles: number, scale: number) => void) | undefined;
  /** Called after `tiles` of this call's tiles of one batch went to `onTile`. Exceptions cancel. */
  onBatch?: ((tiles: number) => void) | undefined;
  /** Cancels the call: its queued tiles leave the queue and `run` rejects with the reason. */
  signal?: AbortSignal | undefined;
}

/**
 * Counters of a {@link TileBatcher} (and of {@link Upscaler.stats}). Counts are instantaneous
 * unless they say "since creation".
 */
export interface BatcherStats {
  /**
   * Calls admitted (counted against `maxQueuedRequests`) that have no tile in the running batch:
   * decoding their input, or with tiles waiting in the queue.
   */
  queuedRequests: number;
  /** Calls with at least one tile in the engine batch running now (0 when none runs). */
  runningRequests: number;
  /** Tiles waiting in the queue, not yet in a batch (counted against `maxQueuedTiles`). */
  queuedTiles: number;
  /** Engine batches finished since creation (failed and aborted batches included). */
  batchesRun: number;
  /** Tiles in those batches, since creation. */
  tilesRun: number;
  /** `tilesRun / batchesRun`: tiles per batch since creation; 0 before the first batch. */
  meanBatchSize: number;
  /**
   * Tiles per second of engine time: `tilesRun` divided by the seconds batches were running
   * (idle time excluded); 0 before the first batch.
   */
  tilesPerSecond: number;
}

/**
 * The key that batches must share: calls with equal keys may mix tiles in one engine run.
 * The seed is left out for greedy sampling (topK 1), where the sampler never reads it.
 */
export function settingsKey(s: BatchRunSettings): string {
  const seed = s.topK === 1 ? 'greedy' : String(s.seed);
  return `${seed}|${s.cfg}|${s.topK}|${s.topP}|${s.colorFix}`;
}

/** The `ERR_QUEUE_FULL` rejection. */
export function queueFullError(what: string): AlignvarError {
  return new AlignvarError(`The upscale queue is full: ${what}; retry later`, 'ERR_QUEUE_FULL');
}

interface Request {
  readonly source: TileSource;
  readonly key: string;
  /** When its tiles were queued (performance.now()). */
  readonly queuedAt: number;
  /** Next tile index to hand to a batch. */
  next: number;
  /** Tiles delivered so far. */
  delivered: number;
  /** Tiles in the running batch. */
  running: number;
  settled: boolean;
  resolve: () => void;
  reject: (err: unknown) => void;
  unlisten: () => void;
  slot: Slot;
}

/** A call's place counted against `maxQueuedRequests`, from {@link TileBatcher.reserve}. */
export interface Slot {
  /**
   * Queues the call's tiles and resolves when every tile has been delivered to `onTile`.
   * Rejects with `ERR_QUEUE_FULL` when `maxQueuedTiles` would be passed, with the signal's
   * reason when it aborts, and with the engine's error when a batch fails. Once per slot.
   */
  run(source: TileSource): Promise<void>;
  /** Gives the place back (done, failed or never run). Idempotent. */
  release(): void;
}

/** The dynamic batcher. One per engine. */
export class TileBatcher {
  readonly #engine: BatchEngine;
  readonly #o: BatcherOptions;
  /** Requests with tiles still to hand out, in arrival order. */
  #queue: Request[] = [];
  /** Slots reserved and not released. */
  #slots = 0;
  #queuedTiles = 0;
  /** Requests with tiles in the running batch. */
  #runningRequests = 0;
  #running: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** A #scheduleNow microtask is pending. */
  #kick = false;
  #batchesRun = 0;
  #tilesRun = 0;
  #busyMs = 0;

  /**
   * @param engine - The engine; only `run` and the sizes are used.
   * @param options - Validated limits.
   */
  constructor(engine: BatchEngine, options: BatcherOptions) {
    this.#engine = engine;
    this.#o = { ...options };
  }

  /**
   * Takes a place for one call.
   * @throws {AlignvarError} `ERR_QUEUE_FULL` when `maxQueuedRequests` calls hold one already;
   *   `ERR_DISPOSED` after {@link close}.
   */
  reserve(): Slot {
    if (this.#closed) throw new AlignvarError('The upscaler has been disposed', 'ERR_DISPOSED');
    if (this.#slots >= this.#o.maxQueuedRequests) {
      throw queueFullError(`${this.#slots} calls are in flight (maxQueuedRequests ${this.#o.maxQueuedRequests})`);
    }
    this.#slots++;
    let released = false;
    let used = false;
    const slot: Slot = {
      run: (source) => {
        if (used) return Promise.reject(new Error('Slot.run called twice'));
        used = true;
        return this.#submit(source, slot);
      },
      release: () => {
        if (released) return;
        released = true;
        this.#slots--;
      },
    };
    return slot;
  }

  /** The counters (see {@link BatcherStats}). */
  stats(): BatcherStats {
    return {
      queuedRequests: this.#slots - this.#runningRequests,
      runningRequests: this.#runningRequests,
      queuedTiles: this.#queuedTiles,
      batchesRun: this.#batchesRun,
      tilesRun: this.#tilesRun,
      meanBatchSize: this.#batchesRun === 0 ? 0 : this.#tilesRun / this.#batchesRun,
      tilesPerSecond: this.#busyMs === 0 ? 0 : (this.#tilesRun * 1000) / this.#busyMs,
    };
  }

  /**
   * Refuses new calls, rejects the queued ones with `ERR_DISPOSED` and waits for the running
   * batch.
   */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const err = new AlignvarError('The upscaler has been disposed', 'ERR_DISPOSED');
    for (const r of [...this.#queue]) this.#fail(r, err);
    await this.#running;
  }

  #submit(source: TileSource, slot: Slot): Promise<void> {
    if (this.#closed) return Promise.reject(new AlignvarError('The upscaler has been disposed', 'ERR_DISPOSED'));
    if (!Number.isInteger(source.count) || source.count < 1) {
      return Promise.reject(new RangeError(`TileSource.count must be a positive integer, got ${source.count}`));
    }
    const signal = source.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#queuedTiles > 0 && this.#queuedTiles + source.count > this.#o.maxQueuedTiles) {
      return Promise.reject(
        queueFullError(
          `${this.#queuedTiles} tiles are queued and this image has ${source.count} (maxQueuedTiles ${this.#o.maxQueuedTiles})`,
        ),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const r: Request = {
        source,
        key: settingsKey(source.settings),
        queuedAt: performance.now(),
        next: 0,
        delivered: 0,
        running: 0,
        settled: false,
        resolve,
        reject,
        unlisten: () => undefined,
        slot,
      };
      if (signal) {
        const onAbort = (): void => this.#fail(r, signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        r.unlisten = () => signal.removeEventListener('abort', onAbort);
      }
      this.#queue.push(r);
      this.#queuedTiles += source.count;
      this.#schedule();
    });
  }

  /** Settles a request with an error and takes its queued tiles out of the queue. */
  #fail(r: Request, err: unknown): void {
    if (r.settled) return;
    r.settled = true;
    r.unlisten();
    const i = this.#queue.indexOf(r);
    if (i >= 0) {
      this.#queue.splice(i, 1);
      this.#queuedTiles -= r.source.count - r.next;
    }
    if (r.running === 0) r.slot.release();
    r.reject(err);
  }

  /**
   * Decides on the next batch in a microtask, so that calls queued in the same tick share a
   * batch even with `maxBatchDelayMs` 0.
   */
  #schedule(): void {
    if (this.#kick) return;
    this.#kick = true;
    queueMicrotask(() => {
      this.#kick = false;
      this.#scheduleNow();
    });
  }

  /** Starts a batch now, or arms the delay timer, or does nothing while one runs. */
  #scheduleNow(): void {
    if (this.#running || this.#closed || this.#queue.length === 0) return;
    const oldest = this.#queue.reduce((m, r) => Math.min(m, r.queuedAt), Infinity);
    const wait = oldest + this.#o.maxBatchDelayMs - performance.now();
    if (this.#queuedTiles >= this.#o.maxBatchTiles || wait <= 0) {
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#running = this.#runBatch().finally(() => {
        this.#running = undefined;
        this.#schedule();
      });
      return;
    }
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#scheduleNow();
    }, Math.ceil(wait));
  }

  /**
   * Picks the batch: the oldest request's settings, then one tile per request with the same
   * settings in arrival order, round after round, until full. Requests keep their arrival order
   * between batches, so with more calls than `maxBatchTiles` the oldest finish first (instead of
   * every call finishing at the end), while a large call still takes at most its share of each
   * batch.
   */
  #take(): { req: Request; index: number }[] {
    const head = this.#queue[0];
    if (!head) return [];
    const group = this.#queue.filter((r) => r.key === head.key);
    const picks: { req: Request; index: number }[] = [];
    let progress = true;
    while (picks.length < this.#o.maxBatchTiles && progress) {
      progress = false;
      for (const r of group) {
        if (picks.length >= this.#o.maxBatchTiles) break;
        if (r.next >= r.source.count) continue;
        picks.push({ req: r, index: r.next++ });
        this.#queuedTiles--;
        progress = true;
      }
    }
    this.#queue = this.#queue.filter((r) => r.next < r.source.count);
    return picks;
  }

  async #runBatch(): Promise<void> {
    const picks = this.#take();
    if (picks.length === 0) return;
    const lrBytes = this.#engine.lrSize * this.#engine.lrSize * 3;
    const hrBytes = this.#engine.hrSize * this.#engine.hrSize * 3;
    const reqs = [...new Set(picks.map((p) => p.req))];
    const counts = new Map<Request, number>();
    for (const p of picks) counts.set(p.req, (counts.get(p.req) ?? 0) + 1);
    const input = new Uint8Array(picks.length * lrBytes);
    const batchAbort = new AbortController();
    const abortIfAllCancelled = (): void => {
      if (reqs.every((r) => r.settled)) batchAbort.abort(new Error('every call in the batch was cancelled'));
    };
    for (const r of reqs) r.running = counts.get(r)!;
    this.#runningRequests = reqs.length;
    // A source that cannot cut a tile fails alone; its places in this batch run blank pixels.
    picks.forEach((p, k) => {
      if (!p.req.settled) this.#guard(p.req, () => input.set(p.req.source.tile(p.index), k * lrBytes));
    });
    const listeners = reqs.map((r) => {
      const s = r.source.signal;
      if (!s) return () => undefined;
      s.addEventListener('abort', abortIfAllCancelled);
      return () => s.removeEventListener('abort', abortIfAllCancelled);
    });
    abortIfAllCancelled();
    const settings = picks[0]!.req.source.settings;
    const t0 = performance.now();
    let out: Uint8Array | undefined;
    let failure: unknown;
    try {
      out = await this.#engine.run(input, picks.length, {
        seed: settings.seed,
        cfg: settings.cfg,
        topK: settings.topK,
        topP: settings.topP,
        colorFix: settings.colorFix,
        imageKeys: picks.map((p) => p.req.source.key(p.index)),
        signal: batchAbort.signal,
        onProgress: (p) => {
          for (const r of reqs) {
            if (r.settled || !r.source.onScale) continue;
            this.#guard(r, () => r.source.onScale!(counts.get(r)!, p.scale));
          }
          abortIfAllCancelled();
        },
      });
      if (out.length !== picks.length * hrBytes) {
        throw new AlignvarError(
          `the engine returned ${out.length} bytes for ${picks.length} tiles`,
          'ERR_ENGINE_OUTPUT',
        );
      }
    } catch (err) {
      failure = err;
    } finally {
      this.#busyMs += performance.now() - t0;
      this.#batchesRun++;
      this.#tilesRun += picks.length;
      listeners.forEach((off) => off());
      for (const r of reqs) r.running = 0;
      this.#runningRequests = 0;
    }
    for (const r of reqs) {
      if (r.settled) {
        r.slot.release();
        continue;
      }
      if (failure !== undefined) {
        this.#fail(r, failure);
        continue;
      }
      picks.forEach((p, k) => {
        if (p.req !== r || r.settled) return;
        this.#guard(r, () => r.source.onTile(p.index, out!.subarray(k * hrBytes, (k + 1) * hrBytes)));
        if (!r.settled) r.delivered++;
      });
      if (!r.settled && r.source.onBatch) this.#guard(r, () => r.source.onBatch!(counts.get(r)!));
      if (!r.settled && r.delivered === r.source.count) {
        r.settled = true;
        r.unlisten();
        r.slot.release();
        r.resolve();
      }
    }
  }

  /** Runs a source callback; an exception fails that request alone. */
  #guard(r: Request, fn: () => unknown): void {
    try {
      fn();
    } catch (err) {
      this.#fail(r, err);
    }
  }
}
