#!/usr/bin/env node
// Builds the addon from source with cmake-js (Node-API mode, nothing downloaded). Used by the
// package's install step when no prebuild matches. AV_CUDA=ON|OFF|AUTO is passed through.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, 'rebuild', '--CDCMAKE_BUILD_TYPE=Release'];
if (process.env.AV_CUDA) args.push(`--CDAV_CUDA=${process.env.AV_CUDA}`);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('alignvar: building the native addon failed. It needs cmake (>= 3.18) and a C++17 compiler;');
  console.error('  on Debian/Ubuntu: apt-get install cmake g++');
  process.exit(r.status ?? 1);
}
