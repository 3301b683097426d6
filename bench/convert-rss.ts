/**
 * Peak memory of `alignvar convert` on a large checkpoint (the d24 figure in
 * bench/results/convert-rss.json comes from here).
 *
 *   /usr/bin/python3 -m avtrain.pth_fixtures --d24 /tmp/d24.pth --dtype f32   # from training/
 *   node --import tsx bench/convert-rss.ts /tmp/d24.pth /tmp/d24.safetensors [bf16] [--json out.json]
 *
 * Converts in this process and prints one JSON object: input and output bytes, seconds, and the
 * process's peak resident set (process.resourceUsage().maxRSS) against the input size. Run it
 * in a fresh process: the peak covers everything this process did. Delete the temp files after.
 */
import { stat, writeFile } from 'node:fs/promises';

import { convertCheckpoint, type ConvertDType } from '../src/convert/index.js';

const [input, out, dtype = 'f32'] = process.argv
  .slice(2)
  .filter((a, i, all) => a !== '--json' && all[i - 1] !== '--json');
const jsonAt = process.argv.indexOf('--json');
if (input === undefined || out === undefined) {
  process.stderr.write(
    'usage: node --import tsx bench/convert-rss.ts <in.pth> <out.safetensors> [f32|bf16|f16] [--json file]\n',
  );
  process.exit(2);
}
const rssBefore = process.resourceUsage().maxRSS * 1024;
const t0 = performance.now();
const r = await convertCheckpoint({ var: input, out, dtype: dtype as ConvertDType });
const seconds = (performance.now() - t0) / 1000;
const inputBytes = (await stat(input)).size;
const peak = process.resourceUsage().maxRSS * 1024;
const result = {
  input,
  dtype,
  inputBytes,
  outputBytes: r.bytes,
  tensors: r.tensors,
  seconds: Number(seconds.toFixed(1)),
  peakRssBytes: peak,
  rssBeforeBytes: rssBefore,
  peakOverInput: Number((peak / inputBytes).toFixed(3)),
  node: process.version,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
if (jsonAt > 0 && process.argv[jsonAt + 1] !== undefined)
  await writeFile(process.argv[jsonAt + 1]!, `${JSON.stringify(result, null, 2)}\n`);
