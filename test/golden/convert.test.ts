/**
 * Round trip of the `.pth` converter: test/fixtures/pth/varsr-tiny.pth (VARSR's official
 * nesting, written by torch.save from training/avtrain/pth_fixtures.py) is converted in Node and
 * run by the engine (CPU, f32); the outputs match golden-pth.safetensors, which the reference
 * model computed on the same weights as torch.load reads them back. Tolerances are those of
 * test/golden/engine.test.ts, scaled to each tensor's magnitude so that they hold whichever SIMD
 * path PyTorch wrote the fixture with (issue 10): tokens identical, f_hat max abs error <= 1e-5 x
 * its largest magnitude, decoder output relative L2 error <= 1e-5, uint8 images within 1 LSB.
 * Regenerated at ATEN_CPU_CAPABILITY default, avx2 and avx512, the fixture's floats move by at
 * most 3.1e-6 x max|t| (ref.n9.eps; training/tests/test_pth_fixtures.py).
 *
 * With the refiner converted, the engine runs it (spec 6.2): z, the initial noise, every
 * sampler step's guided eps and x, the refined f_hat and the decoder output match the
 * reference's `ref.*` (guidance w = cfg 2) and, without guidance, `nocfg.*`. Converted with
 * --no-refiner (or created with `refiner: false`), the output is the refiner-free one.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { convertCheckpoint } from '../../src/convert/index.js';
import { Engine } from '../../src/engine.js';
import { createUpscaler, inspectModel } from '../../src/upscaler.js';
import { runScales } from '../../src/model/generate.js';
import { SafetensorsFile } from '../../src/weights/safetensors.js';
import { maxAbs, maxRel, relErr } from '../helpers/index.js';

const DIR = new URL('../fixtures/pth/', import.meta.url).pathname;

async function loadGolden(): Promise<{
  t: Map<string, Float32Array | Int32Array | Uint8Array>;
  meta: Record<string, string>;
}> {
  const f = await SafetensorsFile.open(`${DIR}golden-pth.safetensors`);
  const t = new Map<string, Float32Array | Int32Array | Uint8Array>();
  try {
    for (const [name, info] of f.tensors) {
      const b = await f.read(name);
      const ab = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
      t.set(
        name,
        info.dtype === 'F32' ? new Float32Array(ab) : info.dtype === 'I32' ? new Int32Array(ab) : new Uint8Array(ab),
      );
    }
    return { t, meta: { ...f.metadata } };
  } finally {
    await f.close();
  }
}

interface RunResult {
  idx: Int32Array[];
  fHat: Float32Array[];
  img: Uint8Array;
  dec: Float32Array;
  config: Engine['config'];
  refiner: boolean;
  /** After the refiner (when it ran): z, the initial noise, eps and x per step, f_hat. */
  ref?: { z: Float32Array; noise: Float32Array; eps: Float32Array; x: Float32Array; fHat: Float32Array };
}

async function run(
  model: string,
  lr: Uint8Array,
  meta: Record<string, string>,
  opts: { cfg?: number; refiner?: boolean } = {},
): Promise<RunResult> {
  const engine = await Engine.create(model, { backend: 'cpu', refiner: opts.refiner ?? true });
  try {
    const s = engine._session;
    await s.prepare({
      lr: { data: lr, shape: [2, engine.lrSize, engine.lrSize, 3], dtype: 'u8' },
      image_keys: Int32Array.from([0, 1]),
      seed: BigInt(meta.seed!),
      cfg: opts.cfg ?? Number(meta.cfg_scale),
      top_k: Number(meta.top_k),
      top_p: Number(meta.top_p),
      debug: true,
    });
    const idx: Int32Array[] = [];
    const fHat: Float32Array[] = [];
    await runScales(s, engine.schedule, {
      onStep: async (_si, tokens) => {
        idx.push(tokens);
        fHat.push((await s._debug('f_hat')).data);
      },
    });
    let ref: RunResult['ref'];
    if (engine.refiner) {
      await s.refine();
      const d = async (n: string) => (await s._debug(n)).data;
      ref = {
        z: await d('refiner_z'),
        noise: await d('refiner_noise'),
        eps: await d('refiner_eps'),
        x: await d('refiner_x'),
        fHat: await d('f_hat'),
      };
    }
    const img = await s.decode({ color_fix: 'none' });
    const dec = (await s._debug('decoded')).data;
    return { idx, fHat, img, dec, config: engine.config, refiner: engine.refiner !== undefined, ref };
  } finally {
    await engine.dispose();
  }
}

