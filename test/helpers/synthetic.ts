/**
 * Deterministic synthetic LR tiles with content a trained model responds to: smooth colour
 * shading, stripes of several periods and orientations, and hard-edged boxes. For tests and
 * device checks that compare two runs of a real model (not for quality figures).
 */

/**
 * `n` tiles of `s` x `s` RGB, cut from a 4-tile-wide synthetic image.
 *
 * @param n - Number of tiles (>= 1).
 * @param s - Tile side in pixels (the model's LR tile size).
 * @returns uint8 RGB [n, s, s, 3], row-major, interleaved.
 */
export function syntheticTiles(n: number, s: number): Uint8Array {
  const tiles = new Uint8Array(n * s * s * 3);
  for (let t = 0; t < n; t++)
    for (let y = 0; y < s; y++)
      for (let x = 0; x < s; x++) {
        const X = x + (t % 4) * s;
        const Y = y + Math.floor(t / 4) * s;
        const stripes = 60 * Math.sin((X * (1 + (t % 3))) / 3 + Y / 7);
        const box = X % 40 < 20 !== Y % 30 < 15 ? 50 : 0;
        const base = [90 + X, 140 - Y / 2, 60 + (X * Y) / 80];
        for (let c = 0; c < 3; c++)
          tiles[((t * s + y) * s + x) * 3 + c] = Math.max(
            0,
            Math.min(255, Math.round(base[c]! + stripes * (c === 1 ? -1 : 1) + box)),
          );
      }
  return tiles;
}

/** PSNR in dB of two uint8 arrays of the same length (Infinity when equal). */
export function psnrU8(a: Uint8Array, b: Uint8Array): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i]! - b[i]!) ** 2;
  return se === 0 ? Infinity : 10 * Math.log10((255 * 255) / (se / a.length));
}
