#!/usr/bin/env node
// The package's install step: use a prebuild (prebuilds/<platform>-<arch>/) or an existing
// local build when one loads here, and build from source with cmake-js only when none does.
// ALIGNVAR_BUILD_FROM_SOURCE=1 forces a source build.
'use strict';
const path = require('node:path');

const root = path.resolve(__dirname, '..');
if (!process.env.ALIGNVAR_BUILD_FROM_SOURCE) {
  try {
    const addon = require('node-gyp-build')(root);
    if (typeof addon.backendInfo === 'function') {
      const found = require('node-gyp-build').resolve(root);
      console.log(`alignvar: using ${path.relative(root, found)}`);
      process.exit(0);
    }
  } catch {
    // No prebuild or build matches this platform and ABI: build from source below.
  }
}
require('./build-native.cjs');
