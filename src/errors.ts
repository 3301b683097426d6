/**
 * Error types and message helpers shared by the whole package.
 *
 * - User-facing option checks throw {@link invalidOption} TypeErrors whose message reads
 *   `Expected <what> for <name> but received <value>` (STYLE rule 6).
 * - Everything else the package throws on purpose is an {@link AlignvarError} with a stable
 *   `code`: {@link WeightsError} for invalid weight files, {@link NativeError} for rejections of
 *   the native addon, re-thrown by {@link rethrowNative} with the JavaScript caller's stack
 *   (STYLE rule 8).
 */
import { inspect } from 'node:util';

/** Longest string rendered in full by {@link describeValue}; longer ones are cut. */
const MAX_STRING_CHARS = 200;
/** Longest rendering of an object or array by {@link describeValue}. */
const MAX_OBJECT_CHARS = 160;

/**
 * Renders any value for an error message: strings in double quotes (JSON escaping, cut after
 * 200 characters with the full length noted), numbers as-is (`NaN`, `-0`, `Infinity` included),
 * bigints with an `n` suffix, `null`, `undefined`, functions as `[Function name]`, and objects,
 * arrays and typed arrays as a one-line `util.inspect` cut after 160 characters.
 *
 * @param value - Anything.
 * @returns A short, single-line description.
 */
export function describeValue(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return value.length > MAX_STRING_CHARS
        ? `${JSON.stringify(value.slice(0, MAX_STRING_CHARS))}... (${value.length} characters)`
        : JSON.stringify(value);
    case 'number':
      return Object.is(value, -0) ? '-0' : String(value);
    case 'bigint':
      return `${value}n`;
    case 'boolean':
    case 'undefined':
      return String(value);
    case 'symbol':
      return value.toString();
    case 'function':
      return `[Function ${value.name || '(anonymous)'}]`;
    default:
      break;
  }
  if (value === null) return 'null';
  const text = inspect(value, {
    depth: 1,
    breakLength: Infinity,
    maxArrayLength: 8,
    maxStringLength: 40,
    compact: true,
  }).replace(/\s*\n\s*/g, ' ');
  return text.length > MAX_OBJECT_CHARS ? `${text.slice(0, MAX_OBJECT_CHARS)}...` : text;
}

/** A TypeError from {@link invalidOption}, tagged with a stable code. */
export type InvalidOptionError = TypeError & { readonly code: 'ERR_INVALID_OPTION' };

/**
 * Builds the error for a user-facing option or argument that fails validation. Callers throw it:
 * `throw invalidOption('scale', 'an integer in [1, 4]', 7)`.
 *
 * @param name - The option as the user wrote it, e.g. `options.tileSize` or `tensors["a"].shape`.
 * @param expected - What is accepted, phrased to follow "Expected", e.g. `an integer in [64, 1024]`.
 * @param actual - The value received; rendered with {@link describeValue}.
 * @returns A TypeError (with `code` `'ERR_INVALID_OPTION'`) whose message is exactly
 *   `Expected <expected> for <name> but received <actual>`.
 */
export function invalidOption(name: string, expected: string, actual: unknown): InvalidOptionError {
  const err = new TypeError(`Expected ${expected} for ${name} but received ${describeValue(actual)}`);
  // Drop this helper's own frame so the stack starts at the validating function.
  Error.captureStackTrace(err, invalidOption);
  return Object.defineProperty(err, 'code', {
    value: 'ERR_INVALID_OPTION',
    enumerable: true,
  }) as InvalidOptionError;
}

/** Sets `name` on a class prototype (non-enumerable, like the built-in errors). */
function setErrorName(ctor: { prototype: Error }, name: string): void {
  Object.defineProperty(ctor.prototype, 'name', {
    value: name,
    enumerable: false,
    writable: true,
    configurable: true,
  });
}

/**
 * Base class of the errors this package throws on purpose (not option TypeErrors).
 * `code` is stable across versions and meant for programmatic checks.
 */
export class AlignvarError extends Error {
  /** Stable machine-readable code, e.g. `'ERR_INVALID_WEIGHTS'`. */
  readonly code: string;

