/**
 * Dynamic batching benchmark (issue 12 part 2): N concurrent 128x128 -> 512x512 `upscale()` calls
 * on one Upscaler, whose tiles share engine batches, against the same N calls made one at a time
 * on the same Upscaler, in the same process.
 *
 *   npm run bench:batch -- [--device cpu|cuda|auto] [--model PATH] [--calls 64] [--batch 4,8]
 *     [--delay 2] [--rounds 1] [--out bench/results/cpu-batch.json]
 *
 * Both modes see the same workload: all N requests arrive at t0 (the serial mode is a server
 * that takes them one by one), so a call's latency is its finish time minus t0, queue wait
 * included; throughput is N / (last finish - t0). Inputs are N distinct deterministic PNGs, each
 * call with its own seed (the default model samples greedily, so seeds do not split batches).
 * The batched results are compared byte for byte with the serial ones. benchmark.js is not used
 * here: what is measured is one latency distribution over concurrent calls, not a repeated
 * function.
 *
 * Writes bench/results/<device>-batch.json (machine, load averages, every round's figures).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import sharp from 'sharp';

import { loadAddon } from '../src/binding/load.js';
import { type Upscaler, createUpscaler } from '../src/upscaler.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');

const args = process.argv.slice(2);
const argOf = (flag: string): string | undefined => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
};

const device = (argOf('--device') ?? 'cpu') as 'cpu' | 'cuda' | 'auto';
const model = argOf('--model') ?? join(ROOT, 'models/alignvar-default.safetensors');
const calls = Number(argOf('--calls') ?? 64);
const batches = (argOf('--batch') ?? '8').split(',').map(Number);
const delay = Number(argOf('--delay') ?? 2);
const rounds = Number(argOf('--rounds') ?? 1);
const SIDE = 128;

/** A deterministic 128x128 RGB PNG, different per k: colour fields, a disc, stripes, noise. */
async function makeInput(k: number): Promise<Buffer> {
  const n = SIDE;
  const px = Buffer.alloc(n * n * 3);
  let s = (0x9e3779b9 ^ (k * 7919)) >>> 0;
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
  for (let y = 0; y < n; y++)
    for (let x = 0; x < n; x++) {
      const r = Math.hypot(y - 0.45 * n, x - (0.3 + 0.01 * k) * n);
      let c = [
        120 + 70 * Math.sin((2 * Math.PI * x) / (0.6 * n) + k),
        110 + 60 * Math.cos((2 * Math.PI * y) / (0.8 * n)),
        90 + 50 * Math.sin((2 * Math.PI * (x + y)) / n),
      ];
      if (r < 0.22 * n) c = [235, 210, 40];
      else if (Math.floor((x + 2 * y) / 6) % 2 === 0 && y > 0.7 * n) c = [60, 200, 80];
      for (let ch = 0; ch < 3; ch++)
        px[(y * n + x) * 3 + ch] = Math.max(0, Math.min(255, Math.round(c[ch]! + 12 * rnd())));
    }
  return sharp(px, { raw: { width: n, height: n, channels: 3 } })
    .png()
    .toBuffer();
}

function quantile(sorted: number[], q: number): number {
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

interface ModeResult {
  mode: 'serial' | 'batched';
  wallS: number;
  callsPerS: number;
  tilesPerS: number;
  latencyMs: { p50: number; p99: number; mean: number; min: number; max: number };
  meanBatchSize: number;
  batches: number;
  cpuCores: number;
}

async function runMode(
  up: Upscaler,
  inputs: Buffer[],
  mode: 'serial' | 'batched',
): Promise<{ r: ModeResult; outs: Buffer[] }> {
  const before = up.stats();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const lat: number[] = new Array<number>(inputs.length);
  const outs: Buffer[] = new Array<Buffer>(inputs.length);
  const one = async (i: number) => {
    outs[i] = await up.upscale(inputs[i]!, { seed: i });
    lat[i] = performance.now() - t0;
  };
  if (mode === 'serial') for (let i = 0; i < inputs.length; i++) await one(i);
  else await Promise.all(inputs.map((_, i) => one(i)));
  const wall = (performance.now() - t0) / 1e3;
  const cpu = process.cpuUsage(cpu0);
  const after = up.stats();
  const tiles = after.tilesRun - before.tilesRun;
  const nb = after.batchesRun - before.batchesRun;
  const sorted = [...lat].sort((a, b) => a - b);
  const r2 = (v: number, d = 1) => Math.round(v * 10 ** d) / 10 ** d;
  return {
    outs,
    r: {
      mode,
      wallS: r2(wall, 2),
      callsPerS: r2(inputs.length / wall, 3),
      tilesPerS: r2(tiles / wall, 2),
      latencyMs: {
        p50: r2(quantile(sorted, 0.5), 0),
        p99: r2(quantile(sorted, 0.99), 0),
        mean: r2(sorted.reduce((a, b) => a + b, 0) / sorted.length, 0),
        min: r2(sorted[0]!, 0),
        max: r2(sorted[sorted.length - 1]!, 0),
      },
      meanBatchSize: r2(nb === 0 ? 0 : tiles / nb, 2),
      batches: nb,
      cpuCores: r2((cpu.user + cpu.system) / 1e6 / wall, 2),
    },
  };
}

function machineInfo(): Record<string, string | number> {
  let model = cpus()[0]?.model ?? 'unknown';
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    model = /^model name\s*:\s*(.*)$/m.exec(info)?.[1]?.trim() ?? model;
  } catch {
    // Not Linux: os.cpus() is all there is.
  }
  const backends = loadAddon().backendInfo();
  return {
    cpu: model,
    logicalCores: cpus().length,
    cpuBackend: backends.find((b) => b.name === 'cpu')?.detail ?? '',
    cudaBackend: JSON.stringify(backends.find((b) => b.name === 'cuda') ?? {}),
    node: process.version,
  };
}