/** Rows [10, N, Cv] of the engine's per-step tensor for step n (stored n = 9 .. 0). */
function stepRows(all: Float32Array, n: number): Float32Array {
  const per = all.length / 10;
  const i = 9 - n;
  return all.subarray(i * per, (i + 1) * per);
}

describe('converted VARSR .pth matches the reference (tiny config, CPU, f32)', () => {
  let tmp: string;
  let golden: Map<string, Float32Array | Int32Array | Uint8Array>;
  let meta: Record<string, string>;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'av-convert-golden-'));
    ({ t: golden, meta } = await loadGolden());
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it.each([
    ['with --no-refiner', false],
    ['with the refiner keys, created with refiner: false', true],
  ])('%s: the refiner-free tokens, f_hat, decoder output and image', async (_label, keep) => {
    const out = join(tmp, `m-${keep}.safetensors`);
    const r = await convertCheckpoint({ var: `${DIR}varsr-tiny.pth`, out, refiner: keep });
    expect(r.refiner).toBe(keep);
    const res = await run(out, golden.get('input.lr_u8') as Uint8Array, meta, { refiner: false });
    expect(res.refiner).toBe(false);
    expect(res.config.patchNums.join(',')).toBe(meta.patch_nums);
    const K = res.idx.length;
    expect(K).toBe(4);
    for (let si = 0; si < K; si++) {
      expect(Array.from(res.idx[si]!), `idx s${si}`).toEqual(Array.from(golden.get(`s${si}.idx`)!));
      expect(maxRel(res.fHat[si]!, golden.get(`s${si}.f_hat`) as Float32Array), `f_hat s${si}`).toBeLessThan(1e-5);
    }
    const eDec = relErr(res.dec, golden.get('dec') as Float32Array);
    console.log(`no refiner: dec rel ${eDec.toExponential(2)}`);
    expect(eDec).toBeLessThan(1e-5);
    const ref = golden.get('img_u8') as Uint8Array;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ref[i]! - res.img[i]!));
    expect(worst).toBeLessThanOrEqual(1);
  });

  it('with the refiner: z, noise, every sampler step, f_hat and the decoder output (cfg 2)', async () => {
    const out = join(tmp, 'm-refiner.safetensors');
    await convertCheckpoint({ var: `${DIR}varsr-tiny.pth`, out });
    const res = await run(out, golden.get('input.lr_u8') as Uint8Array, meta);
    expect(res.refiner).toBe(true);
    const K = res.idx.length;
    for (let si = 0; si < K; si++)
      expect(Array.from(res.idx[si]!), `idx s${si}`).toEqual(Array.from(golden.get(`s${si}.idx`)!));
    const g = (n: string) => golden.get(n) as Float32Array;
    const r = res.ref!;
    expect(relErr(r.z, g('ref.z')), 'z').toBeLessThan(1e-5);
    // The draw is exact up to the float32 rounding: both sides compute Box-Muller in float64 from
    // the same Philox words.
    expect(maxRel(r.noise, g('ref.noise')), 'noise').toBeLessThan(1e-6);
    const errs: string[] = [];
    for (let n = 9; n >= 0; n--) {
      const eEps = relErr(stepRows(r.eps, n), g(`ref.n${n}.eps`));
      const eX = relErr(stepRows(r.x, n), g(`ref.n${n}.x`));
      errs.push(`n${n} eps ${eEps.toExponential(1)} x ${eX.toExponential(1)}`);
      // The suite's float tolerance (engine.test.ts); measured about 1e-6 on every step.
      expect(eEps, `eps n${n}`).toBeLessThan(1e-5);
      expect(eX, `x n${n}`).toBeLessThan(1e-5);
    }
    console.log(`refiner steps: ${errs.join(', ')}`);
    expect(maxRel(r.fHat, g('ref.f_hat')), 'refined f_hat').toBeLessThan(1e-5);
    const eDec = relErr(res.dec, g('ref.dec'));
    console.log(`refiner: dec rel ${eDec.toExponential(2)}`);
    expect(eDec).toBeLessThan(1e-5);
    // The stage changes the output: the refined f_hat is not the refiner-free one.
    expect(maxAbs(r.fHat, g(`s${K - 1}.f_hat`))).toBeGreaterThan(1e-3);
  });

  it('with the refiner and no guidance (cfg 0): the conditional half alone', async () => {
    const out = join(tmp, 'm-refiner0.safetensors');
    await convertCheckpoint({ var: `${DIR}varsr-tiny.pth`, out });
    const res = await run(out, golden.get('input.lr_u8') as Uint8Array, meta, { cfg: 0 });
    const K = res.idx.length;
    expect(Array.from(res.idx[K - 1]!)).toEqual(Array.from(golden.get('nocfg.idx')!));
    expect(maxRel(res.ref!.fHat, golden.get('nocfg.f_hat') as Float32Array)).toBeLessThan(1e-5);
    expect(relErr(res.dec, golden.get('nocfg.dec') as Float32Array)).toBeLessThan(1e-5);
  });

  it('inspectModel reports the refiner; the engine runs it unless refiner: false', async () => {
    const withRef = join(tmp, 'info-ref.safetensors');
    const noRef = join(tmp, 'info-noref.safetensors');
    await convertCheckpoint({ var: `${DIR}varsr-tiny.pth`, out: withRef });
    await convertCheckpoint({ var: `${DIR}varsr-tiny.pth`, out: noRef, refiner: false });
    expect((await inspectModel(withRef)).hasRefiner).toBe(true);
    expect((await inspectModel(noRef)).hasRefiner).toBe(false);
    const on = await Engine.create(withRef, { backend: 'cpu' });
    const off = await Engine.create(withRef, { backend: 'cpu', refiner: false });
    const none = await Engine.create(noRef, { backend: 'cpu' });
    try {
      expect(on.refiner).toEqual({ width: 16, blocks: 2 });
      expect(off.refiner).toBeUndefined();
      expect(none.refiner).toBeUndefined();
      // The refiner's weights are only uploaded when it runs.
      expect(on.memory().weights).toBeGreaterThan(off.memory().weights);
      expect(off.memory().weights).toBe(none.memory().weights);
    } finally {
      await Promise.all([on.dispose(), off.dispose(), none.dispose()]);
    }
  });

  it('the upscaler runs the refiner by default and skips it with refiner: false', async () => {
    const model = join(tmp, 'up-ref.safetensors');
    await convertCheckpoint({ var: `${DIR}varsr-tiny.pth`, out: model });
    const input = await sharp(Buffer.from(Uint8Array.from({ length: 5 * 3 * 3 }, (_, i) => (i * 37) % 251)), {
      raw: { width: 5, height: 3, channels: 3 },
    })
      .png()
      .toBuffer();
    const out = async (refiner: boolean | undefined) => {
      const up = await createUpscaler({ model, device: 'cpu', refiner, cfg: 2 });
      try {
        expect(up.options.refiner).toBe(refiner ?? true);
        return (await up.upscale(input, { raw: true })).data;
      } finally {
        await up.dispose();
      }
    };
    const on = await out(undefined);
    const again = await out(true);
    const off = await out(false);
    expect(on.length).toBe(20 * 12 * 3);
    expect(Buffer.compare(on, again)).toBe(0); // Philox noise: reproducible
    expect(Buffer.compare(on, off)).not.toBe(0);
  });
});
