import { accessSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { addon, poisoned, randArray, rng } from '../helpers/index.js';

describe('backendInfo', () => {
  const info = addon.backendInfo();

  it('always lists a usable CPU backend with its SIMD level', () => {
    const cpu = info.find((b) => b.name === 'cpu');
    expect(cpu).toBeDefined();
    expect(cpu!.compiled).toBe(true);
    expect(cpu!.available).toBe(true);
    expect(cpu!.reason).toBe('');
    expect(cpu!.detail).toMatch(/simd=(scalar|avx2|avx512) threads=\d+/);
  });

  it('lists CUDA with a reason whenever it is unavailable', () => {
    const cuda = info.find((b) => b.name === 'cuda');
    expect(cuda).toBeDefined();
    if (!cuda!.available) {
      expect(cuda!.reason.length).toBeGreaterThan(10);
      expect(cuda!.devices).toEqual([]);
    } else {
      expect(cuda!.devices.length).toBeGreaterThan(0);
    }
  });

  it('reports no usable CUDA device on a machine without a driver', () => {
    const hasDriver = ['/dev/nvidiactl', '/proc/driver/nvidia/version'].some((p) => {
      try {
        accessSync(p);
        return true;
      } catch {
        return false;
      }
    });
    const cuda = info.find((b) => b.name === 'cuda')!;
    if (!hasDriver) {
      expect(cuda.available).toBe(false);
      expect(cuda.reason).toMatch(cuda.compiled ? /driver|device|CUDA/i : /libav_cuda\.so could not be loaded/);
    }
  });
});

describe('_ops errors', () => {
  it('rejects an unknown backend without crashing', () => {
    expect(() => addon._ops('metal', 'unary', {})).toThrow(/unknown backend 'metal'/);
  });

  it('rejects an unknown op', () => {
    expect(() => addon._ops('cpu', 'nope' as never, {})).toThrow(/unknown op 'nope'/);
  });

  it('rejects a tensor whose data does not match its shape', () => {
    expect(() =>
      addon._ops('cpu', 'unary', { x: { data: new Float32Array(5), shape: [2, 3] }, y: { data: new Float32Array(6), shape: [2, 3] } }),
    ).toThrow(/x: data has 20 bytes, shape and dtype need 24/);
  });
});

describe('event loop', () => {
  it('keeps ticking while a large op runs off the main thread', async () => {
    const r = rng(7);
    const M = 512;
    const K = 1536;
    const N = 1536;
    const x = randArray(M * K, r);
    const w = randArray(N * K, r);
    const y = poisoned(M * N);
    let ticks = 0;
    const timer = setInterval(() => {
      ticks += 1;
    }, 1);
    const t0 = performance.now();
    // Repeat the op so the native call lasts well over the timer period.
    await addon._ops('cpu', 'linear', { x: { data: x, shape: [M, K] }, w: { data: w, shape: [N, K] }, y: { data: y, shape: [M, N] } }, 8);
    const elapsed = performance.now() - t0;
    clearInterval(timer);
    expect(Number.isNaN(y[0]!)).toBe(false);
    // A blocked loop would see at most one tick; a free one sees roughly one per few ms.
    expect(elapsed).toBeGreaterThan(20);
    expect(ticks).toBeGreaterThan(Math.min(5, elapsed / 20));
  });
});
