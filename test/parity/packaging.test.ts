/**
 * Packaging: a prebuild in prebuilds/<platform>-<arch>/ is what node-gyp-build loads when
 * there is no local build, and the install step uses it instead of building from source.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { packageRoot } from '../../src/binding/load.js';

const require = createRequire(import.meta.url);
const nodeGypBuild = require('node-gyp-build') as ((dir: string) => unknown) & { resolve(dir: string): string };

describe('prebuilds', () => {
  const built = process.env.ALIGNVAR_ADDON
    ? resolve(process.env.ALIGNVAR_ADDON)
    : nodeGypBuild.resolve(packageRoot);
  const dir = mkdtempSync(join(tmpdir(), 'alignvar-pkg-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const platformDir = join(dir, 'prebuilds', `${process.platform}-${process.arch}`);
  mkdirSync(platformDir, { recursive: true });
  mkdirSync(join(dir, 'scripts'));
  copyFileSync(built, join(platformDir, 'alignvar.node'));
  copyFileSync(join(packageRoot, 'scripts', 'install.cjs'), join(dir, 'scripts', 'install.cjs'));
  // The build script must not run: make it fail loudly if it does.
  writeFileSync(join(dir, 'scripts', 'build-native.cjs'), "throw new Error('built from source');\n");
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'alignvar', version: '0.0.0' }));
  symlinkSync(join(packageRoot, 'node_modules'), join(dir, 'node_modules'));

  it('node-gyp-build loads the prebuild when there is no build/ folder', () => {
    expect(nodeGypBuild.resolve(dir)).toBe(join(platformDir, 'alignvar.node'));
    const addon = nodeGypBuild(dir) as { backendInfo(): { name: string }[] };
    expect(addon.backendInfo().map((b) => b.name)).toContain('cpu');
  });

  it('the install step uses the matching prebuild and builds nothing', () => {
    const r = spawnSync(process.execPath, [join(dir, 'scripts', 'install.cjs')], { encoding: 'utf8' });
    expect(r.stderr).not.toMatch(/built from source/);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`using ${join('prebuilds', `${process.platform}-${process.arch}`, 'alignvar.node')}`);
  });

  it('the install step builds from source when no prebuild matches', () => {
    rmSync(join(platformDir, 'alignvar.node'));
    const r = spawnSync(process.execPath, [join(dir, 'scripts', 'install.cjs')], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/built from source/);
  });
});
