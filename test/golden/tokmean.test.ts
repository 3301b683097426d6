/**
 * Token mode "mean" (issue 11; metadata `token_mode`): each scale's map is the expected codebook
 * vector softmax(G) E under the CFG-mixed logits instead of the sampled tokens' vectors. The
 * engine against the reference (training/avtrain/golden.py tokmean_golden) on the tiny golden
 * model with the key added, golden case a (cfg 2, greedy): the reported tokens are identical at
 * every scale, f_hat after every scale within 5e-5 of the reference's largest magnitude, the
 * image within 1 LSB on at most 0.1% of its bytes. 5e-5, not the suite's 1e-5: the soft codes
 * carry each scale's float differences into the next scale's input (the argmax of sample mode
 * quantizes them away); measured 4.6e-6 (AVX-512), 4.2e-6 (AV_SIMD=avx2), 8.9e-6 (scalar), and
 * the reference itself moves by 1.2e-5 across PyTorch's SIMD paths (training/tests/test_golden.py).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Engine } from '../../src/engine.js';
import { writeSafetensors } from '../../src/weights/safetensors.js';
import { maxAbs } from '../helpers/index.js';
import { type FixtureTensors, readFixture } from '../helpers/tensors.js';

const DIR = new URL('../fixtures/golden/', import.meta.url).pathname;

describe('token mode "mean"', () => {
  let dir: string;
  let model: FixtureTensors;
  let golden: FixtureTensors;
  let lr: Uint8Array;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'alignvar-tokmean-'));
    model = await readFixture(`${DIR}tiny-model.safetensors`);
    golden = await readFixture(`${DIR}golden-tokmean.safetensors`);
    lr = (await readFixture(`${DIR}golden.safetensors`)).raw.get('input.lr_u8')!;
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('matches the reference tokens, f_hat per scale and image (cpu, f32, greedy, cfg 2)', async () => {
    const path = join(dir, 'mean.safetensors');
    await writeSafetensors(path, model.t, { ...model.meta, token_mode: 'mean' });
    const eng = await Engine.create(path, { backend: 'cpu' });
    try {
      expect(eng.config.tokenMode).toBe('mean');
      const errs: number[] = [];
      const out = await eng.run(lr, 2, {
        cfg: 2,
        topK: 1,
        colorFix: 'none',
        debug: true,
        onStep: async (si, tokens) => {
          const want = new Int32Array(golden.raw.get(`m.s${si}.idx`)!.buffer);
          expect(Array.from(tokens), `idx s${si}`).toEqual(Array.from(want));
          const ref = golden.t[`m.s${si}.f_hat`]!.data as Float32Array;
          const f = (await eng._session._debug('f_hat')).data;
          const scale = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
          errs.push(maxAbs(f, ref) / scale);
        },
      });
      console.log(`token mean: f_hat max rel ${Math.max(...errs).toExponential(2)}`);
      for (const e of errs) expect(e).toBeLessThan(5e-5);
      // the mode is in effect: the final f_hat is not the sampled tokens' one (golden case a)
      const sampled = (await readFixture(`${DIR}golden.safetensors`)).t['a.s9.f_hat']!.data as Float32Array;
      expect(maxAbs((await eng._session._debug('f_hat')).data, sampled)).toBeGreaterThan(1e-2);
      const ref = golden.raw.get('m.img_u8')!;
      let max = 0;
      let n = 0;
      for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(ref[i]! - out[i]!);
        if (d > 0) n++;
        max = Math.max(max, d);
      }
      expect(max).toBeLessThanOrEqual(1);
      expect(n / ref.length).toBeLessThan(1e-3);
    } finally {
      await eng.dispose();
    }
  });

  it('rejects an unknown token mode, naming the key', async () => {
    const path = join(dir, 'bad.safetensors');
    await writeSafetensors(path, model.t, { ...model.meta, token_mode: 'soft' });
    await expect(Engine.create(path, { backend: 'cpu' })).rejects.toThrow('metadata token_mode');
  });
});
