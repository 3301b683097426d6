/**
 * Loads the native addon with node-gyp-build: a local build/Release (cmake-js) wins over
 * prebuilds/<platform>-<arch>/. The addon holds the CPU backend; the CUDA backend is a side
 * library (libav_cuda.so) that the addon loads on first use: from $ALIGNVAR_CUDA_LIBRARY, the
 * optional package @alignvar/<platform>-<arch>-cuda, or next to the addon (a source build with
 * AV_CUDA=ON). Load failures are explained with causes and fixes.
 */
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { NativeAddon } from './types.js';

const require = createRequire(import.meta.url);

/** The package root (the folder holding package.json), from src/ or dist/. */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The optional package that carries the CUDA backend library for this platform. */
export const cudaPackageName = `@alignvar/${process.platform}-${process.arch}-cuda`;

let cached: NativeAddon | undefined;

/** The CUDA library to try first: $ALIGNVAR_CUDA_LIBRARY, else the optional package's, else none. */
export function cudaLibraryCandidate(): string | undefined {
  const explicit = process.env.ALIGNVAR_CUDA_LIBRARY;
  if (explicit) return resolve(explicit);
  try {
    return join(dirname(require.resolve(`${cudaPackageName}/package.json`)), 'libav_cuda.so');
  } catch {
    return undefined; // not installed: CPU only, unless a libav_cuda.so sits next to the addon
  }
}

/** Returns the loaded addon, loading it on first use. */
export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
  let addon: NativeAddon;
  try {
    // ALIGNVAR_ADDON names a specific .node file (developers' side-by-side builds).
    const explicit = process.env.ALIGNVAR_ADDON;
    addon = (explicit ? require(resolve(explicit)) : nodeGypBuild(packageRoot)) as NativeAddon;
  } catch (err) {
    const cause = err instanceof Error ? err.message : String(err);
    throw new Error(
      `alignvar: could not load the native addon (${cause}).\n` +
        '  Possible causes and fixes:\n' +
        `  - alignvar ships a prebuilt addon for linux-x64 only; on ${process.platform}-${process.arch} it is built` +
        ' from source by the install step, which did not run (installed with --ignore-scripts?) or failed:' +
        ' run `npm rebuild alignvar --foreground-scripts` (needs cmake >= 3.18 and a C++17 compiler:' +
        ' apt-get install cmake g++)\n' +
        '  - the package files are incomplete (prebuilds/ missing): reinstall alignvar\n',
      { cause: err },
    );
  }
  const cuda = cudaLibraryCandidate();
  if (cuda !== undefined) addon.setCudaLibrary(cuda);
  cached = addon;
  return cached;
}
