/**
 * The `alignvar` command end to end, run as a child process (`node --import tsx src/cli/main.ts`)
 * on the tiny model fixture. Skipped, with the reason printed, while the fixture does not exist.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ROOT, cli } from '../helpers/cli.js';

const MODEL = join(ROOT, 'test', 'fixtures', 'golden', 'tiny-model.safetensors');
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`golden/cli: skipped: fixture ${MODEL} does not exist yet`);

async function rgbaPng(w: number, h: number): Promise<Buffer> {
  const raw = Uint8Array.from({ length: w * h * 4 }, (_, k) => {
    const i = Math.floor(k / 4);
    const x = i % w;
    const y = Math.floor(i / w);
    return [(x * 255) / w, (y * 255) / h, 128, x < w / 2 ? 255 : 80][k % 4]!;
  });
  return sharp(raw, { raw: { width: w, height: h, channels: 4 } })
    .png()
    .toBuffer();
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'alignvar-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('alignvar (no model needed)', () => {
  it('prints help', async () => {
    const r = await cli('--help');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('alignvar upscale <input...> -o <output> [options]');
    expect(r.stdout).toContain('--no-color-fix');
    expect(r.stdout).toContain('--color-fix <m>    adain | wavelet | none');
  });

  it('exits 2 on usage errors', async () => {
    const unknown = await cli('upscale', 'a.png', '-o', 'b.png', '--tiles', '3');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("Unknown option '--tiles'");
    const noOut = await cli('upscale', 'a.png');
    expect(noOut.code).toBe(2);
    expect(noOut.stderr).toContain('missing -o <output>');
    expect((await cli('frobnicate')).code).toBe(2);
  });

  it('reports invalid option values with the API message and exits 1', async () => {
    const r = await cli('upscale', 'a.png', '-o', join(dir, 'x.png'), '--tile-batch', '0');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Expected integer between 1 and 64 for tileBatch but received 0');
    const s = await cli('upscale', 'a.png', '-o', join(dir, 'x.png'), '--top-p', 'high');
    expect(s.stderr).toContain('Expected number between 0 and 1 for topP but received "high"');
    const c = await cli('upscale', 'a.png', '-o', join(dir, 'x.png'), '--color-fix', 'lab');
    expect(c.code).toBe(1);
    expect(c.stderr).toContain('Expected one of "adain", "wavelet", "none" for colorFix but received "lab"');
    const k = await cli('upscale', 'a.png', '-o', join(dir, 'x.png'), '--kv-cache', 'f16');
    expect(k.code).toBe(1);
    expect(k.stderr).toContain('Expected one of "f32", "bf16" for kvCache but received "f16"');
  });

  it('info lists the backends', async () => {
    const r = await cli('info');
    expect(r.stdout).toMatch(/^Backends:\n {2}cpu: available/);
  });
});

describe.skipIf(!HAVE_MODEL)('alignvar (tiny model)', () => {
  const common = ['--model', MODEL, '--device', 'cpu', '--quiet'];

  it('upscale turns a 300x200 RGBA PNG into a 1200x800 RGBA PNG', async () => {
    const input = join(dir, 'in.png');
    const bytes = await rgbaPng(300, 200);
    await writeFile(input, bytes);
    const out = join(dir, 'out.png');
    const r = await cli('upscale', input, '-o', out, '--model', MODEL, '--device', 'cpu');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`${input} -> ${out} (1200x800`);
    expect(await sharp(out).metadata()).toMatchObject({ format: 'png', width: 1200, height: 800, channels: 4 });
    expect(Buffer.compare(await readFile(input), bytes)).toBe(0);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('--kv-cache bf16 runs with a bf16 KV cache', async () => {
    const input = join(dir, 'kv.png');
    await writeFile(input, await rgbaPng(20, 12));
    const out = join(dir, 'kv-x4.png');
    const r = await cli('upscale', input, '-o', out, ...common, '--kv-cache', 'bf16');
    expect(r.code, r.stderr).toBe(0);
    expect(await sharp(out).metadata()).toMatchObject({ format: 'png', width: 80, height: 48 });
  });

  it('writes the format the -o extension names', async () => {
    const input = join(dir, 'small.png');
    await writeFile(input, await rgbaPng(20, 12));
    const out = join(dir, 'small-x4.jpg');
    const r = await cli('upscale', input, '-o', out, ...common, '--quality', '90');
    expect(r.code, r.stderr).toBe(0);
    expect(await sharp(out).metadata()).toMatchObject({ format: 'jpeg', width: 80, height: 48 });
  });

  it('a corrupt file in a batch of 3 fails alone; no partial output; exit 1', async () => {
    const inDir = join(dir, 'batch-in');
    const outDir = join(dir, 'batch-out');
    await rm(inDir, { recursive: true, force: true });
    await mkdir(inDir);
    const good1 = join(inDir, 'a.png');
    const bad = join(inDir, 'b.png');
    const good2 = join(inDir, 'c.webp');
    await writeFile(good1, await rgbaPng(24, 16));
    const full = await rgbaPng(64, 64);
    const corrupt = full.subarray(0, Math.floor(full.length / 2));
    await writeFile(bad, corrupt);
    await writeFile(
      good2,
      await sharp(await rgbaPng(16, 16))
        .webp()
        .toBuffer(),
    );
    const r = await cli('upscale', good1, bad, good2, '-o', outDir, ...common);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`Cannot upscale ${bad}: corrupt or truncated PNG data\n`);
    expect(r.stderr).toContain('alignvar: 2 done, 1 failed of 3 inputs');
    expect((await readdir(outDir)).sort()).toEqual(['a.png', 'c.webp']);
    expect(await sharp(join(outDir, 'a.png')).metadata()).toMatchObject({ width: 96, height: 64 });
    expect(await sharp(join(outDir, 'c.webp')).metadata()).toMatchObject({ format: 'webp', width: 64, height: 64 });
    expect(Buffer.compare(await readFile(bad), corrupt)).toBe(0);
  });

  it('refuses to overwrite an input', async () => {
    const input = join(dir, 'self.png');
    const bytes = await rgbaPng(8, 8);
    await writeFile(input, bytes);
    const r = await cli('upscale', input, '-o', input, ...common);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('refusing to overwrite the input file');
    expect(Buffer.compare(await readFile(input), bytes)).toBe(0);
  });

  it('info describes a model', async () => {
    const r = await cli('info', '--model', MODEL);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Model: ${MODEL}`);
    expect(r.stdout).toContain('tile: 64x64 -> 256x256 (x4)');
    expect(r.stdout).toContain('default cfg 6, colour fix adain');
    expect(r.stdout).not.toContain('status:');
  });

  it('the embedded default model is used without --model, and its status is shown', async () => {
    const info = await cli('info');
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toMatch(/Model: .*models\/alignvar-default\.safetensors/);
    expect(info.stdout).toContain('tile: 32x32 -> 128x128 (x4)');
    expect(info.stdout).toContain('default cfg 0, colour fix none');
    expect(info.stdout).toMatch(/status: .*models\/MODEL_CARD\.md/);
    const input = join(dir, 'default-in.png');
    await writeFile(input, await rgbaPng(70, 50));
    const out = join(dir, 'default-out.png');
    const r = await cli('upscale', input, '-o', out);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/note: model status: .*MODEL_CARD/);
    const meta = await sharp(out).metadata();
    expect([meta.width, meta.height, meta.channels]).toEqual([280, 200, 4]);
  });
});
