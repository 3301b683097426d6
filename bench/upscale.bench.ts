/**
 * End-to-end CPU benchmark (STYLE rule 14): per-scale step latency, seconds per output image and
 * peak resident memory of the Engine, next to sharp's lanczos3 x4 resize of the same image timed
 * in the same process.
 *
 *   ALIGNVAR_ADDON=/tmp/build-bench/Release/alignvar.node npx tsx bench/upscale.bench.ts \
 *     [--configs tiny,small,small512] [--batches 1,2,4] [--samples 5] [--time 20] [--dtype bf16] [--cfg 6] [--json out.json]
 *
 * Configs: `tiny` is the golden fixture (test/fixtures/golden/tiny-model.safetensors, f32);
 * `small` and `small512` are random-weight models of those presets (training/avtrain/config.py),
 * written once to $TMPDIR/alignvar-bench/ by training/avtrain/random_model.py (needs
 * /usr/bin/python3 with torch; never commit them). Random weights cost the same as trained ones:
 * every shape is the real one and the draws keep activations O(1). `varsr-tiny` is
 * test/fixtures/pth/varsr-tiny.pth converted (f32, with its refiner: W 16, 2 blocks) to the
 * same folder; a config ending in `.safetensors` is that model file (a converted VARSR.pth).
 *
 * A model that holds VARSR's diffusion refiner (spec 6) runs it, as upscaling does; its stage
 * time (`onRefiner`, 10 steps over the last scale's tokens) is its own row next to the scales,
 * with GFLOP from the cost model (src/bench/cost.ts refinerCost: what the engine runs), and
 * decode is then the time after the refiner.
 *
 * The parent process spawns one child per (config, batch B) so that each child's peak RSS
 * (/proc/self/status VmHWM, plus process.memoryUsage().rss sampled every 20 ms) belongs to that
 * configuration alone. A child loads the engine, runs warm-up batches, then times `engine.run`
 * with benchmark.js (`defer: true`); the engine's onProgress hook gives each scale's step time,
 * from which the run splits into prepare (LR resize, conditioning net, SCA masks), the K steps
 * and decode (VQVAE decoder, AdaIN). After reading its peak RSS it times sharp's lanczos3 x4
 * resize of the same raw RGB tile, then a 512x512 output end to end through the Upscaler (the
 * overlapping tile grid, PNG decode and blending, tile batch B) on a 128x128 PNG beside sharp's
 * lanczos3 x4 of the same PNG (`e2e512`). GFLOP use spec 9.1 with the config's sizes (AdaLN is
 * precomputed at load, the head runs one row at si = 0) and exact conv counts for the
 * conditioning net and decoder.
 *
 * Prints tables and writes bench/results/cpu-upscale.json (machine, load averages at start and
 * end of the whole run and of each child, every row).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import Benchmark from 'benchmark';
import sharp from 'sharp';

import { loadAddon } from '../src/binding/load.js';
import { convertCheckpoint } from '../src/convert/index.js';
import { Engine } from '../src/engine.js';
import { createUpscaler } from '../src/upscaler.js';
import { convCosts, refinerCost, stepCosts } from '../src/bench/cost.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');

const args = process.argv.slice(2);
const argOf = (flag: string): string | undefined => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
};

// ---- configs and models -----------------------------------------------------------------------

interface ConfigSpec {
  name: string;
  /** Model file (created on demand for the random-weight presets). */
  path: string;
  /** Preset of training/avtrain/config.py to generate, when the file is made here. */
  preset?: string;
  /** A .pth checkpoint to convert (with its refiner), when the file is made here. */
  pth?: string;
  dtype: string;
}

const DTYPE = argOf('--dtype') ?? 'bf16';
// Guidance of the timed runs (default 6, VARSR's; 0 runs without the negative half, as the
// embedded model's metadata asks) and where the JSON goes (default bench/results/cpu-upscale.json).
const CFG = Number(argOf('--cfg') ?? 6);
const JSON_OUT = argOf('--json');
const MODEL_DIR = process.env.ALIGNVAR_BENCH_MODELS ?? join(tmpdir(), 'alignvar-bench');

