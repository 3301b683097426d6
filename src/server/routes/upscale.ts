/**
 * `POST /v1/upscale`: the image is the request body (any Content-Type), the options are query
 * parameters (`format`, `quality`, `seed`, checked by the API's `validateUpscaleOptions`), and
 * the answer is the upscaled image with its Content-Type. A client that closes the connection
 * cancels its call (the AbortSignal of `upscale()`); errors are mapped by ../errors.ts.
 */
import type { FastifyPluginAsync, FastifySchemaValidationError } from 'fastify';

import { invalidOption } from '../../errors.js';
import { validateUpscaleOptions } from '../../options.js';
import { HttpError } from '../errors.js';
import type { ServerMetrics, UpscaleOutcome } from '../metrics.js';
import type { ServeUpscaler } from '../options.js';

/** Query parameters of `POST /v1/upscale`: the per-call options of the API that HTTP can carry. */
export const QUERY_KEYS = ['format', 'quality', 'seed'] as const;

/** Options of the route plugin. */
export interface UpscaleRouteOptions {
  /** The upscaler to call. */
  upscaler: ServeUpscaler;
  /** Per-call time limit in ms, 0 = none. */
  timeoutMs: number;
  /** Where outcomes are counted. */
  metrics: ServerMetrics;
}

/** Each parameter once, as a string; the API's validators check the values. */
const QUERY_SCHEMA = {
  type: 'object',
  properties: Object.fromEntries(QUERY_KEYS.map((k) => [k, { type: 'string' }])),
  additionalProperties: false,
} as const;

/**
 * Schema failures in the API's wording, `Expected <what> for <name> but received <value>`, as a
 * 400 `ERR_INVALID_OPTION` (fastify sets its own fields on the error it is given).
 */
function queryError(errors: FastifySchemaValidationError[]): Error {
  const e = errors[0];
  const params = (e?.params ?? {}) as { additionalProperty?: string };
  let err: TypeError;
  if (params.additionalProperty !== undefined) {
    const known = QUERY_KEYS.map((k) => JSON.stringify(k)).join(', ');
    err = invalidOption('query parameter', `one of ${known}`, params.additionalProperty);
  } else {
    const name = (e?.instancePath ?? '').replace(/^\//, '') || 'query';
    err = invalidOption(`query parameter ${name}`, 'a single value', (e as { data?: unknown } | undefined)?.data);
  }
  return new HttpError(400, 'ERR_INVALID_OPTION', err.message);
}

/** Numeric text as a number; anything else stays a string, so that the API's message shows it. */
function numeric(value: string | undefined): number | string | undefined {
  if (value === undefined) return undefined;
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(value.trim()) ? Number(value) : value;
}

/** The Content-Type of encoded image bytes, from their signature. */
export function imageContentType(data: Buffer): string {
  const ascii = (start: number, end: number) => data.toString('latin1', start, end);
  if (data[0] === 0x89 && ascii(1, 4) === 'PNG') return 'image/png';
  if (data[0] === 0xff && data[1] === 0xd8 && data[2] === 0xff) return 'image/jpeg';
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'image/webp';
  if (ascii(0, 4) === 'GIF8') return 'image/gif';
  if (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*') return 'image/tiff';
  if (ascii(4, 8) === 'ftyp' && /^avi[fs]$/.test(ascii(8, 12))) return 'image/avif';
  return 'application/octet-stream';
}

function outcomeOf(err: unknown): UpscaleOutcome {
  if (err instanceof Error && err.name === 'AbortError') return 'aborted';
  const code = typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
  if (code === 'ERR_TIMEOUT') return 'timeout';
  if (code === 'ERR_QUEUE_FULL') return 'queue_full';
  if (code === 'ERR_INVALID_OPTION' || code === 'ERR_INVALID_IMAGE') return 'invalid';
  return 'error';
}

/** Registers `POST /v1/upscale`. */
export const upscaleRoute: FastifyPluginAsync<UpscaleRouteOptions> = async (app, opts) => {
  app.post<{ Querystring: Partial<Record<(typeof QUERY_KEYS)[number], string>>; Body: Buffer | undefined }>(
    '/v1/upscale',
    {
      schema: { querystring: QUERY_SCHEMA },
      schemaErrorFormatter: queryError,
    },
    async (request, reply) => {
      const body = request.body;
      if (!Buffer.isBuffer(body) || body.length === 0) {
        throw new HttpError(400, 'ERR_EMPTY_BODY', 'The request body is empty: send the image bytes as the body');
      }
      const q = request.query;
      const options = validateUpscaleOptions({
        format: q.format,
        quality: numeric(q.quality),
        seed: numeric(q.seed),
      });
      // The connection closing before the answer is written means the client gave up.
      const controller = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) controller.abort();
      };
      reply.raw.once('close', onClose);
      try {
        const out = await opts.upscaler.upscale(body, {
          format: options.format,
          quality: options.quality,
          seed: options.seed,
          signal: controller.signal,
          timeout: opts.timeoutMs > 0 ? opts.timeoutMs : undefined,
        });
        opts.metrics.upscales.inc({ outcome: 'ok' });
        return reply.type(imageContentType(out)).send(out);
      } catch (err) {
        opts.metrics.upscales.inc({ outcome: outcomeOf(err) });
        throw err;
      } finally {
        reply.raw.off('close', onClose);
      }
    },
  );
};
