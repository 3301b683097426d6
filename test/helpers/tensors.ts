/** Reads a whole (small) safetensors fixture: F32 tensors as writable inputs, the rest as bytes. */
import { SafetensorsFile, type SafetensorsTensorInput, toFloat32 } from '../../src/weights/safetensors.js';

/** A fixture's tensors: `t` the F32 ones (ready for writeSafetensors), `raw` the others' bytes. */
export interface FixtureTensors {
  t: Record<string, SafetensorsTensorInput>;
  raw: Map<string, Uint8Array>;
  meta: Record<string, string>;
}

/** Reads every tensor and the metadata of a safetensors file. */
export async function readFixture(path: string): Promise<FixtureTensors> {
  const f = await SafetensorsFile.open(path);
  try {
    const t: Record<string, SafetensorsTensorInput> = {};
    const raw = new Map<string, Uint8Array>();
    for (const [name, info] of f.tensors) {
      const b = await f.read(name);
      if (info.dtype === 'F32') t[name] = { dtype: 'F32', shape: info.shape, data: toFloat32(info, b) };
      else raw.set(name, new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
    }
    return { t, raw, meta: { ...f.metadata } };
  } finally {
    await f.close();
  }
}