function configSpec(name: string): ConfigSpec {
  if (name === 'tiny') return { name, path: join(ROOT, 'test/fixtures/golden/tiny-model.safetensors'), dtype: 'f32' };
  if (name === 'small' || name === 'small512' || name === 'd24')
    return { name, path: join(MODEL_DIR, `${name}-${DTYPE}.safetensors`), preset: name, dtype: DTYPE };
  if (name === 'varsr-tiny')
    return {
      name,
      path: join(MODEL_DIR, 'varsr-tiny-f32.safetensors'),
      pth: join(ROOT, 'test/fixtures/pth/varsr-tiny.pth'),
      dtype: 'f32',
    };
  if (name.endsWith('.safetensors')) return { name, path: resolve(name), dtype: 'as stored' };
  throw new Error(`unknown config ${name}; expected tiny, small, small512, d24, varsr-tiny or a .safetensors file`);
}

/**
 * Writes a random-weight model with the PyTorch reference's exporter (exact keys and metadata),
 * or converts a .pth checkpoint.
 */
async function ensureModel(c: ConfigSpec): Promise<void> {
  if (existsSync(c.path) || !(c.preset || c.pth)) return;
  mkdirSync(dirname(c.path), { recursive: true });
  if (c.pth) {
    console.log(`converting ${c.pth} to ${c.path}`);
    await convertCheckpoint({ var: c.pth, out: c.path });
    return;
  }
  console.log(`generating ${c.path} (random weights, preset ${c.preset}, ${c.dtype})`);
  await new Promise<void>((res, rej) => {
    const p = spawn(
      '/usr/bin/python3',
      ['-m', 'avtrain.random_model', '--preset', c.preset!, '--dtype', c.dtype, '--out', c.path],
      { cwd: join(ROOT, 'training'), stdio: 'inherit' },
    );
    p.on('error', rej);
    p.on('exit', (code) => (code === 0 ? res() : rej(new Error(`random_model.py exited with ${code}`))));
  });
}

// ---- input image ------------------------------------------------------------------------------

/**
 * A deterministic LR tile, uint8 RGB: smooth colour fields, a disc, stripes and noise (like
 * training/avtrain/golden.py make_lr), different per `k`.
 */
function makeTile(n: number, k: number): Uint8Array {
  const out = new Uint8Array(n * n * 3);
  let s = (0x9e3779b9 ^ (k * 7919)) >>> 0;
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
  for (let y = 0; y < n; y++)
    for (let x = 0; x < n; x++) {
      const r = Math.hypot(y - 0.45 * n, x - (0.35 + 0.1 * k) * n);
      let px = [
        120 + 70 * Math.sin((2 * Math.PI * x) / (0.6 * n) + k),
        110 + 60 * Math.cos((2 * Math.PI * y) / (0.8 * n)),
        90 + 50 * Math.sin((2 * Math.PI * (x + y)) / n),
      ];
      if (r < 0.22 * n) px = [235, 210, 40];
      else if (Math.floor((x + 2 * y) / 6) % 2 === 0 && y > 0.7 * n) px = [60, 200, 80];
      for (let c = 0; c < 3; c++)
        out[(y * n + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(px[c]! + 12 * rnd())));
    }
  return out;
}

// ---- benchmark.js -----------------------------------------------------------------------------

interface Timing {
  meanS: number;
  minS: number;
  rmePct: number;
  samples: number;
}

