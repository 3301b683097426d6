/**
 * Converting a d24-shaped VARSR checkpoint (random weights, about 4.9 GB at f32) with its peak
 * memory measured. Skipped unless AV_CONVERT_D24=1: it needs /usr/bin/python3 with torch to
 * write the .pth (training/avtrain/pth_fixtures.py --d24), about 10 GB of free disk in the temp
 * folder and minutes. The converter runs in a child process (bench/convert-rss.ts) so that its
 * peak RSS is its own; the test asserts it stays below a quarter of the input size and that the
 * output has the d24 configuration.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

import { SafetensorsFile } from '../../src/weights/safetensors.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ENABLED = process.env.AV_CONVERT_D24 === '1';
if (!ENABLED)
  console.log(
    'convert-d24: skipped: set AV_CONVERT_D24=1 to write and convert a ~4.9 GB d24 .pth (needs torch and ~10 GB disk)',
  );
const run = promisify(execFile);

describe.skipIf(!ENABLED)('convert a d24-shaped VARSR .pth', () => {
  it('converts with peak RSS far below the checkpoint size', { timeout: 3_600_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'av-d24-'));
    try {
      const pth = join(dir, 'd24.pth');
      const out = join(dir, 'd24.safetensors');
      await run('/usr/bin/python3', ['-m', 'avtrain.pth_fixtures', '--d24', pth, '--dtype', 'f32'], {
        cwd: join(ROOT, 'training'),
        maxBuffer: 1 << 20,
      });
      const { stdout } = await run(
        process.execPath,
        ['--import', 'tsx', join(ROOT, 'bench', 'convert-rss.ts'), pth, out, 'bf16'],
        {
          cwd: ROOT,
          maxBuffer: 1 << 20,
        },
      );
      const r = JSON.parse(stdout.trim().split('\n').pop()!) as {
        inputBytes: number;
        peakRssBytes: number;
        outputBytes: number;
      };
      console.log(
        `d24 convert: input ${r.inputBytes} bytes, output ${r.outputBytes} bytes, peak RSS ${r.peakRssBytes} bytes`,
      );
      expect(r.peakRssBytes).toBeLessThan(r.inputBytes / 4);
      const f = await SafetensorsFile.open(out);
      try {
        expect(f.metadata).toMatchObject({ depth: '24', width: '1536', heads: '24', refiner: '1', dtype: 'bf16' });
        expect(f.tensors.get('blocks.23.ffn.fc1.weight')).toMatchObject({ dtype: 'BF16', shape: [6144, 1536] });
        expect(f.tensors.get('diffloss.net.res_blocks.5.adaLN_modulation.1.weight')).toMatchObject({
          shape: [3072, 1024],
        });
      } finally {
        await f.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
