/**
 * Prometheus metrics of one server, on a registry of its own (so that several servers in one
 * process do not share counters). Served by `GET /metrics` in the text exposition format.
 *
 * - `alignvar_http_requests_total{method,route,status}`: answered requests (status 499: the
 *   client closed the connection first). `route` is the route pattern, `unmatched` for 404s.
 * - `alignvar_http_request_duration_seconds{method,route}`: latency histogram.
 * - `alignvar_http_requests_in_flight`: requests received and not yet answered.
 * - `alignvar_upscales_total{outcome}`: `upscale()` calls by outcome (`ok`, `aborted`,
 *   `timeout`, `queue_full`, `invalid`, `error`).
 * - From the upscaler's `stats()`: `alignvar_queue_requests` (queued calls),
 *   `alignvar_running_requests`, `alignvar_queue_tiles` (queue depth in tiles),
 *   `alignvar_batch_size_mean`, `alignvar_engine_batches_total`, `alignvar_engine_tiles_total`,
 *   `alignvar_engine_tiles_per_second`.
 * - prom-client's default process metrics (`process_resident_memory_bytes`, event loop lag, ...).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** What the upscaler's `stats()` reports (see `Upscaler.stats`). */
export interface QueueStats {
  /** Calls admitted that have no tile in the running batch. */
  queuedRequests: number;
  /** Calls with a tile in the running batch. */
  runningRequests: number;
  /** Tiles waiting for the engine. */
  queuedTiles: number;
  /** Engine batches since creation. */
  batchesRun: number;
  /** Tiles in those batches. */
  tilesRun: number;
  /** Tiles per batch since creation. */
  meanBatchSize: number;
  /** Tiles per second of engine time. */
  tilesPerSecond: number;
}

/** Outcomes counted by `alignvar_upscales_total`. */
export type UpscaleOutcome = 'ok' | 'aborted' | 'timeout' | 'queue_full' | 'invalid' | 'error';

/** Latency buckets in seconds: a 16x16 image on a fast GPU up to a large one on a CPU. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** The metrics of one server. */
export class ServerMetrics {
  /** The registry `GET /metrics` serves. */
  readonly registry = new Registry();
  /** Answered requests. */
  readonly requests: Counter<'method' | 'route' | 'status'>;
  /** Request latency. */
  readonly duration: Histogram<'method' | 'route'>;
  /** Requests not yet answered. */
  readonly inFlight: Gauge;
  /** `upscale()` outcomes. */
  readonly upscales: Counter<'outcome'>;

  /** @param stats - The upscaler's counters, read at every scrape (undefined: not reported). */
  constructor(stats: () => QueueStats | undefined) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'alignvar_http_requests_total',
      help: 'HTTP requests answered, by method, route and status (499: the client closed first)',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.duration = new Histogram({
      name: 'alignvar_http_request_duration_seconds',
      help: 'HTTP request latency from the request to the end of the answer, in seconds',
      labelNames: ['method', 'route'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.inFlight = new Gauge({
      name: 'alignvar_http_requests_in_flight',
      help: 'HTTP requests received and not yet answered',
      registers,
    });
    this.upscales = new Counter({
      name: 'alignvar_upscales_total',
      help: 'upscale() calls by outcome (ok, aborted, timeout, queue_full, invalid, error)',
      labelNames: ['outcome'],
      registers,
    });
    const gauge = (name: string, help: string, read: (s: QueueStats) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const s = stats();
          if (s !== undefined) this.set(read(s));
        },
      });
    gauge(
      'alignvar_queue_requests',
      'upscale() calls admitted and waiting (decoding or tiles queued)',
      (s) => s.queuedRequests,
    );
    gauge(
      'alignvar_running_requests',
      'upscale() calls with tiles in the running engine batch',
      (s) => s.runningRequests,
    );
    gauge('alignvar_queue_tiles', 'tiles waiting for the engine (queue depth)', (s) => s.queuedTiles);
    gauge('alignvar_batch_size_mean', 'tiles per engine batch since start', (s) => s.meanBatchSize);
    gauge('alignvar_engine_tiles_per_second', 'tiles per second of engine time since start', (s) => s.tilesPerSecond);
    const counter = (name: string, help: string, read: (s: QueueStats) => number) => {
      let last = 0;
      return new Counter({
        name,
        help,
        registers,
        collect() {
          const s = stats();
          if (s === undefined) return;
          const now = read(s);
          if (now > last) this.inc(now - last);
          last = now;
        },
      });
    };
    counter('alignvar_engine_batches_total', 'engine batches run since start', (s) => s.batchesRun);
    counter('alignvar_engine_tiles_total', 'tiles run through the engine since start', (s) => s.tilesRun);
    collectDefaultMetrics({ register: this.registry });
  }
}
