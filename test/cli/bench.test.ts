/**
 * `alignvar bench` end to end as a child process (`node --import tsx src/cli/main.ts bench`) on
 * the tiny model fixture: per-scale rows in the table, a parseable `--json` document whose
 * figures are consistent with the model, and usage errors (exit 2) for bad flags. A model with
 * VARSR's refiner (test/fixtures/pth/varsr-tiny.pth converted here: W 16, 2 blocks) gets the
 * refiner as its own row, which `--no-refiner` removes.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { refinerCost } from '../../src/bench/cost.js';
import type { EngineBenchResult } from '../../src/bench/engine-bench.js';
import { batchTable } from '../../src/cli/bench.js';
import { convertCheckpoint } from '../../src/convert/index.js';
import { ROOT, cli } from '../helpers/cli.js';

const MODEL = join(ROOT, 'test', 'fixtures', 'golden', 'tiny-model.safetensors');
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`cli/bench: skipped: fixture ${MODEL} does not exist`);

describe.skipIf(!HAVE_MODEL)('alignvar bench (tiny model)', () => {
  it('prints one row per scale for each tile batch, with prepare, decode, 512² and tiles/s', async () => {
    const r = await cli(
      'bench',
      '--model',
      MODEL,
      '--device',
      'cpu',
      '--tile-batch',
      '1,2',
      '--warmup',
      '0',
      '--runs',
      '1',
    );
    expect(r.stderr).toContain('tile batch 2: run 1');
    expect(r.code).toBe(0);
    for (const B of [1, 2]) {
      const section = r.stdout.split(`tile batch ${B}: step latency`)[1]!.split('tile batch')[0]!;
      // si 0..9 of the tiny model's 10 scales: "| si | pn | tokens |", tokens = pn^2 x B.
      const rows = section.split('\n').filter((l) => /^\| \d+ \|/.test(l));
      expect(rows).toHaveLength(10);
      expect(rows[9]).toMatch(new RegExp(`^\\| 9 \\| 16 \\| ${256 * B} \\| 256 \\| 936 \\| `));
      expect(section).toMatch(/prepare [\d.]+ \[[\d.]+-[\d.]+\] ms, steps .* decode [\d.]+/);
      expect(section).toMatch(/[\d.]+ tiles\/s/);
      expect(section).toMatch(/end to end per 512x512 output .*: \d+ \[\d+-\d+\] ms/);
    }
    expect(r.stdout).toContain('9 tiles per 512x512 output');
  });

  it('--json prints one document that parses, with medians within their ranges', async () => {
    const r = await cli(
      'bench',
      '--model',
      MODEL,
      '--device',
      'cpu',
      '--tile-batch',
      '2',
      '--warmup',
      '0',
      '--runs',
      '2',
      '--json',
    );
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const doc = JSON.parse(lines[0]!) as EngineBenchResult;
    expect(doc).toMatchObject({ device: 'cpu', tilesPer512: 9, settings: { runs: 2, warmup: 0, topK: 1 } });
    expect(doc.config).toMatchObject({ depth: 2, width: 64, lrSize: 64, hrSize: 256, scales: 10 });
    const b = doc.results[0]!;
    expect(b.tileBatch).toBe(2);
    expect(b.scales.map((s) => s.pn)).toEqual([1, 2, 3, 4, 5, 6, 8, 10, 13, 16]);
    for (const s of b.scales) {
      expect(s.ms.min).toBeLessThanOrEqual(s.ms.median);
      expect(s.ms.median).toBeLessThanOrEqual(s.ms.max);
      expect(s.gflops).toBeCloseTo(s.gflop / (s.ms.median / 1e3), 6);
    }
    // The parts add up to the batch: prepare + steps + decode = the whole run, per timed run.
    expect(b.prepareMs.median + b.stepsMs.median + b.decodeMs.median).toBeGreaterThan(0.5 * b.batchMs.median);
    expect(b.tilesPerSecond).toBeCloseTo(2 / (b.batchMs.median / 1e3), 6);
    // Spec 9.1 with CFG (cfg 6: R = 2): si 9 attention = 2 d 4 C Lq Lk per tile.
    const att = (2 * 2 * 4 * 64 * 256 * 936) / 1e9;
    expect(b.scales[9]!.gflop).toBeGreaterThan(2 * att);
  });

  it('rejects bad flags with a usage error naming the flag', async () => {
    const a = await cli('bench', '--tile-batch', '0,4');
    expect(a.code).toBe(2);
    expect(a.stderr).toContain('Expected integer between 1 and 64 for --tile-batch but received "0"');
    const b = await cli('bench', '--runs', 'x');
    expect(b.code).toBe(2);
    expect(b.stderr).toContain('Expected integer between 1 and 1000 for --runs but received "x"');
    const c = await cli('bench', '--device', 'gpu');
    expect(c.code).toBe(2);
    expect(c.stderr).toContain('for --device but received "gpu"');
  });
});

// LR 2x2 -> HR 8x8: a 512x512 output is 127^2 tiles, so these runs use batches of 64 (20-35 s each on
// 2 shared cores, nearly all of it the 512x512 tile loop).
describe('alignvar bench (a VARSR model with a refiner)', () => {
  let dir = '';
  let model = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'av-bench-varsr-'));
    model = join(dir, 'varsr-tiny.safetensors');
    await convertCheckpoint({ var: join(ROOT, 'test', 'fixtures', 'pth', 'varsr-tiny.pth'), out: model });
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const args = (): string[] => ['bench', '--model', model, '--device', 'cpu', '--tile-batch', '64', '--warmup', '0'];

  it('times the refiner as its own stage and row: ms per batch, GFLOP (cost model), GFLOP/s', async () => {
    const r = await cli(...args(), '--runs', '1', '--json');
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout.trim()) as EngineBenchResult;
    expect(doc.config).toMatchObject({ width: 32, lrSize: 2, hrSize: 8, scales: 4, refiner: { width: 16, blocks: 2 } });
    expect(doc.settings.cfg).toBe(6);
    const b = doc.results[0]!;
    const ref = b.refiner!;
    expect(ref).toMatchObject({ pn: 4, tokens: 16 * 64, steps: 10 });
    expect(ref.ms.min).toBeGreaterThan(0);
    expect(ref.ms.min).toBeLessThanOrEqual(ref.ms.median);
    expect(ref.ms.median).toBeLessThanOrEqual(ref.ms.max);
    const cost = refinerCost({ width: 32, cvae: 4, grid: 4 } as never, { width: 16, blocks: 2 }, true, 64);
    expect(ref.gflop).toBeCloseTo(cost.total, 9);
    expect(ref.gflops).toBeCloseTo(ref.gflop / (ref.ms.median / 1e3), 6);
    expect(b.gflop.refiner).toBe(ref.gflop);
    expect(b.gflop.total).toBeCloseTo(b.gflop.transformer + b.gflop.condNet + b.gflop.refiner + b.gflop.decoder, 9);
    // The stages add up to the batch: the refiner is not counted again in decode.
    expect(b.prepareMs.median + b.stepsMs.median + ref.ms.median + b.decodeMs.median).toBeLessThanOrEqual(
      1.05 * b.batchMs.max,
    );
    // The table `alignvar bench` prints for this result: the refiner row after si 3.
    const rows = batchTable(b)
      .split('\n')
      .filter((l) => /^\| (\d+|refiner) \|/.test(l));
    expect(rows.map((l) => l.split(' | ')[0])).toEqual(['| 0', '| 1', '| 2', '| 3', '| refiner']);
    expect(rows[4]).toMatch(/^\| refiner \| 4 \| 1024 \| - \| - \| [\d.]+ \[[\d.]+-[\d.]+\] \| [\d.]+ \| [\d.]+ \|$/);
    expect(rows[4]).toContain(`| ${ref.gflop.toFixed(3)} | ${ref.gflops.toFixed(1)} |`);
    expect(batchTable(b)).toMatch(/steps [\d.]+ \[[\d.]+-[\d.]+\] ms, refiner [\d.]+ \[[\d.]+-[\d.]+\] ms, decode/);
  });

  it('--no-refiner leaves the stage, its row and its GFLOP out', async () => {
    const r = await cli(...args(), '--runs', '1', '--no-refiner');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('tile batch 64: step latency per scale');
    expect(r.stdout).toMatch(/^\| 3 \| 4 \| 1024 \| 16 \| 46 \| /m);
    expect(r.stdout).not.toContain('refiner');
    expect(r.stdout).toMatch(/\(transformer [\d.]+, conditioning [\d.]+, decoder [\d.]+\)/);
  });
});
