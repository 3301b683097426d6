/** Option validation (src/options.ts): defaults, accepted ranges and every rejection message. */
import { describe, expect, it } from 'vitest';

import { DEFAULT_MAX_OUTPUT_PIXELS, validateUpscaleOptions, validateUpscalerOptions } from '../../src/options.js';

/** Asserts that validating `options` throws a TypeError with exactly `message`. */
function rejects(validate: (o: unknown) => unknown, options: unknown, message: string): void {
  let caught: unknown;
  try {
    validate(options);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TypeError);
  expect((caught as TypeError).message).toBe(message);
  expect((caught as { code?: string }).code).toBe('ERR_INVALID_OPTION');
}

describe('validateUpscalerOptions', () => {
  it('fills in the defaults', () => {
    const defaults = {
      model: undefined,
      device: 'auto',
      seed: 0,
      cfg: undefined,
      topK: 1,
      topP: 0.75,
      tileBatch: 4,
      colorFix: undefined,
      maxOutputPixels: 16384 * 16384,
      gpu: 0,
      kvCache: 'f32',
      refiner: true,
      maxBatchTiles: 4,
      maxBatchDelayMs: 2,
      maxQueuedTiles: Infinity,
      maxQueuedRequests: Infinity,
    };
    expect(validateUpscalerOptions(undefined)).toEqual(defaults);
    expect(validateUpscalerOptions({})).toEqual(defaults);
    expect(validateUpscalerOptions({ seed: undefined, cfg: undefined })).toEqual(defaults);
    expect(DEFAULT_MAX_OUTPUT_PIXELS).toBe(268435456);
  });

  it('accepts values at the ends of every range', () => {
    const lo = {
      model: 'm.safetensors',
      device: 'cpu',
      seed: 0,
      cfg: 0,
      topK: 0,
      topP: 0,
      tileBatch: 1,
      colorFix: 'none',
      maxOutputPixels: 1,
      gpu: 0,
      kvCache: 'f32',
      refiner: false,
      maxBatchTiles: 1,
      maxBatchDelayMs: 0,
      maxQueuedTiles: 1,
      maxQueuedRequests: 1,
    };
    expect(validateUpscalerOptions(lo)).toEqual(lo);
    const hi = {
      model: '/x/y.safetensors',
      device: 'cuda',
      seed: Number.MAX_SAFE_INTEGER,
      cfg: 100,
      topK: 1_000_000,
      topP: 1,
      tileBatch: 64,
      colorFix: 'wavelet',
      maxOutputPixels: 32768 * 32768,
      gpu: 0,
      kvCache: 'bf16',
      refiner: true,
      maxBatchTiles: 64,
      maxBatchDelayMs: 60_000,
      maxQueuedTiles: 2 ** 31 - 1,
      maxQueuedRequests: 2 ** 31 - 1,
    };
    expect(validateUpscalerOptions(hi)).toEqual(hi);
    expect(validateUpscalerOptions({ cfg: 7.5, topP: 0.9 })).toMatchObject({ cfg: 7.5, topP: 0.9 });
  });

  const v = validateUpscalerOptions;

  it('rejects invalid options objects and unknown option names', () => {
    rejects(v, 5, 'Expected object for options but received 5');
    rejects(v, null, 'Expected object for options but received null');
    rejects(v, ['cpu'], "Expected object for options but received [ 'cpu' ]");
    rejects(
      v,
      { top_k: 2 },
      'Expected one of "model", "device", "gpu", "kvCache", "refiner", "seed", "cfg", "topK", "topP", "tileBatch", "colorFix", "maxOutputPixels", "maxBatchTiles", "maxBatchDelayMs", "maxQueuedTiles", "maxQueuedRequests" for options key but received "top_k"',
    );
  });

  it('rejects invalid model', () => {
    rejects(v, { model: '' }, 'Expected non-empty string (path of a .safetensors file) for model but received ""');
    rejects(v, { model: 42 }, 'Expected non-empty string (path of a .safetensors file) for model but received 42');
  });

  it('rejects invalid device', () => {
    rejects(v, { device: 'gpu' }, 'Expected one of "auto", "cpu", "cuda" for device but received "gpu"');
    rejects(v, { device: null }, 'Expected one of "auto", "cpu", "cuda" for device but received null');
  });

  it('rejects invalid refiner', () => {
    rejects(v, { refiner: 'no' }, 'Expected boolean for refiner but received "no"');
    rejects(v, { refiner: 0 }, 'Expected boolean for refiner but received 0');
    expect(v({ refiner: false }).refiner).toBe(false);
  });

  it('rejects invalid kvCache', () => {
    rejects(v, { kvCache: 'f16' }, 'Expected one of "f32", "bf16" for kvCache but received "f16"');
    rejects(v, { kvCache: 16 }, 'Expected one of "f32", "bf16" for kvCache but received 16');
    expect(v({ kvCache: 'bf16' }).kvCache).toBe('bf16');
    expect(v({}).kvCache).toBe('f32');
  });

  it('rejects invalid seed', () => {
    const msg = (x: string) => `Expected integer between 0 and 9007199254740991 for seed but received ${x}`;
    rejects(v, { seed: -1 }, msg('-1'));
    rejects(v, { seed: 1.5 }, msg('1.5'));
    rejects(v, { seed: 2 ** 53 }, msg('9007199254740992'));
    rejects(v, { seed: '1' }, msg('"1"'));
    rejects(v, { seed: 1n }, msg('1n'));
  });

  it('rejects invalid cfg', () => {
    const msg = (x: string) => `Expected number between 0 and 100 for cfg but received ${x}`;
    rejects(v, { cfg: -0.5 }, msg('-0.5'));
    rejects(v, { cfg: 100.5 }, msg('100.5'));
    rejects(v, { cfg: Number.NaN }, msg('NaN'));
    rejects(v, { cfg: Infinity }, msg('Infinity'));
    rejects(v, { cfg: '6' }, msg('"6"'));
  });

  it('rejects invalid topK', () => {
    const msg = (x: string) => `Expected integer between 0 and 1000000 for topK but received ${x}`;
    rejects(v, { topK: -1 }, msg('-1'));
    rejects(v, { topK: 2.5 }, msg('2.5'));
    rejects(v, { topK: 1_000_001 }, msg('1000001'));
  });

  it('rejects invalid topP', () => {
    const msg = (x: string) => `Expected number between 0 and 1 for topP but received ${x}`;
    rejects(v, { topP: -0.1 }, msg('-0.1'));
    rejects(v, { topP: 1.01 }, msg('1.01'));
    rejects(v, { topP: Number.NaN }, msg('NaN'));
  });

  it('rejects invalid tileBatch', () => {
    rejects(v, { tileBatch: 0 }, 'Expected integer between 1 and 64 for tileBatch but received 0');
    rejects(v, { tileBatch: 65 }, 'Expected integer between 1 and 64 for tileBatch but received 65');
    rejects(v, { tileBatch: 2.5 }, 'Expected integer between 1 and 64 for tileBatch but received 2.5');
    rejects(v, { tileBatch: '4' }, 'Expected integer between 1 and 64 for tileBatch but received "4"');
  });

  it('rejects invalid colorFix', () => {
    rejects(v, { colorFix: 'lab' }, 'Expected one of "adain", "wavelet", "none" for colorFix but received "lab"');
    rejects(v, { colorFix: false }, 'Expected one of "adain", "wavelet", "none" for colorFix but received false');
  });

  it('rejects invalid maxBatchTiles (default: tileBatch)', () => {
    rejects(v, { maxBatchTiles: 0 }, 'Expected integer between 1 and 64 for maxBatchTiles but received 0');
    rejects(v, { maxBatchTiles: 65 }, 'Expected integer between 1 and 64 for maxBatchTiles but received 65');
    rejects(v, { maxBatchTiles: 1.5 }, 'Expected integer between 1 and 64 for maxBatchTiles but received 1.5');
    rejects(v, { maxBatchTiles: '8' }, 'Expected integer between 1 and 64 for maxBatchTiles but received "8"');
    expect(v({ tileBatch: 8 }).maxBatchTiles).toBe(8);
    expect(v({ tileBatch: 8, maxBatchTiles: 2 }).maxBatchTiles).toBe(2);
  });

  it('rejects invalid maxBatchDelayMs', () => {
    const msg = (x: string) => `Expected integer between 0 and 60000 for maxBatchDelayMs but received ${x}`;
    rejects(v, { maxBatchDelayMs: -1 }, msg('-1'));
    rejects(v, { maxBatchDelayMs: 60_001 }, msg('60001'));
    rejects(v, { maxBatchDelayMs: 0.5 }, msg('0.5'));
    rejects(v, { maxBatchDelayMs: null }, msg('null'));
  });

  it('rejects invalid maxQueuedTiles and maxQueuedRequests', () => {
    for (const name of ['maxQueuedTiles', 'maxQueuedRequests']) {
      const msg = (x: string) => `Expected integer between 1 and 2147483647 for ${name} but received ${x}`;
      rejects(v, { [name]: 0 }, msg('0'));
      rejects(v, { [name]: 2 ** 31 }, msg('2147483648'));
      rejects(v, { [name]: Infinity }, msg('Infinity'));
      rejects(v, { [name]: '16' }, msg('"16"'));
    }
  });

  it('rejects invalid maxOutputPixels', () => {
    const msg = (x: string) => `Expected integer between 1 and 1073741824 for maxOutputPixels but received ${x}`;
    rejects(v, { maxOutputPixels: 0 }, msg('0'));
    rejects(v, { maxOutputPixels: 2 ** 30 + 1 }, msg('1073741825'));
    rejects(v, { maxOutputPixels: 1e3 + 0.5 }, msg('1000.5'));
  });
});

