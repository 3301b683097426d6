/**
 * Helpers shared by the `alignvar` command modules: usage errors, stderr logging, argv number
 * parsing and the atomic file write. No image or model logic lives here.
 */
import { randomBytes } from 'node:crypto';
import { rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import type { UpscalerOptions } from '../options.js';

/** A command-line usage error: the dispatcher prints it with a hint and exits 2. */
export class UsageError extends Error {}
Object.defineProperty(UsageError.prototype, 'name', { value: 'UsageError', enumerable: false, writable: true });

/** Writes one line to stderr. */
export function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

/** The message of any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The `code` of a thrown value, when it has a string one. */
export function errorCode(err: unknown): string | undefined {
  const code = typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
  return typeof code === 'string' ? code : undefined;
}

/** Numbers as numbers; anything else stays a string so that the API's message shows it. */
export function num(value: string | undefined): number | string | undefined {
  if (value === undefined) return undefined;
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(value.trim()) ? Number(value) : value;
}

/** Whether `path` is an existing directory (false when it does not exist). */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Suffix of the temporary files {@link writeAtomic} creates. They are hidden (leading dot) and end
 * with this suffix, so a folder scan never takes one for an image or an output, and a later run
 * can remove the ones a killed run left behind.
 */
export const TEMP_SUFFIX = '.alignvar.tmp';

/** Whether `name` (a base name) is a temporary file of {@link writeAtomic}. */
export function isTempName(name: string): boolean {
  return name.startsWith('.') && name.endsWith(TEMP_SUFFIX);
}

/**
 * Writes `data` to `path` through a temporary file in the same folder, then renames it into
 * place, so that `path` either does not exist or holds all of `data`, even after `kill -9`.
 *
 * @param path - The destination file.
 * @param data - Its whole content.
 */
export async function writeAtomic(path: string, data: Buffer): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`);
  try {
    await writeFile(tmp, data, { flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** Control characters escaped for printing: the library's helper (see src/text.ts). */
export { escapeControl } from '../text.js';

let interruptController: AbortController | undefined;

/**
 * The signal a command passes to long work so that Ctrl-C (SIGINT) stops it cleanly. A command
 * that asks for it promises to settle soon after the abort (the dispatcher then exits 130); one
 * that never asks is killed at the first Ctrl-C, as with Node's default handler.
 */
export function interruptSignal(): AbortSignal {
  interruptController ??= new AbortController();
  return interruptController.signal;
}

/**
 * Called by the dispatcher on SIGINT: aborts {@link interruptSignal}'s signal.
 *
 * @returns Whether a command holds the signal (false: nobody will stop on their own).
 */
export function interrupt(): boolean {
  if (interruptController === undefined) return false;
  interruptController.abort(Object.assign(new Error('interrupted'), { name: 'AbortError' }));
  return true;
}

/** parseArgs declarations of the model and sampling flags that `upscale` and `serve` share. */
export const MODEL_FLAGS = {
  model: { type: 'string' },
  device: { type: 'string' },
  seed: { type: 'string' },
  cfg: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'tile-batch': { type: 'string' },
  'color-fix': { type: 'string' },
  'no-color-fix': { type: 'boolean' },
  'kv-cache': { type: 'string' },
  'no-refiner': { type: 'boolean' },
} as const;

/** Parsed values of {@link MODEL_FLAGS}. */
export interface ModelFlagValues {
  model?: string | undefined;
  device?: string | undefined;
  seed?: string | undefined;
  cfg?: string | undefined;
  'top-k'?: string | undefined;
  'top-p'?: string | undefined;
  'tile-batch'?: string | undefined;
  'color-fix'?: string | undefined;
  'no-color-fix'?: boolean | undefined;
  'kv-cache'?: string | undefined;
  'no-refiner'?: boolean | undefined;
}

/**
 * The {@link UpscalerOptions} that the model flags ask for, unvalidated: validateUpscalerOptions
 * checks them, so the messages are the API's.
 */
export function modelOptions(values: ModelFlagValues): UpscalerOptions {
  return {
    model: values.model,
    device: values.device,
    seed: num(values.seed),
    cfg: num(values.cfg),
    topK: num(values['top-k']),
    topP: num(values['top-p']),
    tileBatch: num(values['tile-batch']),
    colorFix: values['no-color-fix'] ? 'none' : values['color-fix'],
    kvCache: values['kv-cache'],
    refiner: values['no-refiner'] ? false : undefined,
  } as UpscalerOptions;
}
