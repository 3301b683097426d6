#!/usr/bin/env node
// prebuildify drives node-gyp; this stands in for node-gyp and runs cmake-js instead.
// prebuildify calls it as `<this> rebuild --target=... --devdir=...`; we ignore node-gyp's
// flags (Node-API builds are ABI-stable) and build into build/Release, which prebuildify
// then copies to prebuilds/<platform>-<arch>/.
'use strict';
require('./build-native.cjs');
