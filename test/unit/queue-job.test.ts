/** Queue job data and worker options: the checks a producer and a worker share (no Redis, no addon). */
import { describe, expect, it } from 'vitest';

import { validateUpscalerOptions } from '../../src/options.js';
import { jobIdFor, validateJobData, validateRedisUrl } from '../../src/queue/index.js';

describe('validateJobData', () => {
  it('accepts absolute paths and the serialisable upscale options', () => {
    expect(
      validateJobData({
        input: '/in/a.png',
        output: '/out/x/../a.webp',
        options: { format: 'webp', quality: 80, seed: 7 },
      }),
    ).toEqual({
      input: '/in/a.png',
      output: '/out/a.webp',
      options: { format: 'webp', quality: 80, seed: 7 },
    });
    expect(validateJobData({ input: 'a.png', output: 'out/a.png' }, '/base')).toEqual({
      input: '/base/a.png',
      output: '/base/out/a.png',
    });
  });

  it('rejects invalid data with the API messages', () => {
    expect(() => validateJobData('a.png')).toThrow(
      'Expected object { input, output, options } for job data but received "a.png"',
    );
    expect(() => validateJobData({ input: 'a.png', output: '/o/a.png' })).toThrow(
      'Expected absolute path for input but received "a.png"',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '' })).toThrow(
      'Expected non-empty path string for output but received ""',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/o/a.png', extra: 1 })).toThrow(
      'Expected one of input, output, options for job data key but received "extra"',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/o/a.png', options: { quality: 0 } })).toThrow(
      'Expected integer between 1 and 100 for quality but received 0',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/o/a.png', options: { format: 'bmp' } })).toThrow(
      'Expected one of "png", "jpeg", "webp", "tiff", "avif", "gif" for format but received "bmp"',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/o/a.png', options: { raw: true } })).toThrow(
      'Expected one of "format", "quality", "seed" for options key but received "raw"',
    );
    expect(() => validateJobData({ input: '/i/a.png', output: '/i/a.png' })).toThrow(
      'Expected path other than the input for output but received "/i/a.png"',
    );
  });

  it('derives one job id per output path', () => {
    expect(jobIdFor('/o/a.png')).toBe(jobIdFor('/o/a.png'));
    expect(jobIdFor('/o/a.png')).not.toBe(jobIdFor('/o/b.png'));
    expect(jobIdFor('/o/a.png')).toMatch(/^out-[0-9a-f]{32}$/);
  });
});

describe('queue options', () => {
  it('rejects invalid Redis URLs', () => {
    expect(validateRedisUrl('redis', 'redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
    expect(() => validateRedisUrl('redis', 'http://127.0.0.1:6379')).toThrow(
      'Expected redis:// or rediss:// URL (redis://host:port) for redis but received "http://127.0.0.1:6379"',
    );
    expect(() => validateRedisUrl('redis', 6379)).toThrow('for redis but received 6379');
  });

  it('gpu: the CUDA device index, rejects invalid', () => {
    expect(validateUpscalerOptions({}).gpu).toBe(0);
    expect(validateUpscalerOptions({ gpu: 3 }).gpu).toBe(3);
    expect(() => validateUpscalerOptions({ gpu: -1 })).toThrow(
      'Expected integer between 0 and 255 for gpu but received -1',
    );
    expect(() => validateUpscalerOptions({ gpu: '1' })).toThrow(
      'Expected integer between 0 and 255 for gpu but received "1"',
    );
  });
});
