/**
 * What installing the packed package costs a user (issue 16): the tarball's size and file count,
 * and the wall time of `npm install <tarball>` into a fresh app, with install scripts off
 * (`--ignore-scripts`, npm's strict mode and pnpm's default) and on, next to a reference
 * install of sharp alone (the package's largest dependency, itself a prebuilt native addon) in
 * the same run. Then the first `alignvar upscale` of the installed package on a 64x64 PNG with
 * the embedded default model (128x128 HR tiles, so 256x256 out), timed from spawn to exit.
 *
 *   npx tsx bench/install.bench.ts [--rounds 3] [--out bench/results/install.json]
 *
 * All installs use `--prefer-offline` (the npm cache of this checkout's `npm ci`), so the time is
 * npm's own work and the package's, not the network's. Rounds alternate the three installs;
 * medians are reported. `npm pack` runs prepack, which builds the release addon (incremental
 * in build-release/); its time is not measured.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import sharp from 'sharp';

import { packageRoot } from '../src/binding/load.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    out: { type: 'string', default: join(packageRoot, 'bench', 'results', 'install.json') },
  },
});
const rounds = Number(values.rounds);
const loadStart = loadavg();

function sh(cmd: string, args: string[], cwd: string): { ms: number; out: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0)
    throw new Error(`bench/install: ${cmd} ${args.join(' ')} failed in ${cwd}:\n${r.stdout}\n${r.stderr}`);
  return { ms, out: r.stdout + r.stderr };
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const work = mkdtempSync(join(tmpdir(), 'alignvar-install-bench-'));
try {
  sh('npm', ['pack', '--pack-destination', work], packageRoot);
  const tgz = join(
    work,
    readdirSync(work).find((f) => f.endsWith('.tgz'))!,
  );
  const files = sh('tar', ['-tzf', tgz], work)
    .out.split('\n')
    .filter((f) => f && !f.endsWith('/'));
  const sharpVersion = (
    JSON.parse(readFileSync(join(packageRoot, 'node_modules', 'sharp', 'package.json'), 'utf8')) as { version: string }
  ).version;

  const flags = ['--prefer-offline', '--no-audit', '--no-fund'];
  const cases = {
    'npm install alignvar.tgz --ignore-scripts': [tgz, '--ignore-scripts', ...flags],
    'npm install alignvar.tgz (scripts on)': [tgz, ...flags],
    [`npm install sharp@${sharpVersion} (reference)`]: [`sharp@${sharpVersion}`, ...flags],
  };
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
  const upscaleMs: number[] = [];
  const png = join(work, 'in.png');
  const raw = Buffer.alloc(64 * 64 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (Math.sin(i * 0.011) * 90 + 128 + ((i * 7) % 23)) & 255;
  await sharp(raw, { raw: { width: 64, height: 64, channels: 3 } })
    .png()
    .toFile(png);

  for (let r = 0; r < rounds; r++) {
    for (const [name, args] of Object.entries(cases)) {
      const app = join(work, `app-${r}-${Object.keys(cases).indexOf(name)}`);
      mkdirSync(app);
      writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
      times[name]!.push(sh('npm', ['install', ...args], app).ms);
      if (name.includes('--ignore-scripts')) {
        const outPng = join(app, 'out.png');
        upscaleMs.push(sh(join(app, 'node_modules', '.bin', 'alignvar'), ['upscale', png, '-o', outPng, '-q'], app).ms);
        const meta = await sharp(outPng).metadata();
        if (meta.width !== 256 || meta.height !== 256)
          throw new Error(`bench/install: output is ${meta.width}x${meta.height}`);
      }
      rmSync(app, { recursive: true, force: true });
    }
  }
  const ref = median(times[`npm install sharp@${sharpVersion} (reference)`]!);
  const result = {
    date: new Date().toISOString(),
    machine: {
      cpu: cpus()[0]?.model,
      cores: cpus().length,
      node: process.version,
      loadavgStart: loadStart,
      loadavgEnd: loadavg(),
    },
    method: `median of ${rounds} rounds, fresh app per install, --prefer-offline (npm cache), wall time spawn to exit`,
    tarball: { bytes: statSync(tgz).size, mib: +(statSync(tgz).size / 1048576).toFixed(2), files: files.length },
    installs: Object.entries(times).map(([name, ms]) => ({
      name,
      medianS: +(median(ms) / 1000).toFixed(2),
      runsS: ms.map((x) => +(x / 1000).toFixed(2)),
      ratioToSharp: +(median(ms) / ref).toFixed(2),
    })),
    firstUpscale: {
      what: 'installed (--ignore-scripts) alignvar upscale 64x64 PNG -> 256x256, embedded default model, model load included',
      medianS: +(median(upscaleMs) / 1000).toFixed(2),
      runsS: upscaleMs.map((x) => +(x / 1000).toFixed(2)),
    },
  };
  writeFileSync(values.out, JSON.stringify(result, null, 2) + '\n');
  console.log(JSON.stringify(result, null, 2));
} finally {
  rmSync(work, { recursive: true, force: true });
}