const load = () => loadavg().map((v) => Math.round(v * 100) / 100);

async function main(): Promise<void> {
  const inputs = await Promise.all(Array.from({ length: calls }, (_, k) => makeInput(k)));
  const machine = machineInfo();
  const loadStart = load();
  console.log(`${machine.cpu}, ${machine.logicalCores} cores, node ${machine.node}, load ${loadStart.join(' ')}`);
  const results: Record<string, unknown>[] = [];
  for (const B of batches) {
    const up = await createUpscaler({ model, device, maxBatchTiles: B, maxBatchDelayMs: delay });
    try {
      console.log(`device ${up.device}${up.fallbackReason ? ` (${up.fallbackReason})` : ''}, maxBatchTiles ${B}`);
      // Warm-up: two calls, one at a time then together.
      await up.upscale(inputs[0]!);
      await Promise.all([up.upscale(inputs[0]!), up.upscale(inputs[1 % calls]!)]);
      for (let round = 0; round < rounds; round++) {
        // Alternate the order between rounds so that drift in the machine's load hits both modes.
        const order: ('serial' | 'batched')[] = round % 2 === 0 ? ['serial', 'batched'] : ['batched', 'serial'];
        const got: Partial<Record<'serial' | 'batched', { r: ModeResult; outs: Buffer[] }>> = {};
        for (const mode of order) {
          const l0 = load();
          got[mode] = await runMode(up, inputs, mode);
          const r = got[mode].r;
          console.log(
            `  B${B} round ${round} ${mode.padEnd(7)}: ${r.wallS} s, ${r.callsPerS} calls/s, ${r.tilesPerS} tiles/s, ` +
              `p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, mean batch ${r.meanBatchSize}, CPU ${r.cpuCores} cores, load ${l0.join(' ')}`,
          );
        }
        const s = got.serial!;
        const b = got.batched!;
        const identical = s.outs.every((o, i) => o.equals(b.outs[i]!));
        console.log(
          `  identical bytes: ${identical}; throughput batched/serial ${(b.r.callsPerS / s.r.callsPerS).toFixed(3)}`,
        );
        results.push({
          maxBatchTiles: B,
          round,
          order,
          serial: s.r,
          batched: b.r,
          throughputRatio: Math.round((b.r.callsPerS / s.r.callsPerS) * 1000) / 1000,
          identicalBytes: identical,
        });
        if (!identical) process.exitCode = 1;
      }
      results.push({ maxBatchTiles: B, statsAfter: up.stats(), device: up.device });
    } finally {
      await up.dispose();
    }
  }
  const loadEnd = load();
  const out = argOf('--out') ?? join(HERE, 'results', `${device === 'cuda' ? 'cuda' : 'cpu'}-batch.json`);
  writeFileSync(
    out,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine,
        loadAverage1m5m15m: { start: loadStart, end: loadEnd },
        settings: {
          model,
          device,
          calls,
          input: `${SIDE}x${SIDE} PNG`,
          output: `${SIDE * 4}x${SIDE * 4} PNG`,
          maxBatchDelayMs: delay,
          rounds,
        },
        results,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`wrote ${out}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
