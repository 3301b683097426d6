#!/usr/bin/env node
// Release build of the CPU addon for this platform, written where node-gyp-build looks for a
// prebuild (prebuildify's layout): prebuilds/<platform>-<arch>/alignvar.napi[.glibc].node.
// Runs at `npm pack`/`npm publish` (prepack), so the tarball always carries a binary built
// from the sources it ships, and nothing is committed. Builds incrementally in build-release/
// (the dev build/ is left alone), without the test exports and without CUDA (the CUDA library
// ships in its own package: scripts/release-cuda.sh). Stripped of symbols.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const out = path.join(root, 'build-release');
const env = { ...process.env, AV_CUDA: 'OFF' };
const r = spawnSync(process.execPath, [path.join(__dirname, 'build-native.cjs'), '--release', '--out', out], {
  cwd: root,
  env,
  stdio: 'inherit',
});
if (r.status !== 0) process.exit(r.status ?? 1);

// glibc or musl: a glibc build does not load on musl (Alpine), which then builds from source.
const libc =
  process.platform === 'linux' ? (process.report.getReport().header.glibcVersionRuntime ? '.glibc' : '.musl') : '';
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(dir, { recursive: true });
const dest = path.join(dir, `alignvar.napi${libc}.node`);
fs.copyFileSync(path.join(out, 'Release', 'alignvar.node'), dest);
const strip = spawnSync('strip', ['--strip-unneeded', dest], { stdio: 'inherit' });
if (strip.error) console.error(`alignvar: strip not found; ${path.relative(root, dest)} keeps its symbols`);
console.error(`alignvar: wrote ${path.relative(root, dest)} (${(fs.statSync(dest).size / 1024).toFixed(0)} KiB)`);