function bench(name: string, fn: () => Promise<unknown>, minSamples: number, maxTime: number): Promise<Timing> {
  return new Promise((res, rej) => {
    const b = new Benchmark(name, {
      defer: true,
      minSamples,
      maxTime,
      fn: (d: Benchmark.Deferred) => {
        fn().then(
          () => d.resolve(),
          (e: unknown) => rej(e),
        );
      },
      onComplete: () => {
        const st = b.stats;
        res({ meanS: st.mean, minS: Math.min(...st.sample), rmePct: st.rme, samples: st.sample.length });
      },
      onError: (e: unknown) => rej(e),
    });
    b.run({ async: true });
  });
}

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function vmHWM(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const round = (v: number, digits: number): number => Number(v.toFixed(digits));
const loadNow = (): number[] => loadavg().map((v) => round(v, 2));

// ---- child: one (config, B) -------------------------------------------------------------------

/** The refiner stage of a batch (models that hold one). */
interface RefinerRow {
  /** Refiner width W and residual blocks. */
  width: number;
  blocks: number;
  /** Diffusion steps per token. */
  steps: number;
  /** Token map side it refines (the last scale's, G). */
  pn: number;
  /** Tokens refined in the batch: G^2 x B. */
  tokens: number;
  /** Median stage time over the timed runs, whole batch. */
  ms: number;
  /** GFLOP of the whole batch (B images, CFG), as the engine runs it. */
  gflop: number;
  gflops: number;
}

interface ScaleRow {
  si: number;
  pn: number;
  lq: number;
  lk: number;
  ms: number;
  /** GFLOP of the whole batch (B images, CFG). */
  gflop: number;
  gflops: number;
}

interface ChildResult {
  config: string;
  model: string;
  dtype: string;
  B: number;
  lrSize: number;
  hrSize: number;
  depth: number;
  width: number;
  vocab: number;
  patchNums: number[];
  load: { start: number[]; end: number[] };
  weightMB: number;
  stateMB: number;
  rssAfterLoadMB: number;
  peakRssMB: number;
  peakRssSampledMB: number;
  warmupRuns: number;
  runs: number;
  /** CPU seconds / wall seconds of the process while timed (2 = both cores to itself). */
  cpuCores: number;
  /** Whole batch, benchmark.js. */
  batchS: Timing;
  secondsPerImage: number;
  /** Fastest timed batch / B (least disturbed by other processes). */
  secondsPerImageBest: number;
  secondsPer512: number;
  imagesPerS: number;
  /** Medians over the timed runs, whole batch. */
  prepareMs: number;
  stepsMs: number;
  /** The refiner stage; absent when the model has none. */
  refinerMs?: number;
  decodeMs: number;
  gflopPerImage: { transformer: number; condNet: number; refiner: number; decoder: number; total: number };
  gflops: { prepare: number; steps: number; refiner?: number; decode: number; total: number };
  scales: ScaleRow[];
  /** The refiner as its own row (B images), next to the scales; absent when the model has none. */
  refiner?: RefinerRow;
  /** Least-squares fit of step ms against step GFLOP over the K scales. */
  stepFit: { overheadMs: number; marginalGflops: number };
  lanczos3: { msPerImage: number; rmePct: number; samples: number; sharpConcurrency: number };
  /** Engine seconds per image / lanczos3 seconds per image. */
  ratio: number;
  /**
   * A 512x512 output end to end: the Upscaler (the overlapping tile grid, PNG decode, blending)
   * on a 128x128 PNG, raw output, next to sharp's lanczos3 x4 of the same PNG.
   */
  e2e512: { tiles: number; seconds: Timing; lanczos3Ms: number; ratio: number };
}

async function child(config: string, B: number, samples: number, maxTime: number): Promise<ChildResult> {
  const loadStart = loadNow();
  const spec = configSpec(config);
  let rssPeakSampled = 0;
  const sampler = setInterval(() => {
    rssPeakSampled = Math.max(rssPeakSampled, process.memoryUsage().rss);
  }, 20);
  const engine = await Engine.create(spec.path, { backend: 'cpu' });
  const cfg = engine.config;
  const sched = engine.schedule;
  const rssAfterLoadMB = process.memoryUsage().rss / 2 ** 20;
  const lr = engine.lrSize;
  const tiles = new Uint8Array(B * lr * lr * 3);
  for (let b = 0; b < B; b++) tiles.set(makeTile(lr, b), b * lr * lr * 3);

  const K = sched.K;
  const stepMs: number[][] = Array.from({ length: K }, () => []);
  const prep: number[] = [];
  const refMs: number[] = [];
  const dec: number[] = [];
  let record = false;
  const once = async () => {
    const t0 = performance.now();
    let tPrev = t0;
    let first = 0;
    let refined = NaN;
    const ms: number[] = [];
    await engine.run(tiles, B, {
      seed: 1,
      cfg: CFG,
      onProgress: (p) => {
        const now = performance.now();
        if (p.scale === 0) first = now - t0 - p.ms;
        ms.push(p.ms);
        tPrev = now;
      },
      onRefiner: (p) => {
        refined = p.ms;
        tPrev = performance.now();
      },
    });
    const end = performance.now();
    if (record) {
      prep.push(first);
      if (engine.refiner) refMs.push(refined);
      dec.push(end - tPrev);
      ms.forEach((v, i) => stepMs[i]!.push(v));
    }
  };
  const warmupRuns = config === 'tiny' ? 3 : 1;
  for (let i = 0; i < warmupRuns; i++) await once();
  record = true;
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  const batchS = await bench(`${config} B${B}`, once, samples, maxTime);
  const cpu1 = process.cpuUsage(cpu0);
  // Cores' worth of CPU time this process got while timed: ~threads when it had the machine.
  const cpuCores = (cpu1.user + cpu1.system) / 1e3 / (performance.now() - wall0);
  const peakRssMB = vmHWM();
  clearInterval(sampler);
  const mem = engine.memory();
  const refinerDims = engine.refiner;
  await engine.dispose();

  // sharp lanczos3 x4 of the same raw tile (the first one), one image per call.
  const tile0 = Buffer.from(tiles.subarray(0, lr * lr * 3));
  const lanczos = () =>
    sharp(tile0, { raw: { width: lr, height: lr, channels: 3 } })
      .resize(lr * 4, lr * 4, { kernel: 'lanczos3' })
      .raw()
      .toBuffer();
  for (let i = 0; i < 5; i++) await lanczos();
  const lz = await bench('lanczos3', lanczos, 20, 2);

  // A 512x512 output end to end through the Upscaler, tile batch B, and lanczos3 of the same PNG.
  const side = 512 / (engine.hrSize / lr);
  const png = await sharp(Buffer.from(makeTile(side, 0)), { raw: { width: side, height: side, channels: 3 } })
    .png()
    .toBuffer();
  const up = await createUpscaler({ model: spec.path, device: 'cpu', tileBatch: B, cfg: CFG });
  const e2eTiles = up.tileCount(side, side);
  const e2e = () => up.upscale(png, { raw: true });
  await e2e();
  const e2eS = await bench(`${config} 512x512 e2e`, e2e, Math.min(samples, 3), maxTime);
  await up.dispose();
  const lanczos512 = () => sharp(png).resize(512, 512, { kernel: 'lanczos3' }).raw().toBuffer();
  for (let i = 0; i < 5; i++) await lanczos512();
  const lz512 = await bench('lanczos3 512', lanczos512, 20, 2);

  // The spec-9 cost model shared with `alignvar bench`; R = 2 rows per image when cfg != 0.
  const sf = stepCosts(cfg, sched, CFG !== 0);
  const conv = convCosts(cfg);
  const trans = sf.reduce((a, s) => a + s.total, 0);
  const scales: ScaleRow[] = sf.map((s, i) => {
    const ms = median(stepMs[i]!);
    const gflop = s.total * B;
    return {
      si: s.si,
      pn: s.pn,
      lq: s.lq,
      lk: s.lk,
      ms: round(ms, 2),
      gflop: round(gflop, 3),
      gflops: round(gflop / (ms / 1e3), 1),
    };
  });
  // ms = overhead + GFLOP / throughput over the scales: the fixed cost of a step (dispatch,
  // sampling, VQ lookup, upsample + Phi at the latent grid, KV reads) and the marginal rate.
  const n = scales.length;
  const mx = scales.reduce((a, s) => a + s.gflop, 0) / n;
  const my = scales.reduce((a, s) => a + s.ms, 0) / n;
  const sxy = scales.reduce((a, s) => a + (s.gflop - mx) * (s.ms - my), 0);
  const sxx = scales.reduce((a, s) => a + (s.gflop - mx) ** 2, 0);
  const slope = sxy / sxx;
  const stepFit = { overheadMs: round(my - slope * mx, 2), marginalGflops: round(1e3 / slope, 1) };
  const prepareMs = median(prep);
  const decodeMs = median(dec);
  const stepsMs = scales.reduce((a, s) => a + s.ms, 0);
  const rc = refinerDims ? refinerCost(cfg, refinerDims, CFG !== 0, B) : undefined;
  let refiner: RefinerRow | undefined;
  if (refinerDims && rc) {
    const ms = median(refMs);
    const c = rc;
    refiner = {
      width: refinerDims.width,
      blocks: refinerDims.blocks,
      steps: c.steps,
      pn: cfg.grid,
      tokens: cfg.grid * cfg.grid * B,
      ms: round(ms, 2),
      gflop: round(c.total, 3),
      gflops: round(c.total / (ms / 1e3), 1),
    };
  }
  const refinerPerImage = rc ? rc.total / B : 0;
  const perImage = batchS.meanS / B;
  const total = trans + conv.condNet + refinerPerImage + conv.decoder;
  return {
    config,
    model: spec.preset
      ? `random weights (avtrain.random_model --preset ${spec.preset})`
      : spec.pth
        ? `${spec.pth.replace(`${ROOT}/`, '')} converted`
        : spec.path.replace(`${ROOT}/`, ''),
    dtype: spec.dtype,
    B,
    lrSize: lr,
    hrSize: engine.hrSize,
    depth: cfg.depth,
    width: cfg.width,
    vocab: cfg.vocab,
    patchNums: [...cfg.patchNums],
    load: { start: loadStart, end: loadNow() },
    weightMB: round(mem.weights / 2 ** 20, 1),
    stateMB: round(mem.state / 2 ** 20, 1),
    rssAfterLoadMB: round(rssAfterLoadMB, 1),
    peakRssMB: round(peakRssMB, 1),
    peakRssSampledMB: round(rssPeakSampled / 2 ** 20, 1),
    warmupRuns,
    runs: prep.length,
    cpuCores: round(cpuCores, 2),
    batchS: {
      meanS: round(batchS.meanS, 4),
      minS: round(batchS.minS, 4),
      rmePct: round(batchS.rmePct, 1),
      samples: batchS.samples,
    },
    secondsPerImage: round(perImage, 4),
    secondsPerImageBest: round(batchS.minS / B, 4),
    secondsPer512: round(perImage * (512 / engine.hrSize) ** 2, 4),
    imagesPerS: round(1 / perImage, 3),
    prepareMs: round(prepareMs, 1),
    stepsMs: round(stepsMs, 1),
    ...(refiner ? { refinerMs: round(refiner.ms, 1) } : {}),
    decodeMs: round(decodeMs, 1),
    gflopPerImage: {
      transformer: round(trans, 2),
      condNet: round(conv.condNet, 2),
      refiner: round(refinerPerImage, 2),
      decoder: round(conv.decoder, 2),
      total: round(total, 2),
    },
    gflops: {
      prepare: round((conv.condNet * B) / (prepareMs / 1e3), 1),
      steps: round((trans * B) / (stepsMs / 1e3), 1),
      ...(refiner ? { refiner: refiner.gflops } : {}),
      decode: round((conv.decoder * B) / (decodeMs / 1e3), 1),
      total: round(total / perImage, 1),
    },
    scales,
    ...(refiner ? { refiner } : {}),
    stepFit,
    lanczos3: {
      msPerImage: round(lz.meanS * 1e3, 3),
      rmePct: round(lz.rmePct, 1),
      samples: lz.samples,
      sharpConcurrency: sharp.concurrency(),
    },
    ratio: round(perImage / lz.meanS, 1),
    e2e512: {
      tiles: e2eTiles,
      seconds: {
        meanS: round(e2eS.meanS, 4),
        minS: round(e2eS.minS, 4),
        rmePct: round(e2eS.rmePct, 1),
        samples: e2eS.samples,
      },
      lanczos3Ms: round(lz512.meanS * 1e3, 3),
      ratio: round(e2eS.meanS / lz512.meanS, 1),
    },
  };
}

// ---- parent -----------------------------------------------------------------------------------

function machineInfo(): Record<string, string | number> {
  let model = cpus()[0]?.model ?? 'unknown';
  let flags = '';
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const field = (k: string) => new RegExp(`^${k}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '';
    model = `${field('model name') || model} (family ${field('cpu family')} model ${field('model')})`;
    flags = field('flags')
      .split(' ')
      .filter((f) => /^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_bf16)$/.test(f))
      .join(' ');
  } catch {
    // Not Linux: the model name from os.cpus() is all there is.
  }
  const cpu = loadAddon()
    .backendInfo()
    .find((b) => b.name === 'cpu');
  const detail = cpu?.detail ?? '';
  return {
    cpu: model,
    cpuFlags: flags,
    logicalCores: cpus().length,
    threads: Number(/threads=(\d+)/.exec(detail)?.[1] ?? 0),
    simd: /simd=(\w+)/.exec(detail)?.[1] ?? 'unknown',
    backendDetail: detail,
    node: process.version,
    sharp: sharp.versions.sharp ?? 'unknown',
    vips: sharp.versions.vips,
  };
}

function runChild(config: string, B: number, samples: number, maxTime: number): Promise<ChildResult> {
  return new Promise((res, rej) => {
    const p = spawn(
      process.execPath,
      [
        ...process.execArgv,
        fileURLToPath(import.meta.url),
        '--child',
        config,
        String(B),
        String(samples),
        String(maxTime),
        '--cfg',
        String(CFG),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', rej);
    p.on('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (code !== 0 || !line) rej(new Error(`child ${config} B${B} exited with ${code}:\n${out}`));
      else res(JSON.parse(line.slice(7)) as ChildResult);
    });
  });
}

const f = (v: number, d = 1): string => v.toFixed(d);

function tables(results: ChildResult[]): string {
  const lines: string[] = [];
  lines.push(
    `Per-scale step latency (B = 1, ${CFG !== 0 ? 'CFG: 2 rows per image' : 'no CFG: 1 row per image'}; GFLOP per spec 9.1 with the config sizes)\n`,
  );
  for (const r of results.filter((x) => x.B === 1)) {
    lines.push(`${r.config} (d${r.depth}, C ${r.width}, V ${r.vocab}, ${r.dtype}, ${r.lrSize} -> ${r.hrSize})\n`);
    lines.push('| si | pn | Lq | Lk | ms/step | GFLOP/step | GFLOP/s |');
    lines.push('|---:|---:|---:|---:|---:|---:|---:|');
    for (const s of r.scales)
      lines.push(`| ${s.si} | ${s.pn} | ${s.lq} | ${s.lk} | ${f(s.ms, 2)} | ${f(s.gflop, 3)} | ${f(s.gflops)} |`);
    lines.push(`| sum | | | | ${f(r.stepsMs, 1)} | ${f(r.gflopPerImage.transformer, 2)} | ${f(r.gflops.steps)} |`);
    // The refiner's ms is its whole stage (all diffusion steps), after the last scale.
    const ref = r.refiner;
    if (ref)
      lines.push(
        `| refiner (W ${ref.width}, ${ref.blocks} blocks, ${ref.steps} steps) | ${ref.pn} | - | - | ${f(ref.ms, 2)} | ${f(ref.gflop, 3)} | ${f(ref.gflops)} |`,
      );
    lines.push('');
    lines.push(
      `fit over the scales: ms/step = ${f(r.stepFit.overheadMs, 2)} ms + GFLOP / (${f(r.stepFit.marginalGflops)} GFLOP/s)\n`,
    );
  }
  lines.push('End to end, seconds per output image (mean of the batch time / B), peak RSS per child process\n');
  // The refiner's columns only when a model in the run has one ("-" for those without).
  const anyRef = results.some((r) => r.refiner);
  const stages = anyRef ? 'prepare / steps / refiner / decode' : 'prepare / steps / decode';
  const rates = anyRef ? 'prep/steps/ref/dec/all' : 'prep/steps/dec/all';
  const opt = (v: number | undefined, d: number): string => (v === undefined ? '- / ' : `${f(v, d)} / `);
  lines.push(
    `| config | LR -> HR | B | s/batch (±rme) | s/image (best) | s/512² equiv. | images/s | ${stages} ms (batch) | GFLOP/s (${rates}) | CPU cores used | peak RSS MB | lanczos3 ms/image | ratio |`,
  );
  lines.push('|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|');
  for (const r of results)
    lines.push(
      `| ${r.config} | ${r.lrSize} -> ${r.hrSize} | ${r.B} | ${f(r.batchS.meanS, 3)} (±${f(r.batchS.rmePct)}%) | ${f(r.secondsPerImage, 3)} (${f(r.secondsPerImageBest, 3)}) | ${f(r.secondsPer512, 3)} | ${f(r.imagesPerS, 2)} | ${f(r.prepareMs, 0)} / ${f(r.stepsMs, 0)} / ${anyRef ? opt(r.refinerMs, 0) : ''}${f(r.decodeMs, 0)} | ${f(r.gflops.prepare)} / ${f(r.gflops.steps)} / ${anyRef ? opt(r.gflops.refiner, 1) : ''}${f(r.gflops.decode)} / ${f(r.gflops.total)} | ${f(r.cpuCores, 2)} | ${f(r.peakRssMB, 0)} | ${f(r.lanczos3.msPerImage, 3)} | ${f(r.ratio, 0)}x |`,
    );
  lines.push('\nA 512x512 output end to end (Upscaler on a 128x128 PNG: tile grid, decode, blending; raw output)\n');
  lines.push('| config | B | tiles | s (±rme, best) | lanczos3 ms, same PNG | ratio |');
  lines.push('|---|---:|---:|---:|---:|---:|');
  for (const r of results) {
    const e = r.e2e512;
    lines.push(
      `| ${r.config} | ${r.B} | ${e.tiles} | ${f(e.seconds.meanS, 3)} (±${f(e.seconds.rmePct)}%, ${f(e.seconds.minS, 3)}) | ${f(e.lanczos3Ms, 2)} | ${f(e.ratio, 0)}x |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  if (args[0] === '--child') {
    const r = await child(args[1]!, Number(args[2]), Number(args[3]), Number(args[4]));
    process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);
    return;
  }
  const configs = (argOf('--configs') ?? 'tiny,small,small512').split(',');
  const batches = (argOf('--batches') ?? '1,2,4').split(',').map(Number);
  const samples = Number(argOf('--samples') ?? 5);
  const maxTime = Number(argOf('--time') ?? 20);
  const machine = machineInfo();
  const loadStart = loadNow();
  console.log(
    `cpu: ${machine.cpu}, ${machine.logicalCores} cores, threads ${machine.threads}, simd ${machine.simd}, node ${machine.node}, load ${loadStart.join(' ')}`,
  );
  const results: ChildResult[] = [];
  for (const name of configs) {
    await ensureModel(configSpec(name));
    for (const B of batches) {
      const r = await runChild(name, B, samples, maxTime);
      results.push(r);
      console.log(
        `${name.padEnd(9)} B${B}: ${f(r.secondsPerImage, 3)} s/image (±${f(r.batchS.rmePct)}%, ${r.batchS.samples} runs), ` +
          `prepare/steps/${r.refinerMs === undefined ? '' : 'refiner/'}decode ${f(r.prepareMs, 0)}/${f(r.stepsMs, 0)}/` +
          `${r.refinerMs === undefined ? '' : `${f(r.refinerMs, 0)}/`}${f(r.decodeMs, 0)} ms, ${f(r.gflops.total)} GFLOP/s, ` +
          `CPU ${f(r.cpuCores, 2)} cores, peak RSS ${f(r.peakRssMB, 0)} MB, lanczos3 ${f(r.lanczos3.msPerImage, 2)} ms (x${f(r.ratio, 0)}), ` +
          `512x512 end to end ${f(r.e2e512.seconds.meanS, 3)} s (${r.e2e512.tiles} tiles; lanczos3 ${f(r.e2e512.lanczos3Ms, 2)} ms), load ${r.load.start.join(' ')} -> ${r.load.end.join(' ')}`,
      );
    }
  }
  const loadEnd = loadNow();
  const best: Record<string, number> = {};
  for (const name of configs) {
    const rs = results.filter((r) => r.config === name);
    best[name] = rs.reduce((a, r) => (r.secondsPerImage < a.secondsPerImage ? r : a), rs[0]!).B;
  }
  console.log(
    `\n${tables(results)}\n\nbest tile batch: ${JSON.stringify(best)}; load ${loadStart.join(' ')} -> ${loadEnd.join(' ')}`,
  );

  const file = JSON_OUT ? resolve(JSON_OUT) : join(HERE, 'results', 'cpu-upscale.json');
  writeFileSync(
    file,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine,
        // 1/5/15-minute load averages: other processes (builds) share the cores.
        loadAverage1m5m15m: { start: loadStart, end: loadEnd },
        settings: { samples, maxTimeS: maxTime, cfg: CFG, topK: 1, topP: 0.75, colorFix: "the model's default" },
        bestBatch: best,
        results,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`wrote ${file}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
