/**
 * `GET /healthz` (liveness and the queue at a glance, JSON) and `GET /metrics` (Prometheus text
 * format). While the server drains, both are answered 503 by the app's closing hook.
 */
import type { FastifyPluginAsync } from 'fastify';

import type { ServerMetrics } from '../metrics.js';
import type { ServeUpscaler } from '../options.js';

/** Options of the health plugin. */
export interface HealthRouteOptions {
  /** The upscaler whose queue `/healthz` reports. */
  upscaler: ServeUpscaler;
  /** The registry `/metrics` serves. */
  metrics: ServerMetrics;
}

/** Registers `GET /healthz` and `GET /metrics`. */
export const healthRoutes: FastifyPluginAsync<HealthRouteOptions> = async (app, opts) => {
  app.get('/healthz', async () => {
    const s = opts.upscaler.stats?.();
    return {
      status: 'ok',
      ...(s && { queuedRequests: s.queuedRequests, runningRequests: s.runningRequests, queuedTiles: s.queuedTiles }),
    };
  });
  app.get('/metrics', async (_request, reply) => {
    const text = await opts.metrics.registry.metrics();
    return reply.type(opts.metrics.registry.contentType).send(text);
  });
};
