#!/usr/bin/env node
// Sums test results from vitest's JSON report and pytest's JUnit XML in a folder and prints
// `N passed, N failed` as the last line, after a line `N skipped ...` when any. Exit 1 when
// any failed or a report that `npm test` must produce is missing.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const dir = process.argv[2] || 'test-results';
// Failures outside the runners (e.g. the typecheck), counted by the caller.
const outside = Number(process.argv[3] || 0);
let passed = 0;
let failed = outside;
let skipped = 0;
let ok = true;

const vitestFile = path.join(dir, 'vitest.json');
if (fs.existsSync(vitestFile)) {
  const r = JSON.parse(fs.readFileSync(vitestFile, 'utf8'));
  passed += r.numPassedTests || 0;
  failed += r.numFailedTests || 0;
  skipped += (r.numPendingTests || 0) + (r.numTodoTests || 0);
  // A suite that fails to load has no tests but must count as a failure.
  for (const s of r.testResults || []) {
    if (s.status === 'failed' && (!s.assertionResults || s.assertionResults.length === 0)) failed += 1;
  }
} else {
  console.error(`test-summary: ${vitestFile} is missing`);
  failed += 1;
  ok = false;
}

const pytestFile = path.join(dir, 'pytest.xml');
if (fs.existsSync(pytestFile)) {
  const xml = fs.readFileSync(pytestFile, 'utf8');
  for (const m of xml.matchAll(/<testsuite\b([^>]*)>/g)) {
    const attr = (name) => {
      const a = new RegExp(`\\b${name}="(\\d+)"`).exec(m[1]);
      return a ? Number(a[1]) : 0;
    };
    const tests = attr('tests');
    const fails = attr('failures') + attr('errors');
    const skips = attr('skipped');
    passed += tests - fails - skips;
    failed += fails;
    skipped += skips;
  }
} else {
  console.error(`test-summary: ${pytestFile} is missing`);
  failed += 1;
  ok = false;
}

if (skipped) process.stdout.write(`${skipped} skipped (not counted below)\n`);
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(ok && failed === 0 ? 0 : 1);
