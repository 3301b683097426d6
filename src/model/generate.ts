/**
 * The scale loop (spec 5.1): one native `session.step(si)` per scale, so progress events and
 * cancellation act between scales while all compute stays off the main thread.
 */
import { rethrowNative } from '../errors.js';
import type { NativeSession } from '../binding/types.js';
import type { Schedule } from './schedule.js';

/** Reported after each scale. */
export interface ScaleProgress {
  /** Scale just finished, 0-based. */
  scale: number;
  /** Number of scales K. */
  scales: number;
  /** Side of that scale's token map. */
  patchNum: number;
  /** Milliseconds the native step took (wall clock, including the wait for the worker). */
  ms: number;
}

/** What the scale loop needs besides the session. */
export interface ScaleLoopOptions {
  /** Called after each scale with its progress. Exceptions it throws abort the loop. */
  onProgress?: ((p: ScaleProgress) => void) | undefined;
  /** Checked before every scale; an aborted signal rejects with its reason. */
  signal?: AbortSignal | undefined;
  /**
   * Test-only inspection hook, awaited after each scale before the next one starts (the
   * session is idle then, so `_debug` may be called).
   */
  onStep?: ((si: number, tokens: Int32Array) => Promise<void> | void) | undefined;
}

/**
 * Runs every scale of a prepared batch in order.
 *
 * @param session - A session on which `prepare` has resolved.
 * @param schedule - The model's schedule.
 * @param options - Progress, cancellation and inspection hooks.
 * @returns The sampled tokens of each scale, [B, pn^2] row-major per entry.
 */
export async function runScales(
  session: NativeSession,
  schedule: Schedule,
  options: ScaleLoopOptions = {},
): Promise<Int32Array[]> {
  const tokens: Int32Array[] = [];
  for (const st of schedule.steps) {
    options.signal?.throwIfAborted();
    const t0 = performance.now();
    const idx = await rethrowNative(session.step(st.si));
    const ms = performance.now() - t0;
    tokens.push(idx);
    options.onProgress?.({ scale: st.si, scales: schedule.K, patchNum: st.pn, ms });
    if (options.onStep) await options.onStep(st.si, idx);
  }
  return tokens;
}
