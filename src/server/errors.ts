/**
 * HTTP statuses for everything `POST /v1/upscale` can fail with. Every error answer has the JSON
 * body `{ code, message }`, and its message names the request (its `X-Request-Id`):
 *
 * | status | code                                       | when                                      |
 * | ------ | ------------------------------------------ | ----------------------------------------- |
 * | 400    | `ERR_INVALID_OPTION`                       | a bad query parameter (the API's message) |
 * | 400    | `ERR_INVALID_IMAGE`, `ERR_EMPTY_BODY`      | a corrupt or truncated image, no body     |
 * | 413    | `ERR_BODY_TOO_LARGE`                       | the body is larger than `maxBodyBytes`    |
 * | 413    | `ERR_IMAGE_TOO_LARGE`                      | its x4 output passes `maxOutputPixels`    |
 * | 415    | `ERR_UNSUPPORTED_IMAGE`                    | not an image format the decoder reads     |
 * | 503    | `ERR_QUEUE_FULL`, `ERR_SHUTTING_DOWN`      | the upscaler's queue is full, draining    |
 * | 504    | `ERR_TIMEOUT`                              | the call ran past the server's timeout    |
 * | 500    | `ERR_INTERNAL` or the error's own code     | anything else (a bug)                     |
 */
import { ImageError } from '../image/io.js';

/** An error answer: status, body and extra headers. */
export interface HttpErrorReply {
  /** HTTP status. */
  status: number;
  /** The JSON body. */
  body: { code: string; message: string };
  /** Extra headers (`Retry-After`). */
  headers: Record<string, string>;
}

/** An error the server raises itself, with its status and code. */
export class HttpError extends Error {
  /**
   * @param status - HTTP status.
   * @param code - Stable code for the JSON body.
   * @param message - Human-readable description (the request is named by {@link toHttpError}).
   */
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
Object.defineProperty(HttpError.prototype, 'name', { value: 'HttpError', writable: true, configurable: true });

/** Status 499 (nginx's "client closed request"): the client went away; nothing is sent. */
export const CLIENT_CLOSED = 499;

function codeOf(err: unknown): string | undefined {
  const code = typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Maps any thrown value to its error answer.
 *
 * @param err - What the route or fastify threw.
 * @param requestId - The request's id, named in the message.
 * @param retryAfter - Seconds a client should wait after `ERR_QUEUE_FULL` (the `Retry-After` value).
 */
export function toHttpError(err: unknown, requestId: string, retryAfter: () => number): HttpErrorReply {
  const reply = (status: number, code: string, message: string, headers: Record<string, string> = {}) => ({
    status,
    body: { code, message },
    headers,
  });
  const message = err instanceof Error ? err.message : String(err);
  const named = `${message} (request ${requestId})`;
  if (err instanceof ImageError) {
    const text = `Cannot upscale request ${requestId}: ${err.problem}`;
    if (err.reason === 'unsupported') return reply(415, 'ERR_UNSUPPORTED_IMAGE', text);
    if (err.reason === 'too-large') return reply(413, 'ERR_IMAGE_TOO_LARGE', text);
    return reply(400, 'ERR_INVALID_IMAGE', text);
  }
  if (err instanceof HttpError) {
    const headers: Record<string, string> = err.status === 503 ? { 'retry-after': String(retryAfter()) } : {};
    return reply(err.status, err.code, named, headers);
  }
  if (err instanceof Error && err.name === 'AbortError') {
    return reply(CLIENT_CLOSED, 'ERR_CLIENT_CLOSED', `The client closed request ${requestId}`);
  }
  const code = codeOf(err);
  switch (code) {
    case 'ERR_INVALID_OPTION':
      return reply(400, code, named);
    case 'ERR_QUEUE_FULL':
      return reply(503, code, named, { 'retry-after': String(retryAfter()) });
    case 'ERR_DISPOSED':
      return reply(503, 'ERR_SHUTTING_DOWN', named, { 'retry-after': String(retryAfter()) });
    case 'ERR_TIMEOUT':
      return reply(504, code, named);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return reply(413, 'ERR_BODY_TOO_LARGE', named);
    default:
      break;
  }
  const status = typeof err === 'object' && err !== null && 'statusCode' in err ? err.statusCode : undefined;
  // fastify's own client errors (a malformed request line, an unsupported Content-Encoding, ...).
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return reply(status, code ?? 'ERR_BAD_REQUEST', named);
  }
  return reply(500, code ?? 'ERR_INTERNAL', named);
}
