/**
 * End-to-end CUDA against CPU on real models (issue 15, device stage 3):
 *
 *   ALIGNVAR_ADDON=<build>/Release/alignvar.node node --import tsx bench/cuda-golden.ts [--json out.json]
 *
 * For each model, the same LR tiles run greedy (top_k 1) through an Engine on the CPU and one on
 * the target backend; the sampled tokens of every scale and the decoded images are compared.
 * - The embedded default model (trained), 8 synthetic tiles (test/helpers/synthetic.ts), f32
 *   and bf16 KV cache: the gate. Tokens must agree on >= 99.9% and the image must be >= 45 dB
 *   PSNR from the CPU's.
 * - The tiny golden model (random weights), the golden LR: reported only. Its logits are near
 *   flat, so the CUDA backend's bf16-staged GEMM activations flip tokens that a trained model's
 *   margins keep (see test/golden/kv-cache.test.ts for the same effect from a bf16 cache).
 * - VARSR's refiner: test/fixtures/pth/varsr-tiny.pth converted (random weights, a W 16 refiner),
 *   cfg 2 so the refiner's guidance runs, reported only, like the tiny model.
 *
 * AV_BENCH_BACKEND=cpu dry-runs it without a GPU (CPU against CPU: identical by construction).
 * Exit status 1 when a gate fails, 0 otherwise (also when the backend is unavailable: it says so).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { convertCheckpoint } from '../src/convert/index.js';
import { Engine } from '../src/engine.js';
import { DEFAULT_MODEL_PATH } from '../src/upscaler.js';
import { SafetensorsFile } from '../src/weights/safetensors.js';
import { addon } from '../test/helpers/index.js';
import { psnrU8, syntheticTiles } from '../test/helpers/synthetic.js';

const BACKEND = (process.env.AV_BENCH_BACKEND ?? 'cuda') as 'cuda' | 'cpu';
const args = process.argv.slice(2);
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
const TINY = fileURLToPath(new URL('../test/fixtures/golden/tiny-model.safetensors', import.meta.url));
const GOLDEN = fileURLToPath(new URL('../test/fixtures/golden/golden.safetensors', import.meta.url));
const VARSR = fileURLToPath(new URL('../test/fixtures/pth/varsr-tiny.pth', import.meta.url));
const MIN_AGREE = 0.999;
const MIN_PSNR = 45;

interface Row {
  model: string;
  kvCache: 'f32' | 'bf16';
  tiles: number;
  agreement: number;
  psnrDb: number;
  gate: boolean;
  pass: boolean;
}

async function compare(
  model: string,
  label: string,
  tiles: Uint8Array,
  n: number,
  kvCache: 'f32' | 'bf16',
  gate: boolean,
  cfg = 0,
): Promise<Row> {
  const run = async (backend: 'cpu' | 'cuda'): Promise<{ img: Uint8Array; idx: number[] }> => {
    const e = await Engine.create(model, { backend, kvCache });
    try {
      const idx: number[] = [];
      const img = await e.run(tiles, n, { cfg, topK: 1, onStep: (_, t) => void idx.push(...t) });
      return { img, idx };
    } finally {
      await e.dispose();
    }
  };
  const a = await run('cpu');
  const b = await run(BACKEND);
  let agree = 0;
  for (let i = 0; i < a.idx.length; i++) agree += a.idx[i] === b.idx[i] ? 1 : 0;
  const agreement = a.idx.length === b.idx.length ? agree / a.idx.length : 0;
  const psnrDb = psnrU8(a.img, b.img);
  const pass = !gate || (agreement >= MIN_AGREE && psnrDb >= MIN_PSNR);
  return { model: label, kvCache, tiles: n, agreement, psnrDb, gate, pass };
}

async function main(): Promise<number> {
  const info = addon.backendInfo().find((b) => b.name === BACKEND);
  if (!info?.available) {
    console.log(`cuda-golden: backend ${BACKEND} unavailable (${info?.reason ?? 'not compiled'}); nothing to compare`);
    return 0;
  }
  const f = await SafetensorsFile.open(GOLDEN);
  const lr = new Uint8Array(await f.read('input.lr_u8'));
  await f.close();
  const probe = await Engine.create(DEFAULT_MODEL_PATH, { backend: 'cpu' });
  const s = probe.lrSize;
  await probe.dispose();
  const tiles = syntheticTiles(8, s);
  const rows: Row[] = [];
  for (const kv of ['f32', 'bf16'] as const)
    rows.push(await compare(DEFAULT_MODEL_PATH, 'default', tiles, 8, kv, true));
  rows.push(await compare(TINY, 'tiny (random weights)', lr, 2, 'f32', false));
  const tmp = mkdtempSync(join(tmpdir(), 'av-cuda-golden-'));
  try {
    const varsr = join(tmp, 'varsr-tiny.safetensors');
    await convertCheckpoint({ var: VARSR, out: varsr });
    const e = await Engine.create(varsr, { backend: 'cpu' });
    const side = e.lrSize;
    await e.dispose();
    rows.push(await compare(varsr, 'varsr-tiny + refiner', syntheticTiles(2, side), 2, 'f32', false, 2));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`cuda-golden: ${BACKEND} against cpu, greedy; gate: agreement >= ${MIN_AGREE}, PSNR >= ${MIN_PSNR} dB`);
  for (const r of rows)
    console.log(
      `${r.model.padEnd(22)} kv ${r.kvCache.padEnd(4)} tiles ${r.tiles}  agreement ${r.agreement.toFixed(5)}  ` +
        `PSNR ${Number.isFinite(r.psnrDb) ? r.psnrDb.toFixed(2) : 'inf'} dB  ${r.gate ? (r.pass ? 'PASS' : 'FAIL') : 'info'}`,
    );
  if (jsonOut)
    writeFileSync(
      jsonOut,
      JSON.stringify(
        { backend: BACKEND, rows: rows.map((r) => ({ ...r, psnrDb: Number.isFinite(r.psnrDb) ? r.psnrDb : null })) },
        null,
        1,
      ),
    );
  return rows.every((r) => r.pass) ? 0 : 1;
}

main().then(
  (rc) => process.exit(rc),
  (err: unknown) => {
    console.error('cuda-golden failed:', err);
    process.exit(1);
  },
);
