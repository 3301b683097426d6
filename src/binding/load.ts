/**
 * Loads the native addon with node-gyp-build: a local build/Release (cmake-js) wins over
 * prebuilds/<platform>-<arch>/. Load failures are explained with causes and fixes.
 */
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { NativeAddon } from './types.js';

const require = createRequire(import.meta.url);

/** The package root (the folder holding package.json), from src/ or dist/. */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let cached: NativeAddon | undefined;

/** Returns the loaded addon, loading it on first use. */
export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
  try {
    // ALIGNVAR_ADDON names a specific .node file (developers' side-by-side builds).
    const explicit = process.env.ALIGNVAR_ADDON;
    cached = (explicit ? require(resolve(explicit)) : nodeGypBuild(packageRoot)) as NativeAddon;
  } catch (err) {
    const cause = err instanceof Error ? err.message : String(err);
    throw new Error(
      `alignvar: could not load the native addon (${cause}).\n` +
        '  Possible causes and fixes:\n' +
        `  - no prebuild for ${process.platform}-${process.arch} and no local build: run \`npm rebuild alignvar\`` +
        ' (needs cmake >= 3.18 and a C++17 compiler: apt-get install cmake g++)\n' +
        '  - the build was made for another Node.js major with a different ABI: rebuild it\n',
      { cause: err },
    );
  }
  return cached;
}
