/**
 * `alignvar bench` end to end as a child process (`node --import tsx src/cli/main.ts bench`) on
 * the tiny model fixture: per-scale rows in the table, a parseable `--json` document whose
 * figures are consistent with the model, and usage errors (exit 2) for bad flags.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import type { EngineBenchResult } from '../../src/bench/engine-bench.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'src', 'cli', 'main.ts');
const MODEL = join(ROOT, 'test', 'fixtures', 'golden', 'tiny-model.safetensors');
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`cli/bench: skipped: fixture ${MODEL} does not exist`);

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', CLI, ...args],
      { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' }, timeout: 300_000 },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: number }).code ?? 1) : 0;
        done({ code: typeof code === 'number' ? code : 1, stdout, stderr });
      },
    );
  });
}

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
