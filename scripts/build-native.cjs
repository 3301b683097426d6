#!/usr/bin/env node
// Builds the addon from source with cmake-js (Node-API mode, nothing downloaded): the install
// step runs it when no prebuild matches, and scripts/prebuild.cjs runs it for release builds.
//
//   node scripts/build-native.cjs [--release] [--out <dir>] [--keep-intermediates]
//
// - A dev build (a repo checkout: test/ exists, or ALIGNVAR_DEV_BUILD=1) compiles the test-only
//   exports and keeps build/ for incremental rebuilds.
// - A user's build (the installed package) and --release leave the test exports out; a user's
//   build then deletes its intermediates, keeping only build/Release/*.node and *.so.
// - CUDA: AV_CUDA=ON builds the CUDA library (libav_cuda.so, minutes per architecture),
//   AV_CUDA=OFF never; unset (AUTO) builds it only when nvcc and an NVIDIA driver are both
//   found, never because of nvcc alone. AV_CUDA_ARCHS overrides the architectures.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const outIdx = argv.indexOf('--out');
const out = outIdx >= 0 ? path.resolve(argv[outIdx + 1]) : path.join(root, 'build');
const devEnv = process.env.ALIGNVAR_DEV_BUILD;
const dev = !flag('--release') && (devEnv !== undefined ? devEnv === '1' : fs.existsSync(path.join(root, 'test')));
const clean = !dev && !flag('--keep-intermediates') && outIdx < 0;
const cuda = process.env.AV_CUDA || 'AUTO';

const log = (msg) => console.error(`alignvar: ${msg}`);
const started = Date.now();
log(
  `building the native addon from source (${dev ? 'dev build with test exports' : 'release build'}, ` +
    `CUDA ${cuda === 'AUTO' ? 'only if an NVIDIA driver is found' : cuda}) into ${path.relative(root, out) || '.'}; ` +
    'the CPU addon takes 1-2 minutes on 2 cores',
);

let cmakeJs;
try {
  cmakeJs = require.resolve('cmake-js/bin/cmake-js');
} catch {
  log('building from source needs the cmake-js package: npm install cmake-js node-addon-api');
  process.exit(1);
}
const args = [cmakeJs, flag('--release') || outIdx >= 0 ? 'build' : 'rebuild', '--out', out];
args.push('--CDCMAKE_BUILD_TYPE=Release', `--CDAV_CUDA=${cuda}`, `--CDAV_TEST_BINDINGS=${dev ? 'ON' : 'OFF'}`);
if (process.env.AV_CUDA_ARCHS) args.push(`--CDAV_CUDA_ARCHS=${process.env.AV_CUDA_ARCHS}`);
// cmake-js prints cmake's and the compiler's output, including [n/N] per compiled file.
const r = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
if (r.status !== 0) {
  log('building the native addon failed. It needs cmake (>= 3.18) and a C++17 compiler');
  log('  (on Debian/Ubuntu: apt-get install cmake g++); the CUDA library also needs nvcc (CUDA 12+).');
  process.exit(r.status ?? 1);
}

if (clean) {
  // Keep only what node-gyp-build and the CUDA loader need: build/Release/*.node and *.so.
  const release = path.join(out, 'Release');
  const keep = fs.readdirSync(release).filter((f) => f.endsWith('.node') || f.endsWith('.so'));
  const stash = fs.mkdtempSync(path.join(root, '.build-keep-'));
  for (const f of keep) fs.renameSync(path.join(release, f), path.join(stash, f));
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(release, { recursive: true });
  for (const f of keep) fs.renameSync(path.join(stash, f), path.join(release, f));
  fs.rmSync(stash, { recursive: true, force: true });
  log(`removed the build intermediates; kept build/Release/{${keep.join(',')}}`);
}
log(`native build done in ${Math.round((Date.now() - started) / 1000)} s`);
