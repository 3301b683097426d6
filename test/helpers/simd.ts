/**
 * Running ops at another CPU SIMD level. AV_SIMD is read once per process, so the portable
 * (AV_SIMD=scalar) and AVX2 kernels, which a machine with AVX-512 never picks by itself, run in
 * a child process. Shared by the parity suites that cover the CPU's per-ISA kernels.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { OpName, OpParams } from '../../src/binding/types.js';

/** One op call for runOpsAtSimdLevel: `out` names the output tensor to send back. */
export interface SimdJob {
  op: OpName;
  params: OpParams;
  out: string;
}

/** A tensor as JSON: little-endian bytes in base64 plus the typed-array kind. */
interface WireTensor {
  b64: string;
  kind: 'f32' | 'u16' | 'i32';
  shape: number[];
  dtype?: string;
}

function toWire(params: OpParams): Record<string, WireTensor | number> {
  const out: Record<string, WireTensor | number> = {};
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    if (typeof v === 'number') out[k] = v;
    else if (typeof v === 'object' && 'data' in v) {
      const kind = v.data instanceof Float32Array ? 'f32' : v.data instanceof Uint16Array ? 'u16' : 'i32';
      const b64 = Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).toString('base64');
      out[k] = { b64, kind, shape: v.shape, dtype: v.dtype };
    }
  }
  return out;
}

// Runs each job on 'cpu' and prints {detail, outputs} (each job's `out` tensor, f32, base64).
// The addon comes from loadAddon(), so ALIGNVAR_ADDON is honoured as in the parent.
const loadTs = fileURLToPath(new URL('../../src/binding/load.ts', import.meta.url));
const CHILD = `
import { readFileSync } from 'node:fs';
import { loadAddon } from ${JSON.stringify(loadTs)};
const addon = loadAddon();
const jobs = JSON.parse(readFileSync(process.env.AV_TEST_JOBS, 'utf8'));
const kinds = { f32: Float32Array, u16: Uint16Array, i32: Int32Array };
const outputs = [];
for (const job of jobs) {
  const params = {};
  for (const [k, v] of Object.entries(job.params)) {
    if (typeof v === 'number') { params[k] = v; continue; }
    const bytes = Buffer.from(v.b64, 'base64');
    const T = kinds[v.kind];
    const data = new T(bytes.byteLength / T.BYTES_PER_ELEMENT);
    new Uint8Array(data.buffer).set(bytes);
    params[k] = { data, shape: v.shape, dtype: v.dtype };
  }
  await addon._ops('cpu', job.op, params);
  outputs.push(Buffer.from(params[job.out].data.buffer).toString('base64'));
}
const detail = addon.backendInfo().find((b) => b.name === 'cpu').detail;
process.stdout.write(JSON.stringify({ detail, outputs }));
`;

/**
 * Runs the jobs on the CPU backend in a child process with AV_SIMD=level ('scalar' | 'avx2' |
 * 'avx512'; it caps the detected level). Returns the CPU detail string and the f32 outputs.
 */
export function runOpsAtSimdLevel(level: string, jobs: SimdJob[]): { detail: string; outputs: Float32Array[] } {
  const dir = mkdtempSync(join(tmpdir(), 'av-simd-'));
  try {
    const jobsFile = join(dir, 'jobs.json');
    writeFileSync(jobsFile, JSON.stringify(jobs.map((j) => ({ op: j.op, out: j.out, params: toWire(j.params) }))));
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD], {
      env: { ...process.env, AV_SIMD: level, AV_TEST_JOBS: jobsFile },
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    if (r.status !== 0) throw new Error(`child (AV_SIMD=${level}) exited with ${r.status}: ${r.stderr}`);
    const res = JSON.parse(r.stdout) as { detail: string; outputs: string[] };
    const outputs = res.outputs.map((b64) => {
      const bytes = Buffer.from(b64, 'base64');
      const f = new Float32Array(bytes.byteLength / 4);
      new Uint8Array(f.buffer).set(bytes);
      return f;
    });
    return { detail: res.detail, outputs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
