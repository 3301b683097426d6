/**
 * The HTTP server for server-side import (`alignvar serve`), as a library:
 *
 * ```ts
 * import { startServer } from 'alignvar';
 * const server = await startServer({ port: 8080, upscalerOptions: { device: 'auto', maxQueuedRequests: 16 } });
 * // POST http://127.0.0.1:8080/v1/upscale?format=webp  (body: the image)
 * process.once('SIGTERM', () => void server.close());
 * ```
 *
 * fastify and prom-client are imported on the first {@link createServer} call, so importing the
 * package does not load them.
 */
import type { FastifyInstance } from 'fastify';

import { createUpscaler } from '../upscaler.js';
import type { ServeUpscaler, ServerOptions } from './options.js';
import { validateServerOptions } from './options.js';

export type { ServeUpscaler, ServerOptions } from './options.js';
export type { QueueStats } from './metrics.js';

/** A server made by {@link createServer}. */
export interface AlignvarServer {
  /** The fastify instance (for `inject()` or extra routes before `listen()`). */
  readonly app: FastifyInstance;
  /** The upscaler it serves. */
  readonly upscaler: ServeUpscaler;
  /**
   * Starts listening on the options' host and port.
   * @returns The base URL, e.g. `http://127.0.0.1:8080` (the real port when `port` is 0).
   */
  listen(): Promise<string>;
  /**
   * Stops accepting connections, answers new requests on open connections 503, waits for every
   * request in flight to be answered, then disposes the upscaler if the server created it.
   * Calling it again returns the same promise.
   */
  close(): Promise<void>;
}

/**
 * Creates a server (not listening yet): loads the model unless an `upscaler` is given.
 *
 * @param options - See {@link ServerOptions}; all optional.
 * @throws {TypeError} For an invalid option.
 * @throws What `createUpscaler` throws for the upscaler's options.
 */
export async function createServer(options?: ServerOptions): Promise<AlignvarServer> {
  const o = validateServerOptions(options);
  const [{ buildApp }, { ServerMetrics }] = await Promise.all([import('./app.js'), import('./metrics.js')]);
  const owned = o.upscaler === undefined;
  const upscaler: ServeUpscaler = o.upscaler ?? (await createUpscaler(o.upscalerOptions));
  try {
    const metrics = new ServerMetrics(() => upscaler.stats?.());
    const { app, startDraining } = buildApp({
      upscaler,
      metrics,
      maxBodyBytes: o.maxBodyBytes,
      timeoutMs: o.timeoutMs,
      logger: o.logger,
    });
    let closing: Promise<void> | undefined;
    return {
      app,
      upscaler,
      async listen() {
        return app.listen({ host: o.host, port: o.port });
      },
      close() {
        closing ??= (async () => {
          startDraining();
          try {
            await app.close();
          } finally {
            metrics.registry.clear();
            if (owned) await upscaler.dispose();
          }
        })();
        return closing;
      },
    };
  } catch (err) {
    if (owned) await upscaler.dispose();
    throw err;
  }
}

/**
 * Creates a server and starts listening: {@link createServer} then `listen()`.
 *
 * @param options - See {@link ServerOptions}.
 * @returns The server; its URL is `url`.
 */
export async function startServer(options?: ServerOptions): Promise<AlignvarServer & { url: string }> {
  const server = await createServer(options);
  try {
    const url = await server.listen();
    return Object.assign(server, { url });
  } catch (err) {
    await server.close();
    throw err;
  }
}