  /**
   * @param message - Human-readable description.
   * @param code - Stable machine-readable code.
   * @param options - Standard error options (`cause`).
   */
  constructor(message: string, code: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}
setErrorName(AlignvarError, 'AlignvarError');

/**
 * A rejection of the native addon, re-thrown by {@link rethrowNative}: `message` and `code` are
 * the native error's (`code` `'ERR_NATIVE'` when it had none), `stack` holds the JavaScript
 * frames of the call that started the native work, and `cause` is the original rejection value.
 */
export class NativeError extends AlignvarError {
  /**
   * @param message - The native error's message.
   * @param code - The native error's code, or `'ERR_NATIVE'`.
   * @param options - `cause`: the original rejection value.
   */
  constructor(message: string, code = 'ERR_NATIVE', options?: ErrorOptions) {
    super(message, code, options);
  }
}
setErrorName(NativeError, 'NativeError');

/**
 * Awaits a promise returned by the native addon and, when it rejects, throws a
 * {@link NativeError} whose stack shows the caller of `rethrowNative` (native rejections are
 * settled from the event loop, so their own stacks have no JavaScript frames). The caller's stack
 * is captured synchronously, before anything is awaited. Errors that already are
 * {@link AlignvarError}s, and `AbortError`s, pass through unchanged.
 *
 * @param p - The promise a native method returned.
 * @returns What `p` resolves to.
 */
export async function rethrowNative<T>(p: Promise<T>): Promise<T> {
  const site: { stack?: string } = {};
  // Leaves out this function's frame: the stack starts at the caller.
  Error.captureStackTrace(site, rethrowNative);
  try {
    return await p;
  } catch (reason) {
    if (reason instanceof AlignvarError) throw reason;
    if (reason instanceof Error && reason.name === 'AbortError') throw reason;
    const message = reason instanceof Error ? reason.message : String(reason);
    const nativeCode =
      typeof reason === 'object' && reason !== null && 'code' in reason ? reason.code : undefined;
    const code = typeof nativeCode === 'string' && nativeCode !== '' ? nativeCode : 'ERR_NATIVE';
    const err = new NativeError(message, code, { cause: reason });
    const callerFrames = (site.stack ?? '').split('\n').slice(1).join('\n');
    err.stack = `${err.name}: ${message}${callerFrames ? `\n${callerFrames}` : ''}`;
    throw err;
  }
}

/** What {@link WeightsError} needs: the file, the tensor concerned (if any) and the problem. */
export interface WeightsErrorInit {
  /** Path of the weights file, as given by the caller. */
  file: string;
  /** Name of the tensor concerned; omitted for file-level problems. */
  tensor?: string | undefined;
  /** What is wrong, e.g. `header length 0 is too small`. */
  problem: string;
  /** The underlying error, if any. */
  cause?: unknown;
}

/**
 * An invalid or unusable weights file. The message names the file, the tensor (JSON-quoted)
 * when one is concerned, and the problem, e.g.
 * ```text
 * Invalid safetensors file /x/y.safetensors: tensor "blocks.0.attn.mat_qkv.weight":
 *   data offsets [0, 10) do not match shape [4608, 1536] x BF16 (14155776 bytes)
 * ```
 * (one line in the actual message).
 * `code` is `'ERR_INVALID_WEIGHTS'`.
 */
export class WeightsError extends AlignvarError {
  /** Path of the weights file, as given by the caller. */
  readonly file: string;
  /** Name of the tensor concerned; `undefined` for file-level problems. */
  readonly tensor: string | undefined;
  /** What is wrong, without the file and tensor. */
  readonly problem: string;

  /** @param init - The file, the tensor (optional), the problem and the cause (optional). */
  constructor(init: WeightsErrorInit) {
    const where = init.tensor === undefined ? '' : `tensor ${JSON.stringify(init.tensor)}: `;
    super(
      `Invalid safetensors file ${init.file}: ${where}${init.problem}`,
      'ERR_INVALID_WEIGHTS',
      init.cause === undefined ? undefined : { cause: init.cause },
    );
    this.file = init.file;
    this.tensor = init.tensor;
    this.problem = init.problem;
  }
}
setErrorName(WeightsError, 'WeightsError');
