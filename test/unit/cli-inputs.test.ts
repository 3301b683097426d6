/**
 * The file side of `alignvar upscale` without the addon: format sniffing, folder expansion
 * (content, hidden files, recursion, the output folder), output names and stale temp files.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { checkNameTemplate, expandInputs, outputName, removeStaleTemps } from '../../src/cli/inputs.js';
import { TEMP_SUFFIX, writeAtomic } from '../../src/cli/shared.js';
import { sniffFormat } from '../../src/image/sniff.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'alignvar-inputs-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const img = () => sharp({ create: { width: 4, height: 4, channels: 3, background: '#808080' } });

describe('sniffFormat', () => {
  it('recognises each raster format from its first bytes, and nothing else', async () => {
    expect(sniffFormat(await img().png().toBuffer())).toBe('png');
    expect(sniffFormat(await img().jpeg().toBuffer())).toBe('jpeg');
    expect(sniffFormat(await img().webp().toBuffer())).toBe('webp');
    expect(sniffFormat(await img().gif().toBuffer())).toBe('gif');
    expect(sniffFormat(await img().tiff().toBuffer())).toBe('tiff');
    expect(sniffFormat(await img().avif({ effort: 0 }).toBuffer())).toBe('heif');
    expect(sniffFormat(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'))).toBeUndefined();
    expect(sniffFormat(Buffer.from('hello'))).toBeUndefined();
    expect(sniffFormat(Buffer.alloc(0))).toBeUndefined();
    expect(sniffFormat(Buffer.from([0x89, 0x50, 0x4e]))).toBeUndefined();
    // An MP4 is ISO-BMFF too, but not HEIF.
    expect(sniffFormat(Buffer.from('\0\0\0\x18ftypmp42\0\0\0\0isommp42', 'latin1'))).toBeUndefined();
  });
});

describe('expandInputs', () => {
  it('picks images by content, skips hidden files, the output folder and (without -r) subfolders', async () => {
    const root = join(dir, 'tree');
    await mkdir(join(root, 'sub', 'deeper'), { recursive: true });
    await mkdir(join(root, '.hidden'), { recursive: true });
    await mkdir(join(root, 'out'), { recursive: true });
    await writeFile(join(root, 'a.png'), await img().png().toBuffer());
    await writeFile(join(root, 'no-extension'), await img().jpeg().toBuffer());
    await writeFile(join(root, 'notes.txt'), 'not an image');
    await writeFile(join(root, 'fake.png'), 'text with an image name');
    await writeFile(join(root, '.dot.png'), await img().png().toBuffer());
    await writeFile(join(root, '.hidden', 'h.png'), await img().png().toBuffer());
    await writeFile(join(root, 'sub', 'b.webp'), await img().webp().toBuffer());
    await writeFile(join(root, 'sub', 'deeper', 'c.gif'), await img().gif().toBuffer());
    await writeFile(join(root, 'out', 'old.png'), await img().png().toBuffer());
    await writeFile(join(root, `.a.png.123.abcd${TEMP_SUFFIX}`), 'partial');
    await symlink(join(root, 'sub'), join(root, 'link-to-sub'));

    const flat = await expandInputs([root], { recursive: false, exclude: join(root, 'out') });
    expect(flat.files.map((f) => f.path)).toEqual([
      join(root, 'a.png'),
      join(root, 'fake.png'),
      join(root, 'no-extension'),
    ]);
    expect(flat.ignored).toEqual([join(root, 'notes.txt')]);

    const deep = await expandInputs([root], { recursive: true, exclude: join(root, 'out') });
    expect(deep.files.map((f) => [f.path, f.subdir])).toEqual([
      [join(root, 'a.png'), ''],
      [join(root, 'fake.png'), ''],
      [join(root, 'no-extension'), ''],
      [join(root, 'sub', 'b.webp'), 'sub'],
      [join(root, 'sub', 'deeper', 'c.gif'), join('sub', 'deeper')],
    ]);
    // Without the exclusion, the output folder is an ordinary subfolder.
    const all = await expandInputs([root], { recursive: true });
    expect(all.files.map((f) => f.path)).toContain(join(root, 'out', 'old.png'));
  });

  it('keeps file arguments as they are (missing or not an image: the upscale reports it)', async () => {
    const r = await expandInputs([join(dir, 'missing.png'), join(dir, 'tree', 'notes.txt')], { recursive: false });
    expect(r.files).toEqual([
      { path: join(dir, 'missing.png'), subdir: '' },
      { path: join(dir, 'tree', 'notes.txt'), subdir: '' },
    ]);
  });
});

describe('output names', () => {
  it('keeps the input name when its extension fits the format, else swaps it', () => {
    expect(outputName('/x/photo.JPEG', 'jpeg')).toBe('photo.JPEG');
    expect(outputName('/x/photo.jpg', 'png')).toBe('photo.png');
    expect(outputName('/x/noext', 'webp')).toBe('noext.webp');
  });

  it('fills --name templates', () => {
    expect(outputName('/x/photo.jpg', 'jpeg', '{name}-x4.{ext}')).toBe('photo-x4.jpg');
    expect(outputName('/x/a.b.png', 'tiff', '{name}.{format}.{ext}')).toBe('a.b.tiff.tif');
  });

  it('rejects bad templates', () => {
    expect(() => checkNameTemplate('{stem}.png')).toThrow('unknown placeholder {stem} in --name');
    expect(() => checkNameTemplate('out.{ext}')).toThrow('--name must contain {name}');
    expect(() => checkNameTemplate('../{name}.{ext}')).toThrow('--name must be a file name, without folders');
    expect(() => checkNameTemplate('{name}-x4.{ext}')).not.toThrow();
  });
});

describe('temporary files', () => {
  it('writeAtomic leaves only the final file', async () => {
    const d = join(dir, 'atomic');
    await mkdir(d);
    await writeAtomic(join(d, 'x.png'), Buffer.from('data'));
    expect(await readdir(d)).toEqual(['x.png']);
  });

  it('removeStaleTemps removes those of dead processes only', async () => {
    const d = join(dir, 'stale');
    await mkdir(d);
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    const deadTemp = `.a.png.${dead}.0badf00d${TEMP_SUFFIX}`;
    const liveTemp = `.b.png.${process.ppid}.0badf00d${TEMP_SUFFIX}`;
    const ownTemp = `.c.png.${process.pid}.0badf00d${TEMP_SUFFIX}`;
    for (const n of [deadTemp, liveTemp, ownTemp, 'keep.png', '.other']) await writeFile(join(d, n), 'x');
    expect(await removeStaleTemps(d)).toEqual([join(d, deadTemp)]);
    expect((await readdir(d)).sort()).toEqual([liveTemp, ownTemp, '.other', 'keep.png'].sort());
  });
});
