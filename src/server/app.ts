/**
 * The fastify app of `alignvar serve`: raw bodies of any Content-Type, request ids, the error
 * mapping of ./errors.ts, request metrics, a drain flag, and the route plugins
 * (routes/upscale.ts, routes/health.ts). No model logic: it calls the upscaler it is given.
 */
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';

import { CLIENT_CLOSED, toHttpError } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import type { ServeUpscaler } from './options.js';
import { healthRoutes } from './routes/health.js';
import { upscaleRoute } from './routes/upscale.js';

/** What {@link buildApp} needs. */
export interface AppConfig {
  /** The upscaler to serve. */
  upscaler: ServeUpscaler;
  /** Metrics registry of this server. */
  metrics: ServerMetrics;
  /** Largest body in bytes. */
  maxBodyBytes: number;
  /** Per-call time limit in ms, 0 = none. */
  timeoutMs: number;
  /** fastify's logger option. */
  logger: boolean | { level: string };
}

/** The app and its drain switch. */
export interface App {
  /** The fastify instance (not listening yet). */
  app: FastifyInstance;
  /** From now on, new requests are answered 503 `ERR_SHUTTING_DOWN` with `Connection: close`. */
  startDraining(): void;
}

/** Client-chosen request ids that are safe to echo in headers, logs and messages. */
const SAFE_REQUEST_ID = /^[\w.:-]{1,64}$/;

/** Longest time to receive a whole request (headers and body): slow clients cannot hold sockets. */
const REQUEST_RECEIVE_TIMEOUT_MS = 60_000;

/** Seconds a client should wait after a 503: the queued tiles at the engine's rate, 1 to 60. */
function retryAfterSeconds(upscaler: ServeUpscaler): number {
  const s = upscaler.stats?.();
  if (s === undefined || s.tilesPerSecond <= 0) return 1;
  return Math.min(60, Math.max(1, Math.ceil(s.queuedTiles / s.tilesPerSecond)));
}

/**
 * Builds the app.
 *
 * @param config - Upscaler, metrics and limits.
 */
export function buildApp(config: AppConfig): App {
  let next = 0;
  let draining = false;
  const app = Fastify({
    logger: config.logger,
    bodyLimit: config.maxBodyBytes,
    requestTimeout: REQUEST_RECEIVE_TIMEOUT_MS,
    // Keep-alive connections without a request in flight are closed at once by close().
    forceCloseConnections: 'idle',
    // Draining is answered by our own hook, in our error format.
    return503OnClosing: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && SAFE_REQUEST_ID.test(given) ? given : `req-${(++next).toString(36)}`;
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, verbose: true } },
  });

  // The body is the image: take any Content-Type (and none) as raw bytes.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

  const started = new WeakMap<FastifyRequest, bigint>();
  const record = (request: FastifyRequest, status: number) => {
    const t0 = started.get(request);
    if (t0 === undefined) return;
    started.delete(request);
    const route = request.routeOptions.url ?? 'unmatched';
    config.metrics.requests.inc({ method: request.method, route, status: String(status) });
    config.metrics.duration.observe({ method: request.method, route }, Number(process.hrtime.bigint() - t0) / 1e9);
    config.metrics.inFlight.dec();
  };
  app.addHook('onRequest', async (request, reply) => {
    started.set(request, process.hrtime.bigint());
    config.metrics.inFlight.inc();
    reply.header('x-request-id', request.id);
    if (draining) {
      reply.header('connection', 'close');
      return reply
        .code(503)
        .header('retry-after', '1')
        .send({ code: 'ERR_SHUTTING_DOWN', message: `The server is shutting down (request ${request.id})` });
    }
  });
  app.addHook('onResponse', async (request, reply) => record(request, reply.statusCode));
  app.addHook('onRequestAbort', async (request) => record(request, CLIENT_CLOSED));

  app.setErrorHandler((err, request, reply) => {
    const e = toHttpError(err, request.id, () => retryAfterSeconds(config.upscaler));
    if (e.status >= 500 && e.status !== 503 && e.status !== 504) request.log.error({ err }, 'upscale failed');
    // A client that is gone reads nothing; the metrics count it as 499 either way.
    if (e.status === CLIENT_CLOSED) record(request, CLIENT_CLOSED);
    return reply.code(e.status).headers(e.headers).send(e.body);
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({
      code: 'ERR_NOT_FOUND',
      message: `No route ${request.method} ${JSON.stringify(request.url.split('?')[0]?.slice(0, 200))} (request ${request.id}); POST /v1/upscale, GET /healthz, GET /metrics`,
    }),
  );

  app.register(upscaleRoute, { upscaler: config.upscaler, timeoutMs: config.timeoutMs, metrics: config.metrics });
  app.register(healthRoutes, { upscaler: config.upscaler, metrics: config.metrics });
  return {
    app,
    startDraining: () => {
      draining = true;
    },
  };
}
