/**
 * `alignvar upscale <folder>` on a folder of small images (issue 12 part 1): the pipelined mode
 * (`--jobs 4`: several files in flight, the next file decoded while this one computes, tiles of
 * concurrent files sharing engine batches through the Upscaler's batcher) against the same
 * command with `--jobs 1` (file by file), in the same process, rounds alternating. Its CPU
 * figures set the CLI's default `--jobs` on the CPU (1).
 *
 *   npx tsx bench/cli-folder.bench.ts [--model PATH|tiny|default] [--device cpu|cuda|auto]
 *     [--files 16] [--size 24x24] [--jobs 4] [--tile-batch N] [--rounds 3]
 *     [--out bench/results/cpu-cli-folder.json]
 *
 * Each run calls the command module's `run()` exactly as the bin does (`-q`, a fresh output
 * folder, so nothing is skipped); its wall time includes loading the model (the same in both
 * modes), listing and probing the folder, decoding, upscaling, encoding and the atomic writes.
 * The outputs of both modes are compared byte for byte. benchmark.js is not used: one run is
 * seconds long and is the thing measured.
 *
 * Writes bench/results/<device>-cli-folder.json (machine, load averages, every round).
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';

import { loadAddon } from '../src/binding/load.js';
import { run } from '../src/cli/upscale.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');
const args = process.argv.slice(2);
const argOf = (flag: string): string | undefined => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
};

const modelArg = argOf('--model') ?? 'tiny';
const model =
  modelArg === 'tiny'
    ? join(ROOT, 'test/fixtures/golden/tiny-model.safetensors')
    : modelArg === 'default'
      ? join(ROOT, 'models/alignvar-default.safetensors')
      : resolve(modelArg);
const device = argOf('--device') ?? 'cpu';
const files = Number(argOf('--files') ?? 16);
const [w, h] = (argOf('--size') ?? '24x24').split('x').map(Number) as [number, number];
const jobs = Number(argOf('--jobs') ?? 4);
const rounds = Number(argOf('--rounds') ?? 3);
/** `--tile-batch` of both modes; 1 keeps the pipelined mode's files out of shared batches (overlap only). */
const tileBatch = argOf('--tile-batch');
const out = argOf('--out') ?? join(ROOT, 'bench/results', `${device}-cli-folder.json`);

const work = mkdtempSync(join(tmpdir(), 'alignvar-cli-bench-'));
const src = join(work, 'in');
mkdirSync(src);
for (let k = 0; k < files; k++) {
  const raw = Buffer.alloc(w * h * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (Math.sin(i * 0.013 + k) * 90 + 128 + ((i * 7 + k * 13) % 17)) & 255;
  await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toFile(join(src, `img${String(k).padStart(3, '0')}.png`));
}

/** Wall and CPU seconds (user + system, all threads of this process) of one run. */
interface Timing {
  wallS: number;
  cpuS: number;
}

async function once(mode: 'pipelined' | 'serial', round: number): Promise<Timing> {
  const dst = join(work, `${mode}-${round}`);
  const argv = [
    src,
    '-o',
    dst,
    '--model',
    model,
    '--device',
    device,
    '-q',
    '--jobs',
    mode === 'serial' ? '1' : String(jobs),
  ];
  if (tileBatch !== undefined) argv.push('--tile-batch', tileBatch);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const code = await run(argv);
  const wallS = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  if (code !== 0) throw new Error(`run exited ${code}`);
  if (readdirSync(dst).length !== files) throw new Error(`${dst}: expected ${files} outputs`);
  return { wallS, cpuS: (c.user + c.system) / 1e6 };
}

const load0 = loadavg();
// Warm-up (model file in the page cache, sharp and the addon loaded).
await once('pipelined', -1);
const rows: Array<{ round: number; serial: Timing; pipelined: Timing }> = [];
for (let r = 0; r < rounds; r++) {
  // Alternate which mode goes first, so that drift in the machine's load hits both.
  const first = r % 2 === 0 ? 'serial' : 'pipelined';
  const a = await once(first, r);
  const b = await once(first === 'serial' ? 'pipelined' : 'serial', r);
  const serial = first === 'serial' ? a : b;
  const pipelined = first === 'serial' ? b : a;
  rows.push({ round: r, serial, pipelined });
  console.log(
    `round ${r}: file by file ${serial.wallS.toFixed(2)} s (cpu ${serial.cpuS.toFixed(2)} s), ` +
      `pipelined (--jobs ${jobs}) ${pipelined.wallS.toFixed(2)} s (cpu ${pipelined.cpuS.toFixed(2)} s), ` +
      `wall speed-up ${(serial.wallS / pipelined.wallS).toFixed(2)}x`,
  );
}
// Same bytes either way.
for (const f of readdirSync(join(work, 'serial-0'))) {
  if (!readFileSync(join(work, 'serial-0', f)).equals(readFileSync(join(work, 'pipelined-0', f)))) {
    throw new Error(`${f}: pipelined output differs from the file-by-file one`);
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const serial = median(rows.map((r) => r.serial.wallS));
const pipelined = median(rows.map((r) => r.pipelined.wallS));
const serialCpu = median(rows.map((r) => r.serial.cpuS));
const pipelinedCpu = median(rows.map((r) => r.pipelined.cpuS));
const backend = loadAddon()
  .backendInfo()
  .find((b) => b.name === (device === 'cuda' ? 'cuda' : 'cpu'));
const result = {
  bench: 'cli-folder',
  date: new Date().toISOString(),
  machine: { cpu: cpus()[0]?.model, cores: cpus().length, backend: backend?.detail ?? backend?.name },
  loadavg: { start: load0, end: loadavg() },
  model: modelArg,
  device,
  files,
  size: `${w}x${h}`,
  jobs,
  tileBatch: tileBatch === undefined ? 'default' : Number(tileBatch),
  rounds: rows,
  medianSerialS: serial,
  medianPipelinedS: pipelined,
  filesPerSecond: { serial: files / serial, pipelined: files / pipelined },
  medianSerialCpuS: serialCpu,
  medianPipelinedCpuS: pipelinedCpu,
  speedup: serial / pipelined,
  cpuRatio: serialCpu / pipelinedCpu,
  identicalOutputs: true,
};
console.log(
  `median: file by file ${serial.toFixed(2)} s (${(files / serial).toFixed(2)} files/s), pipelined ${pipelined.toFixed(2)} s ` +
    `(${(files / pipelined).toFixed(2)} files/s): ${(serial / pipelined).toFixed(2)}x wall, ` +
    `${(serialCpu / pipelinedCpu).toFixed(2)}x less CPU time (${serialCpu.toFixed(2)} s vs ${pipelinedCpu.toFixed(2)} s)`,
);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify(result, null, 1)}\n`);
rmSync(work, { recursive: true, force: true });
