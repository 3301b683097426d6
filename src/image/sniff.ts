/**
 * Recognising raster image formats from their first bytes (magic numbers), without decoding:
 * used to pick the images in a folder by content, and to tell a truncated file of a known format
 * from a file of an unknown one.
 */

/** HEIF brands (ISO-BMFF `ftyp` major or compatible brands) of still images and sequences. */
const HEIF_BRANDS = new Set(['avif', 'avis', 'heic', 'heix', 'heim', 'heis', 'hevc', 'hevx', 'mif1', 'msf1']);

/** The raster formats {@link sniffFormat} recognises (sharp's names). */
export type SniffedFormat = 'jpeg' | 'png' | 'gif' | 'webp' | 'tiff' | 'heif';

/** Bytes read from each file to recognise its format. */
export const SNIFF_BYTES = 64;

/**
 * The raster format that the first bytes of a file announce, or undefined.
 *
 * @param head - The file's first bytes (up to {@link SNIFF_BYTES}).
 * @returns `'jpeg'`, `'png'`, `'gif'`, `'webp'`, `'tiff'` or `'heif'`.
 */
export function sniffFormat(head: Uint8Array): SniffedFormat | undefined {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  const ascii = (start: number, end: number): string => b.toString('latin1', start, end);
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b.length >= 8 && b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    return 'png';
  }
  if (b.length >= 6 && (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a')) return 'gif';
  if (b.length >= 12 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
  if (
    b.length >= 4 &&
    (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*' || ascii(0, 4) === 'II+\0' || ascii(0, 4) === 'MM\0+')
  ) {
    return 'tiff';
  }
  if (b.length >= 12 && ascii(4, 8) === 'ftyp') {
    const size = Math.min(b.readUInt32BE(0), b.length);
    for (let p = 8; p + 4 <= size; p += 4) {
      if (p === 12) continue; // minor version, not a brand
      if (HEIF_BRANDS.has(ascii(p, p + 4))) return 'heif';
    }
  }
  return undefined;
}
