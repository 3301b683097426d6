/**
 * `alignvar convert` end to end as a child process on the tiny VARSR fixture: exit statuses
 * (0 written, 1 refused checkpoint, 2 usage), the summary line and the written model.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { SafetensorsFile } from '../../src/weights/safetensors.js';
import { ROOT, cli } from '../helpers/cli.js';

const PTH = join(ROOT, 'test', 'fixtures', 'pth');

describe('alignvar convert', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'av-cli-convert-'));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('writes the model with --dtype bf16 --no-refiner and prints a summary', async () => {
    const out = join(tmp, 'm.safetensors');
    const r = await cli(
      'convert',
      '--var',
      join(PTH, 'varsr-tiny.pth'),
      '--vae',
      join(PTH, 'vae-plain-tiny.pth'),
      '-o',
      out,
      '--dtype',
      'bf16',
      '--no-refiner',
    );
    expect(r.stderr).toMatch(
      /wrote .*m\.safetensors: \d+ tensors, .* scales 1,2,3,4, 2->8 px, dtype bf16, refiner left out/,
    );
    expect(r.code).toBe(0);
    const f = await SafetensorsFile.open(out);
    try {
      expect(f.metadata).toMatchObject({ dtype: 'bf16', refiner: '0', patch_nums: '1,2,3,4' });
      expect(f.tensors.get('blocks.0.ffn.fc1.weight')!.dtype).toBe('BF16');
    } finally {
      await f.close();
    }
  });

  it('--patch-nums overrides the checkpoint (and must fit the shapes)', async () => {
    const r = await cli(
      'convert',
      '--var',
      join(PTH, 'varsr-tiny.pth'),
      '-o',
      join(tmp, 'p.safetensors'),
      '--patch-nums',
      '1,2,3,4,5',
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /varsr-tiny\.pth: metadata patch_nums="1,2,3,4,5" contradicts the tensors: lvl_embed\.weight is \[4, 32\]/,
    );
  });

  it('exits 1 for a malicious checkpoint and runs nothing', async () => {
    const out = join(tmp, 'evil.safetensors');
    const r = await cli('convert', '--var', join(PTH, 'evil.pth'), '-o', out);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('refused global posix.system');
    expect(existsSync(out)).toBe(false);
    expect(existsSync('/tmp/alignvar-pth-fixture-pwned')).toBe(false);
  });

  it.each([
    [['--vae', 'x.pth', '-o', 'o.safetensors'], '--var <checkpoint> is required'],
    [['--var', 'x.pth'], '-o/--out <model.safetensors> is required'],
    [['--var', 'x.pth', '-o', 'o', '--dtype', 'fp8'], '--dtype must be one of f32, f16, bf16, got "fp8"'],
    [['--var', 'x.pth', '-o', 'o', '--patch-nums', '1,a'], '--patch-nums must be a comma-separated integer list'],
  ])('usage error %j exits 2', async (args, message) => {
    const r = await cli('convert', ...args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });
});
