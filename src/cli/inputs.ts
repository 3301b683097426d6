/**
 * What `alignvar upscale` reads and writes: expanding folders to the images in them (chosen by
 * their content), output names (`--name` templates), and leftovers of killed runs.
 *
 * - A file in a folder is an image when its first bytes are those of a raster format the
 *   library reads (JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF), whatever its name. A file whose name
 *   says it is such an image but whose content is not is kept too, so that it is reported as
 *   failed instead of silently dropped. Anything else is ignored (and counted).
 * - Hidden files and folders (leading dot) are skipped, and so is the output folder when it lies
 *   inside an input folder. Symbolic links to files are followed; links to folders are not
 *   (no cycles).
 */
import { open, readdir, realpath, stat, unlink } from 'node:fs/promises';
import { basename, extname, join, relative, resolve, sep } from 'node:path';

import { SNIFF_BYTES, sniffFormat } from '../image/sniff.js';
import type { OutputFormat } from '../options.js';
import { TEMP_SUFFIX, UsageError } from './shared.js';

/** Extensions written for each format (the first is the canonical one). */
export const EXTENSIONS: Record<OutputFormat, string[]> = {
  png: ['.png'],
  jpeg: ['.jpg', '.jpeg', '.jpe'],
  webp: ['.webp'],
  tiff: ['.tif', '.tiff'],
  avif: ['.avif'],
  gif: ['.gif'],
};

/** Extensions of raster images the library reads (inputs: HEIF too). */
const IMAGE_EXTENSIONS = new Set([...Object.values(EXTENSIONS).flat(), '.heic', '.heif']);

/** The first {@link SNIFF_BYTES} bytes of a file (fewer when it is shorter). */
export async function readHead(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await fh.read(buf, 0, SNIFF_BYTES, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** One input file to upscale. */
export interface InputFile {
  /** The path as given (joined with the folder it came from). */
  path: string;
  /** Its folder relative to the input folder it was found in (`''` for top level or a file argument). */
  subdir: string;
}

/** The result of {@link expandInputs}. */
export interface ExpandedInputs {
  /** The files to upscale, in argument order, folder contents sorted by name. */
  files: InputFile[];
  /** Files in folders that are not images (not counting hidden ones). */
  ignored: string[];
}

function isHidden(name: string): boolean {
  return name.startsWith('.');
}

/**
 * Expands the positional arguments: files as they are (whatever their content: the library
 * reports what is wrong), folders to the images in them.
 *
 * @param args - Files and folders. A missing path is kept as a file (its error comes later).
 * @param options - `recursive`: descend into subfolders; `exclude`: a folder never entered
 *   (the output folder).
 */
export async function expandInputs(
  args: string[],
  options: { recursive: boolean; exclude?: string | undefined },
): Promise<ExpandedInputs> {
  const files: InputFile[] = [];
  const ignored: string[] = [];
  const exclude = options.exclude === undefined ? undefined : await realpath(options.exclude).catch(() => undefined);

  const walk = async (root: string, dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (isHidden(e.name)) continue;
      const path = join(dir, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        const st = await stat(path).catch(() => undefined);
        isFile = st?.isFile() ?? false;
        isDir = false; // links to folders are not followed
      }
      if (isDir) {
        if (!options.recursive) continue;
        if (exclude !== undefined && (await realpath(path).catch(() => path)) === exclude) continue;
        await walk(root, path);
      } else if (isFile) {
        const head = await readHead(path).catch(() => Buffer.alloc(0));
        if (sniffFormat(head) !== undefined || IMAGE_EXTENSIONS.has(extname(e.name).toLowerCase())) {
          files.push({ path, subdir: relative(root, dir) });
        } else {
          ignored.push(path);
        }
      }
    }
  };

  for (const arg of args) {
    const st = await stat(arg).catch(() => undefined);
    if (st?.isDirectory()) await walk(arg, arg);
    else files.push({ path: arg, subdir: '' });
  }
  return { files, ignored };
}

/** Placeholders of a `--name` template. */
const PLACEHOLDERS = new Set(['name', 'ext', 'format']);

/**
 * Checks a `--name` template: `{name}` (the input's name without extension), `{ext}` (the
 * output format's extension, without the dot) and `{format}` (`png`, `jpeg`, ...); no path
 * separators.
 *
 * @throws {UsageError} For an unknown placeholder, a missing `{name}` or a separator.
 */
export function checkNameTemplate(template: string): void {
  for (const m of template.matchAll(/\{([^}]*)\}/g)) {
    if (!PLACEHOLDERS.has(m[1]!)) {
      throw new UsageError(`unknown placeholder {${m[1]}} in --name (use {name}, {ext}, {format})`);
    }
  }
  if (!template.includes('{name}')) throw new UsageError('--name must contain {name}');
  if (template.includes('/') || template.includes(sep) || template.includes('\0')) {
    throw new UsageError('--name must be a file name, without folders');
  }
}

/**
 * The output file name of an input.
 *
 * @param input - The input path.
 * @param format - The output format.
 * @param template - A `--name` template, or undefined: the input's name, with an extension that
 *   fits `format` (kept when it already does).
 */
export function outputName(input: string, format: OutputFormat, template?: string): string {
  const ext = extname(input);
  const stem = basename(input, ext);
  if (template === undefined) {
    if (EXTENSIONS[format].includes(ext.toLowerCase())) return basename(input);
    return stem + EXTENSIONS[format][0]!;
  }
  return template.replace(/\{(name|ext|format)\}/g, (_, key: string) =>
    key === 'name' ? stem : key === 'format' ? format : EXTENSIONS[format][0]!.slice(1),
  );
}

/** The format an output path's extension names, if any. */
export function formatOfPath(path: string): OutputFormat | undefined {
  const ext = extname(path).toLowerCase();
  return (Object.keys(EXTENSIONS) as OutputFormat[]).find((f) => EXTENSIONS[f].includes(ext));
}

/**
 * Removes the temporary files that killed runs left in a folder: those of {@link writeAtomic}
 * (hidden, ending in its suffix) whose process no longer exists. Files of live processes (another
 * run writing to the same folder) are left alone.
 *
 * @param dir - An output folder (missing is fine).
 * @returns The removed files.
 */
export async function removeStaleTemps(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith('.') || !name.endsWith(TEMP_SUFFIX)) continue;
    // .<name>.<pid>.<random><suffix>
    const m = /\.(\d+)\.[0-9a-f]+$/.exec(name.slice(0, -TEMP_SUFFIX.length));
    const pid = m ? Number(m[1]) : NaN;
    if (Number.isInteger(pid) && pid !== process.pid && processExists(pid)) continue;
    if (pid === process.pid) continue;
    await unlink(join(dir, name)).then(
      () => removed.push(join(dir, name)),
      () => undefined,
    );
  }
  return removed;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether `child` is `parent` or lies inside it (both resolved). */
export function isInside(child: string, parent: string): boolean {
  const rel = relative(resolve(parent), resolve(child));
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith(sep) && rel !== '..');
}
