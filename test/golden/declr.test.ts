/**
 * LR-conditioned decoder (issue 11; metadata `decoder_lr`): the engine against the reference on
 * the tiny golden model made a residual-latent model whose decoder also reads the upsampled LR.
 * training/avtrain/golden.py declr_golden draws the `decoder.lr_in.<l>` weights and writes them
 * with the reference's decoder output and image (golden-declr.safetensors); this test adds them
 * and the metadata to tiny-model.safetensors. Tokens are those of golden case a, so the suite's
 * tolerances hold: decoder output relative L2 error <= 1e-5, every byte within 1 LSB with at most
 * 0.1% differing. Also: the option is strict both ways (metadata without the tensors, tensors
 * without the metadata).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Engine } from '../../src/engine.js';
import { type SafetensorsTensorInput, writeSafetensors } from '../../src/weights/safetensors.js';
import { relErr } from '../helpers/index.js';
import { type FixtureTensors, readFixture } from '../helpers/tensors.js';

const DIR = new URL('../fixtures/golden/', import.meta.url).pathname;

describe('LR-conditioned decoder (decoder_lr)', () => {
  let dir: string;
  let model: FixtureTensors;
  let golden: FixtureTensors;
  let lr: Uint8Array;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'alignvar-declr-'));
    model = await readFixture(`${DIR}tiny-model.safetensors`);
    golden = await readFixture(`${DIR}golden-declr.safetensors`);
    lr = (await readFixture(`${DIR}golden.safetensors`)).raw.get('input.lr_u8')!;
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const lrIn = () => Object.fromEntries(Object.entries(golden.t).filter(([k]) => k.startsWith('decoder.lr_in.')));
  const meta = () => ({ latent: golden.meta.latent!, residual_scale: golden.meta.residual_scale! });

  async function write(name: string, tensors: Record<string, SafetensorsTensorInput>, extra: Record<string, string>) {
    const path = join(dir, name);
    await writeSafetensors(path, tensors, { ...model.meta, ...extra });
    return path;
  }

  it('matches the reference decoder output and image (cpu, f32, greedy, cfg 2)', async () => {
    const path = await write('declr.safetensors', { ...model.t, ...lrIn() }, { ...meta(), decoder_lr: '1' });
    const eng = await Engine.create(path, { backend: 'cpu' });
    try {
      expect(eng.config.decoderLr).toBe(true);
      const out = await eng.run(lr, 2, { cfg: 2, topK: 1, debug: true });
      const dec = (await eng._session._debug('decoded')).data;
      const e = relErr(dec, golden.t['d.dec']!.data as Float32Array);
      const ref = golden.raw.get('d.img_u8')!;
      let max = 0;
      let n = 0;
      for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(ref[i]! - out[i]!);
        if (d > 0) n++;
        max = Math.max(max, d);
      }
      console.log(
        `decoder_lr: dec rel ${e.toExponential(2)}, max byte diff ${max}, fraction ${(n / ref.length).toExponential(2)}`,
      );
      expect(e).toBeLessThan(1e-5);
      expect(max).toBeLessThanOrEqual(1);
      expect(n / ref.length).toBeLessThan(1e-3);
      // the LR inputs change the output: the same file without them decodes differently
      const plain = await Engine.create(await write('residual.safetensors', model.t, meta()), { backend: 'cpu' });
      try {
        await plain.run(lr, 2, { cfg: 2, topK: 1, debug: true });
        expect(relErr((await plain._session._debug('decoded')).data, dec)).toBeGreaterThan(1e-2);
      } finally {
        await plain.dispose();
      }
    } finally {
      await eng.dispose();
    }
  });

  it('names the missing tensor when the metadata asks for LR inputs the file lacks', async () => {
    const path = await write('no-tensors.safetensors', model.t, { ...meta(), decoder_lr: '1' });
    await expect(Engine.create(path, { backend: 'cpu' })).rejects.toThrow('decoder.lr_in.');
  });

  it('refuses LR-input tensors without the metadata, and a malformed value', async () => {
    const extra = await write('no-meta.safetensors', { ...model.t, ...lrIn() }, meta());
    await expect(Engine.create(extra, { backend: 'cpu' })).rejects.toThrow('decoder.lr_in.');
    const bad = await write('bad.safetensors', model.t, { ...meta(), decoder_lr: 'yes' });
    await expect(Engine.create(bad, { backend: 'cpu' })).rejects.toThrow('metadata decoder_lr');
  });
});
