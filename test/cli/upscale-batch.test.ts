/**
 * `alignvar upscale` on folders, run as a child process on the tiny model fixture: content-chosen
 * inputs, -r mirroring, resume and --overwrite, --name, --json, plain and TTY progress, and a
 * `kill -9` in the middle of a batch followed by the same command.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CLI, ROOT, cli } from '../helpers/cli.js';

const MODEL = join(ROOT, 'test', 'fixtures', 'golden', 'tiny-model.safetensors');
const HAVE_MODEL = existsSync(MODEL);
if (!HAVE_MODEL) console.log(`cli/upscale-batch: skipped: fixture ${MODEL} does not exist`);
const HAVE_SCRIPT = spawnSync('script', ['--version']).status === 0;
if (!HAVE_SCRIPT)
  console.log('cli/upscale-batch: TTY progress test skipped: no `script` command for a pseudo-terminal');

const COMMON = ['--model', MODEL, '--device', 'cpu'];

interface JsonLine {
  input: string;
  output: string | null;
  status: 'done' | 'skipped' | 'failed';
  reason?: string;
  ms: number;
  error: { code: string; message: string } | null;
}

const jsonLines = (stdout: string): JsonLine[] =>
  stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as JsonLine);

async function image(path: string, w: number, h: number, seed: number): Promise<void> {
  const raw = Buffer.alloc(w * h * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 37 + seed * 101) & 255;
  const s = sharp(raw, { raw: { width: w, height: h, channels: 3 } });
  await mkdir(join(path, '..'), { recursive: true });
  await (path.endsWith('.jpg') ? s.jpeg() : path.endsWith('.webp') ? s.webp() : s.png()).toFile(path);
}

/** Every file under `dir`, relative, sorted; hidden ones included. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else out.push(relative(dir, join(d, e.name)));
    }
  };
  await walk(dir);
  return out.sort();
}

const sha = async (p: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(p))
    .digest('hex');

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'alignvar-batch-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!HAVE_MODEL)('alignvar upscale <folder>', () => {
  it('-r mirrors the tree, picks images by content, skips hidden files and the output folder inside it', async () => {
    const src = join(dir, 'photos');
    await image(join(src, 'a.png'), 20, 12, 1);
    await image(join(src, 'no-extension'), 16, 16, 2); // a PNG without an extension
    await image(join(src, 'trip', 'b.jpg'), 24, 16, 3);
    await image(join(src, 'trip', 'day2', 'c.webp'), 12, 12, 4);
    await image(join(src, '.cache', 'thumb.png'), 8, 8, 5);
    await image(join(src, '.hidden.png'), 8, 8, 6);
    await writeFile(join(src, 'notes.txt'), 'a text file');
    const out = join(src, 'upscaled'); // inside the input folder
    const r = await cli('upscale', src, '-r', '-o', out, ...COMMON, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(await tree(out)).toEqual(['a.png', 'no-extension.png', 'trip/b.jpg', 'trip/day2/c.webp']);
    expect(await sharp(join(out, 'trip', 'b.jpg')).metadata()).toMatchObject({ format: 'jpeg', width: 96, height: 64 });
    const lines = jsonLines(r.stdout);
    expect(
      lines
        .filter((l) => l.status === 'done')
        .map((l) => relative(src, l.input))
        .sort(),
    ).toEqual(['a.png', 'no-extension', 'trip/b.jpg', 'trip/day2/c.webp']);
    expect(lines.find((l) => l.input.endsWith('notes.txt'))).toMatchObject({
      status: 'skipped',
      reason: 'not-an-image',
    });
    for (const l of lines.filter((x) => x.status === 'done')) expect(l.error).toBeNull();
    expect(r.stderr).toContain('4 done, 1 ignored (not images) of 4 inputs');

    // Again: the upscaled folder is not read as input; everything is skipped and the summary says so.
    const again = await cli('upscale', src, '-r', '-o', out, ...COMMON, '--json');
    expect(again.code, again.stderr).toBe(0);
    expect(jsonLines(again.stdout).filter((l) => l.status === 'skipped' && l.reason === 'exists')).toHaveLength(4);
    expect(again.stderr).toContain('0 done, 4 skipped (output exists; --overwrite redoes them)');
    expect(again.stderr).not.toContain('model'); // nothing to do: the model is not even loaded

    // --overwrite redoes them (same bytes: the sampler is seeded).
    const before = await sha(join(out, 'a.png'));
    const over = await cli('upscale', src, '-r', '-o', out, ...COMMON, '--overwrite', '-q');
    expect(over.code, over.stderr).toBe(0);
    expect(await sha(join(out, 'a.png'))).toBe(before);
    expect(await tree(out)).toHaveLength(4);

    // Without -r, only the top level.
    const flatOut = join(dir, 'flat');
    const flat = await cli('upscale', src, '-o', flatOut, ...COMMON, '-q');
    expect(flat.code, flat.stderr).toBe(0);
    expect(await tree(flatOut)).toEqual(['a.png', 'no-extension.png']);
  });

  it('--name and --format name the outputs; plain progress lines when stderr is not a terminal', async () => {
    const src = join(dir, 'named');
    await image(join(src, 'x.png'), 10, 10, 7);
    await image(join(src, 'y.jpg'), 10, 10, 8);
    const out = join(dir, 'named-out');
    const r = await cli('upscale', src, '-o', out, ...COMMON, '--name', '{name}-x4.{ext}', '--format', 'webp');
    expect(r.code, r.stderr).toBe(0);
    expect(await tree(out)).toEqual(['x-x4.webp', 'y-x4.webp']);
    expect(r.stderr).toMatch(/\[1\/2\] .*x\.png -> .*x-x4\.webp \(40x40, [\d.]+ s\)\n/);
    expect(r.stderr).not.toContain('\x1b[');
    const bad = await cli('upscale', src, '-o', out, ...COMMON, '--name', '{stem}.png');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown placeholder {stem} in --name');
    const self = await cli('upscale', src, '-o', src, ...COMMON);
    expect(self.code).toBe(2);
    expect(self.stderr).toContain('is an input folder');
  });

  it('files in flight share engine batches (--jobs), with the bytes of file by file', async () => {
    const src = join(dir, 'shared');
    const n = 6;
    for (let i = 0; i < n; i++) await image(join(src, `s${i}.png`), 20, 20, 60 + i); // one tile each
    const batchesOf = (stderr: string) => {
      const m = /\((\d+) tiles in (\d+) engine batch(?:es)?\)\n/.exec(stderr);
      expect(m, stderr).not.toBeNull();
      return { tiles: Number(m![1]), batches: Number(m![2]) };
    };
    const serialOut = join(dir, 'shared-serial');
    const serial = await cli('upscale', src, '-o', serialOut, ...COMMON, '--jobs', '1', '--tile-batch', '8');
    expect(serial.code, serial.stderr).toBe(0);
    // One file at a time: each file's tile is a batch of its own.
    expect(batchesOf(serial.stderr)).toEqual({ tiles: n, batches: n });
    const pipeOut = join(dir, 'shared-pipelined');
    const pipe = await cli('upscale', src, '-o', pipeOut, ...COMMON, '--jobs', String(n), '--tile-batch', '8');
    expect(pipe.code, pipe.stderr).toBe(0);
    // All files in flight: while one batch runs, the others' tiles queue and run together.
    const shared = batchesOf(pipe.stderr);
    expect(shared.tiles).toBe(n);
    expect(shared.batches).toBeLessThan(n);
    for (let i = 0; i < n; i++) {
      expect(await sha(join(pipeOut, `s${i}.png`)), `s${i}.png`).toBe(await sha(join(serialOut, `s${i}.png`)));
    }
  });

  it('two inputs that would write one output: the second fails, the first is done', async () => {
    const src = join(dir, 'clash');
    await image(join(src, 'p.png'), 8, 8, 9);
    await image(join(src, 'p.jpg'), 8, 8, 10);
    const out = join(dir, 'clash-out');
    const r = await cli('upscale', src, '-o', out, ...COMMON, '--format', 'png', '--json');
    expect(r.code).toBe(1);
    const lines = jsonLines(r.stdout).sort((a, b) => (a.input < b.input ? -1 : 1)); // in order of completion
    expect(lines.map((l) => [l.status, l.error?.code ?? null])).toEqual([
      ['done', null],
      ['failed', 'ERR_OUTPUT_CONFLICT'],
    ]);
    // p.jpg comes first (folders are read in name order) and takes p.png.
    expect(lines[0]!.input).toBe(join(src, 'p.jpg'));
    expect(lines[1]!.error!.message).toBe(
      `${join(src, 'p.png')}: ${join(out, 'p.png')} is also the output of ${join(src, 'p.jpg')}`,
    );
    expect(await tree(out)).toEqual(['p.png']);
  });

  it.skipIf(!HAVE_SCRIPT)('on a terminal: one progress bar for the batch (files, tiles, rate, ETA)', async () => {
    const src = join(dir, 'tty');
    for (let i = 0; i < 3; i++) await image(join(src, `t${i}.png`), 70, 70, 20 + i); // 4 tiles each
    const out = join(dir, 'tty-out');
    const cmd = [process.execPath, '--import', 'tsx', CLI, 'upscale', src, '-o', out, ...COMMON]
      .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
      .join(' ');
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/files \d+\/3 \| tiles \d+\/12 \| [\d.]+ tiles\/s \| ETA/);
    expect(r.stdout).toContain('files 3/3 | tiles 12/12');
    expect(r.stdout).toMatch(/3 done of 3 inputs/);
    expect(await tree(out)).toEqual(['t0.png', 't1.png', 't2.png']);
  });

  it('after kill -9 mid-run, the same command finishes the rest: no partial file, nothing done twice', async () => {
    const src = join(dir, 'killed');
    const n = 10;
    for (let i = 0; i < n; i++) await image(join(src, `k${String(i).padStart(2, '0')}.png`), 60, 60, 40 + i);
    const inputHashes = await Promise.all(
      Array.from({ length: n }, (_, i) => sha(join(src, `k${String(i).padStart(2, '0')}.png`))),
    );
    const out = join(dir, 'killed-out');
    await mkdir(out);
    // A temporary file left by a process that no longer exists: the next run removes it.
    const deadPid = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
    const stale = `.k00.png.${deadPid}.0badf00d.alignvar.tmp`;
    await writeFile(join(out, stale), 'partial');
    const args = ['--import', 'tsx', CLI, 'upscale', src, '-o', out, ...COMMON, '--jobs', '2', '-q'];

    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_code, signal) => res(signal)));
    // Kill it once a few outputs exist and others are still to do.
    for (;;) {
      const done = (await readdir(out)).filter((f) => !f.startsWith('.'));
      if (done.length >= 3) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');

    const survivors = (await readdir(out)).filter((f) => !f.startsWith('.')).sort();
    expect(survivors.length).toBeGreaterThanOrEqual(3);
    expect(survivors.length).toBeLessThan(n);
    const mtimes = new Map<string, number>();
    for (const f of survivors) {
      // Whole files only: each one decodes fully at 4x.
      const { info } = await sharp(join(out, f)).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height]).toEqual([240, 240]);
      mtimes.set(f, (await stat(join(out, f))).mtimeMs);
    }

    const r = await cli('upscale', src, '-o', out, ...COMMON, '--jobs', '2', '--json');
    expect(r.code, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout);
    const skipped = lines.filter((l) => l.status === 'skipped').map((l) => relative(out, l.output!));
    const done = lines.filter((l) => l.status === 'done').map((l) => relative(out, l.output!));
    expect(skipped.sort()).toEqual(survivors);
    expect(done.length + skipped.length).toBe(n);
    expect(done.filter((f) => survivors.includes(f))).toEqual([]);
    expect(r.stderr).toContain(`${n - survivors.length} done, ${survivors.length} skipped`);
    for (const f of survivors) expect((await stat(join(out, f))).mtimeMs).toBe(mtimes.get(f));
    // No temporary file is left, the dead run's included, and every output is whole.
    expect(await tree(out)).toEqual(Array.from({ length: n }, (_, i) => `k${String(i).padStart(2, '0')}.png`));
    for (const f of await readdir(out)) {
      expect((await sharp(join(out, f)).metadata()).width).toBe(240);
    }
    // The outputs equal those of one uninterrupted run.
    const ref = join(dir, 'killed-ref');
    expect((await cli('upscale', src, '-o', ref, ...COMMON, '-q')).code).toBe(0);
    for (const f of await readdir(ref)) expect(await sha(join(out, f)), f).toBe(await sha(join(ref, f)));
    for (let i = 0; i < n; i++) expect(await sha(join(src, `k${String(i).padStart(2, '0')}.png`))).toBe(inputHashes[i]);
  });

  it('Ctrl-C (SIGINT) stops the batch: exit 130, whole outputs only, the rest done by the next run', async () => {
    const src = join(dir, 'sigint');
    const n = 8;
    for (let i = 0; i < n; i++) await image(join(src, `s${i}.png`), 60, 60, 70 + i);
    const out = join(dir, 'sigint-out');
    const args = ['--import', 'tsx', CLI, 'upscale', src, '-o', out, ...COMMON, '--jobs', '2', '-q'];
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    for (;;) {
      if (existsSync(out) && (await readdir(out)).some((f) => !f.startsWith('.'))) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGINT');
    expect(await exited, stderr).toBe(130);
    expect(stderr).toContain('alignvar: interrupted');
    const kept = await tree(out);
    expect(kept.filter((f) => f.startsWith('.'))).toEqual([]); // temporary files removed
    expect(kept.length).toBeLessThan(n);
    for (const f of kept) expect((await sharp(join(out, f)).metadata()).width).toBe(240);
    const r = await cli('upscale', src, '-o', out, ...COMMON, '-q');
    expect(r.code, r.stderr).toBe(0);
    expect(await tree(out)).toHaveLength(n);
  });

  it('model text (the status metadata) is printed with its control characters escaped', async () => {
    const bytes = await readFile(MODEL);
    const len = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.toString('utf8', 8, 8 + len)) as Record<string, unknown>;
    header.__metadata__ = { ...(header.__metadata__ as object), status: 'evil\x1b[2J\nfake line\u202e' };
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    const evil = join(dir, 'evil-model.safetensors');
    await writeFile(evil, Buffer.concat([head, Buffer.from(json), bytes.subarray(8 + len)]));
    const info = await cli('info', '--model', evil);
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toContain('status: evil\\x1b[2J\\nfake line\\u202e');
    expect(info.stdout.includes('\u001b') || info.stdout.includes('\u202e')).toBe(false);
    const src = join(dir, 'evil-in.png');
    await image(src, 8, 8, 99);
    const up = await cli('upscale', src, '-o', join(dir, 'evil-out.png'), '--model', evil, '--device', 'cpu');
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toContain('note: model status: evil\\x1b[2J\\nfake line\\u202e');
    expect(up.stderr.includes('\u001b') || up.stderr.includes('\u202e')).toBe(false);
  });
});
