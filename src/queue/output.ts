/**
 * The worker's side of "exactly once" on shared storage: the atomic output write, the removal of
 * temporary files a killed worker left, and the test of whether an output is already complete.
 *
 * An output is written only by renaming a fully written temporary file of the same folder onto
 * it (rename is atomic on one POSIX file system, NFS included), so a file at the output path is
 * never partial as far as this package is concerned. "Complete" is still checked rather than
 * assumed, because something else may have put a file there: see {@link isOutputComplete}.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';

import sharp from 'sharp';

import type { OutputFormat } from '../options.js';

/**
 * Suffix of the temporary files of {@link writeOutputAtomic}: `.<name>.<pid>.<random>` + this.
 * Hidden and with an extension no image has, so folder scans skip them.
 */
export const QUEUE_TEMP_SUFFIX = '.alignvar-tmp';

/** Extensions of each output format (the first is the one producers write). */
export const FORMAT_EXTENSIONS: Readonly<Record<OutputFormat, readonly string[]>> = Object.freeze({
  png: ['.png'],
  jpeg: ['.jpg', '.jpeg', '.jpe'],
  webp: ['.webp'],
  tiff: ['.tif', '.tiff'],
  avif: ['.avif'],
  gif: ['.gif'],
});

/** The output format an extension names, if any (`photo.JPG` gives `'jpeg'`). */
export function formatOfPath(path: string): OutputFormat | undefined {
  const ext = extname(path).toLowerCase();
  return (Object.keys(FORMAT_EXTENSIONS) as OutputFormat[]).find((f) => FORMAT_EXTENSIONS[f].includes(ext));
}

/** sharp's format name for what it reads back from each output format. */
const SHARP_FORMAT: Readonly<Record<OutputFormat, string>> = {
  png: 'png',
  jpeg: 'jpeg',
  webp: 'webp',
  tiff: 'tiff',
  avif: 'heif',
  gif: 'gif',
};

/** Whether `name` (a base name) is a temporary file of `output`'s atomic write. */
function isTempOf(name: string, output: string): boolean {
  return name.startsWith(`.${basename(output)}.`) && name.endsWith(QUEUE_TEMP_SUFFIX);
}

/**
 * Removes the temporary files that earlier attempts at `output` left (a worker killed with -9
 * between its write and its rename). Errors (a file already gone) are ignored.
 *
 * @returns How many were removed.
 */
export async function removeStaleTemps(output: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dirname(output));
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    if (!isTempOf(name, output)) continue;
    try {
      await unlink(join(dirname(output), name));
      removed++;
    } catch {
      // Another worker removed or renamed it.
    }
  }
  return removed;
}

/**
 * Writes `data` to `output` through a temporary file in the same folder and a rename, creating
 * the folder when missing. `output` either keeps its old state or holds all of `data`.
 */
export async function writeOutputAtomic(output: string, data: Buffer): Promise<void> {
  await mkdir(dirname(output), { recursive: true });
  const tmp = join(
    dirname(output),
    `.${basename(output)}.${process.pid}.${randomBytes(4).toString('hex')}${QUEUE_TEMP_SUFFIX}`,
  );
  try {
    await writeFile(tmp, data, { flag: 'wx' });
    await rename(tmp, output);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** What an existing output must be to count as complete. */
export interface ExpectedOutput {
  /** Output width (input display width x scale). */
  width: number;
  /** Output height. */
  height: number;
  /** The format it must be in, when known. */
  format: OutputFormat | undefined;
}

/**
 * The size an input's output will have: its display size (EXIF orientation applied, as the
 * upscaler decodes it) times `scale`.
 *
 * @throws sharp's error when the input cannot be read (the caller then runs the upscale, whose
 *   ImageError names the problem).
 */
export async function expectedOutput(
  input: string,
  scale: number,
  format: OutputFormat | undefined,
): Promise<ExpectedOutput> {
  const meta = await sharp(input).metadata();
  const swap = (meta.orientation ?? 1) >= 5;
  const w = meta.autoOrient?.width ?? (swap ? meta.height : meta.width);
  const h = meta.autoOrient?.height ?? (swap ? meta.width : meta.height);
  return { width: w * scale, height: h * scale, format };
}

/**
 * Whether `output` exists and is complete: it decodes in full without error or truncation
 * (every pixel read), has the expected size and, when `expected.format` is set, that format.
 * A file that fails any of these is not complete and is replaced by the job.
 *
 * @returns Its size when complete, else undefined.
 */
export async function isOutputComplete(
  output: string,
  expected: ExpectedOutput,
): Promise<{ width: number; height: number } | undefined> {
  try {
    if (!(await stat(output)).isFile()) return undefined;
    const img = sharp(output, { failOn: 'truncated', limitInputPixels: false });
    const meta = await img.metadata();
    if (meta.width !== expected.width || meta.height !== expected.height) return undefined;
    if (expected.format !== undefined && meta.format !== SHARP_FORMAT[expected.format]) return undefined;
    // Reads every pixel: a cut-off file fails here even when its header is intact.
    await img.stats();
    return { width: meta.width, height: meta.height };
  } catch {
    return undefined;
  }
}
