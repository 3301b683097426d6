/**
 * Philox4x32-10 (Salmon et al., SC'11; Random123 philox.h) in plain TypeScript, the reference
 * for the ops that draw from core/philox.h (`sample`, `diffusion_step`). Checked against the
 * Random123 known-answer vectors in test/parity/sample.test.ts.
 */

const M0 = 0xd2511f53n;
const M1 = 0xcd9e8d57n;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

function mulhilo(m: bigint, a: number): [number, number] {
  const p = m * BigInt(a >>> 0);
  return [Number(p >> 32n), Number(p & 0xffffffffn)];
}

/** The four output words for a counter (4 words) and a key (2 words). */
export function philox4x32_10(ctr: readonly number[], key: readonly number[]): number[] {
  let [c0, c1, c2, c3] = ctr.map((v) => v >>> 0) as [number, number, number, number];
  let k0 = key[0]! >>> 0;
  let k1 = key[1]! >>> 0;
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const [hi0, lo0] = mulhilo(M0, c0);
    const [hi1, lo1] = mulhilo(M1, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
  }
  return [c0, c1, c2, c3];
}

/** The key words of a 64-bit seed: (low 32 bits, high 32 bits). */
export function philoxKey(seed: bigint): [number, number] {
  return [Number(seed & 0xffffffffn), Number((seed >> 32n) & 0xffffffffn)];
}