describe('validateUpscaleOptions', () => {
  const u = validateUpscaleOptions;

  it('fills in the defaults and keeps valid values', () => {
    const empty = {
      signal: undefined,
      onProgress: undefined,
      format: undefined,
      quality: undefined,
      seed: undefined,
      raw: false,
    };
    expect(u(undefined)).toEqual(empty);
    expect(u({})).toEqual(empty);
    const signal = new AbortController().signal;
    const onProgress = () => undefined;
    expect(u({ signal, onProgress, format: 'webp', quality: 1, seed: 7, raw: true })).toEqual({
      signal,
      onProgress,
      format: 'webp',
      quality: 1,
      seed: 7,
      raw: true,
    });
    expect(u({ quality: 100, format: 'png' })).toMatchObject({ quality: 100, format: 'png' });
  });

  it('rejects invalid options objects and unknown option names', () => {
    rejects(u, 'png', 'Expected object for options but received "png"');
    rejects(
      u,
      { fmt: 'png' },
      'Expected one of "signal", "timeout", "onProgress", "format", "quality", "seed", "raw" for options key but received "fmt"',
    );
  });

  it('rejects invalid signal', () => {
    rejects(u, { signal: {} }, 'Expected AbortSignal for signal but received {}');
    rejects(
      u,
      { signal: new AbortController() },
      'Expected AbortSignal for signal but received AbortController { signal: [AbortSignal] }',
    );
  });

  it('rejects invalid onProgress', () => {
    rejects(u, { onProgress: 'log' }, 'Expected function for onProgress but received "log"');
  });

  it('rejects invalid format', () => {
    rejects(
      u,
      { format: 'bmp' },
      'Expected one of "png", "jpeg", "webp", "tiff", "avif", "gif" for format but received "bmp"',
    );
    rejects(
      u,
      { format: 'jpg' },
      'Expected one of "png", "jpeg", "webp", "tiff", "avif", "gif" for format but received "jpg"',
    );
  });

  it('rejects invalid quality', () => {
    rejects(u, { quality: 0 }, 'Expected integer between 1 and 100 for quality but received 0');
    rejects(u, { quality: 101 }, 'Expected integer between 1 and 100 for quality but received 101');
    rejects(u, { quality: 90.5 }, 'Expected integer between 1 and 100 for quality but received 90.5');
  });

  it('rejects invalid seed', () => {
    rejects(u, { seed: -3 }, 'Expected integer between 0 and 9007199254740991 for seed but received -3');
  });

  it('rejects invalid timeout', () => {
    const msg = (x: string) => `Expected integer between 1 and 2147483647 for timeout but received ${x}`;
    rejects(u, { timeout: 0 }, msg('0'));
    rejects(u, { timeout: 2 ** 31 }, msg('2147483648'));
    rejects(u, { timeout: 1.5 }, msg('1.5'));
    rejects(u, { timeout: '1000' }, msg('"1000"'));
    expect(u({ timeout: 1000 }).timeout).toBe(1000);
  });

  it('rejects invalid raw', () => {
    rejects(u, { raw: 'yes' }, 'Expected boolean for raw but received "yes"');
    rejects(u, { raw: 1 }, 'Expected boolean for raw but received 1');
  });
});
