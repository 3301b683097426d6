/**
 * Residual latent (issue 11): the engine against the reference on the tiny golden model with
 * `latent = residual`, `residual_scale = 0.25` added to its metadata (training/avtrain/golden.py
 * residual_golden writes the reference output, golden-residual.safetensors). The output is
 * clamp(2 * up01 - 1 + 0.25 * decoder) as uint8 with no colour fix; the tokens and the decoder are
 * those of golden case a, so the same tolerance holds: every byte within 1 LSB, at most 0.1% differ.
 * Also: the metadata is parsed strictly (WeightsError names the key and the value), and a file
 * without it decodes exactly as before.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Engine } from '../../src/engine.js';
import { SafetensorsFile, type SafetensorsTensorInput, writeSafetensors } from '../../src/weights/safetensors.js';

const DIR = new URL('../fixtures/golden/', import.meta.url).pathname;
const MODEL = `${DIR}tiny-model.safetensors`;

async function readU8(path: string, name: string): Promise<{ data: Uint8Array; meta: Record<string, string> }> {
  const f = await SafetensorsFile.open(path);
  try {
    const b = await f.read(name);
    return { data: new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)), meta: { ...f.metadata } };
  } finally {
    await f.close();
  }
}

function byteDiff(a: Uint8Array, b: Uint8Array): { max: number; frac: number } {
  let max = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (d > 0) n++;
    if (d > max) max = d;
  }
  return { max, frac: n / a.length };
}

describe('residual latent', () => {
  let dir: string;
  let tensors: Record<string, SafetensorsTensorInput>;
  let meta: Record<string, string>;
  let lr: Uint8Array;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'alignvar-residual-'));
    const f = await SafetensorsFile.open(MODEL);
    tensors = {};
    for (const [name, info] of f.tensors) {
      const b = await f.read(name);
      tensors[name] = {
        dtype: 'F32',
        shape: info.shape,
        data: new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)),
      };
    }
    meta = { ...f.metadata };
    await f.close();
    lr = (await readU8(`${DIR}golden.safetensors`, 'input.lr_u8')).data;
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function withMeta(name: string, extra: Record<string, string>): Promise<string> {
    const path = join(dir, name);
    await writeSafetensors(path, tensors, { ...meta, ...extra });
    return path;
  }

  it('matches the reference output (cpu, f32, greedy, cfg 2)', async () => {
    const golden = await readU8(`${DIR}golden-residual.safetensors`, 'r.img_u8');
    const path = await withMeta('residual.safetensors', {
      latent: golden.meta.latent!,
      residual_scale: golden.meta.residual_scale!,
    });
    const eng = await Engine.create(path, { backend: 'cpu' });
    try {
      expect(eng.config.latent).toBe('residual');
      expect(eng.config.residualScale).toBe(0.25);
      const out = await eng.run(lr, 2, { cfg: 2, topK: 1 });
      const d = byteDiff(out, golden.data);
      console.log(`residual: max byte diff ${d.max}, fraction differing ${d.frac.toExponential(2)}`);
      expect(d.max).toBeLessThanOrEqual(1);
      expect(d.frac).toBeLessThan(1e-3);
      // the residual path really is a different output from the image path of the same weights
      const plain = await Engine.create(MODEL, { backend: 'cpu' });
      try {
        const img = await plain.run(lr, 2, { cfg: 2, topK: 1, colorFix: 'none' });
        expect(byteDiff(img, out).frac).toBeGreaterThan(0.5);
      } finally {
        await plain.dispose();
      }
    } finally {
      await eng.dispose();
    }
  });

  it('leaves files without the keys on the image path', async () => {
    const eng = await Engine.create(MODEL, { backend: 'cpu' });
    try {
      expect(eng.config.latent ?? 'image').toBe('image');
      expect(eng.config.residualScale).toBeUndefined();
    } finally {
      await eng.dispose();
    }
  });

  it.each([
    [{ latent: 'Residual' }, 'metadata latent'],
    [{ latent: 'residual', residual_scale: '0' }, 'metadata residual_scale'],
    [{ latent: 'residual', residual_scale: '1e3' }, 'metadata residual_scale'],
    [{ latent: 'residual', residual_scale: 'nan' }, 'metadata residual_scale'],
    [{ residual_scale: '0.25' }, 'needs latent "residual"'],
  ])('rejects metadata %o', async (extra, message) => {
    const path = await withMeta('bad.safetensors', extra);
    await expect(Engine.create(path, { backend: 'cpu' })).rejects.toThrow(message);
  });
});
