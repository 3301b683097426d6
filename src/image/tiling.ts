/**
 * Overlapping tile grid and feathered blending (pure functions, no I/O).
 *
 * The model upscales square LR tiles of `tile` pixels by `scale`. An image of any size is
 * covered by a grid of such tiles that overlap by at least `overlap` LR pixels:
 *
 * - Padding: each axis gets `margin` mirrored pixels on both sides (reflect-101, repeated as
 *   often as needed; edge replication for a 1-pixel axis), and one shorter than a tile after
 *   that is padded to one tile the same way, centred; the output is cropped back. The margin
 *   moves the image border away from the tiles' outermost pixels, where a model sees the least
 *   context.
 * - Grid (per axis): `n = ceil((size - overlap) / (tile - overlap))` tiles with starts spread
 *   evenly, `s_k = round(k (size - tile) / (n - 1))`. The first tile starts at 0, the last ends
 *   at `size`, and neighbours overlap by at least `overlap`.
 * - Weights (per axis, in output pixels): between tiles k and k+1 a raised-cosine ramp of length
 *   `L` is centred in their overlap; tile k's weight falls from 1 to 0 across it while tile k+1's
 *   rises from 0 to 1, so the two sum to 1. `L` is `feather` times the smallest overlap, capped
 *   so that ramps never overlap each other. Outside the ramps exactly one tile has weight 1.
 *   Tile edges, where the model sees the least context, get weight 0 whenever `feather < 1`.
 * - A 2-D weight is the product of the x and y weights: the weights of all tiles at every
 *   output pixel sum to 1, so blending is a plain weighted sum, without a normalisation pass.
 *
 * {@link TileBlender} accumulates upscaled tiles in row-major order and writes finished output
 * rows as soon as no later tile can touch them, so it holds about two tile rows in float.
 */

/** Parameters of {@link planTiles}. */
export interface TileSpec {
  /** Side of a square model tile in input pixels, >= 1 (the model's LR size). */
  tile: number;
  /** Minimum overlap of neighbouring tiles in input pixels, in [0, tile - 1]. */
  overlap: number;
  /** Integer enlargement factor, >= 1. */
  scale: number;
  /** Ramp length as a fraction of the overlap, in [0, 1]; 0 gives hard cuts. Default 0.75. */
  feather?: number;
  /** Mirrored pixels added on each side of each axis, an integer >= 0. Default 0. */
  margin?: number;
}

/** One axis of a tile grid. */
export interface AxisPlan {
  /** Length of the axis in input pixels, before padding. */
  size: number;
  /** Padding before the image (mirrored), in input pixels. */
  padBefore: number;
  /** Length after padding: `max(size + 2 margin, tile)`. */
  padded: number;
  /** Start of each tile in padded input pixels, increasing. */
  starts: number[];
  /** Weight of each tile at each of its `tile * scale` output pixels (see the module comment). */
  weights: Float32Array[];
  /** Ramp length in output pixels. */
  ramp: number;
}

/** A tile grid over an image. */
export interface TilePlan {
  /** Image width in input pixels. */
  width: number;
  /** Image height in input pixels. */
  height: number;
  /** Tile side in input pixels. */
  tile: number;
  /** Enlargement factor. */
  scale: number;
  /** The x axis. */
  x: AxisPlan;
  /** The y axis. */
  y: AxisPlan;
  /** Tiles in row-major order: `index = row * x.starts.length + column`. */
  tiles: TileRect[];
}

/** One tile of a {@link TilePlan}. */
export interface TileRect {
  /** Row-major index. */
  index: number;
  /** Column in the grid. */
  column: number;
  /** Row in the grid. */
  row: number;
  /** Left edge in padded input pixels. */
  x: number;
  /** Top edge in padded input pixels. */
  y: number;
}

/** Default ramp length as a fraction of the overlap. */
export const DEFAULT_FEATHER = 0.75;

/** Raised-cosine step: 0 for u <= 0, 1 for u >= 1. */
function smoothStep(u: number): number {
  if (u <= 0) return 0;
  if (u >= 1) return 1;
  return 0.5 - 0.5 * Math.cos(Math.PI * u);
}

/**
 * Tile starts along one axis.
 *
 * @param size - Axis length in input pixels, >= tile (pad first).
 * @param tile - Tile length, >= 1.
 * @param overlap - Minimum overlap, in [0, tile - 1].
 * @returns Increasing starts; the first is 0 and the last is `size - tile`.
 */
export function axisStarts(size: number, tile: number, overlap: number): number[] {
  if (!Number.isInteger(tile) || tile < 1) throw new RangeError(`tile ${tile} must be a positive integer`);
  if (!Number.isInteger(overlap) || overlap < 0 || overlap >= tile) {
    throw new RangeError(`overlap ${overlap} must be an integer in [0, ${tile - 1}]`);
  }
  if (!Number.isInteger(size) || size < tile) throw new RangeError(`size ${size} must be an integer >= tile ${tile}`);
  if (size === tile) return [0];
  const n = Math.ceil((size - overlap) / (tile - overlap));
  const starts: number[] = [];
  for (let k = 0; k < n; k++) starts.push(Math.round((k * (size - tile)) / (n - 1)));
  return starts;
}

/**
 * Per-tile blend weights along one axis, in output pixels.
 *
 * @param starts - Tile starts from {@link axisStarts}.
 * @param tile - Tile length in input pixels.
 * @param scale - Enlargement factor.
 * @param feather - Ramp length as a fraction of the smallest overlap, in [0, 1].
 * @returns The weights of each tile (length `tile * scale`) and the ramp length used.
 */
export function axisWeights(
  starts: readonly number[],
  tile: number,
  scale: number,
  feather: number,
): { weights: Float32Array[]; ramp: number } {
  const n = starts.length;
  // Cut k lies between tiles k and k+1, at the centre of their overlap (output pixels).
  const cuts: number[] = [];
  let ramp = Infinity;
  for (let k = 0; k + 1 < n; k++) {
    const a = starts[k]!;
    const b = starts[k + 1]!;
    const overlap = a + tile - b;
    cuts.push(((a + tile + b) / 2) * scale);
    ramp = Math.min(ramp, feather * overlap * scale);
  }
  // Neighbouring ramps must not overlap: the ramp is at most the distance between cuts.
  for (let k = 0; k + 1 < cuts.length; k++) ramp = Math.min(ramp, cuts[k + 1]! - cuts[k]!);
  ramp = n > 1 ? Math.floor(ramp) : 0;
  const rise = (pos: number, cut: number): number =>
    ramp > 0 ? smoothStep((pos - (cut - ramp / 2)) / ramp) : pos >= cut ? 1 : 0;
  const weights: Float32Array[] = [];
  const len = tile * scale;
  for (let k = 0; k < n; k++) {
    const w = new Float32Array(len);
    const origin = starts[k]! * scale;
    for (let p = 0; p < len; p++) {
      const pos = origin + p + 0.5; // pixel centre, output pixels
      const up = k > 0 ? rise(pos, cuts[k - 1]!) : 1;
      const down = k + 1 < n ? 1 - rise(pos, cuts[k]!) : 1;
      w[p] = up * down;
    }
    weights.push(w);
  }
  return { weights, ramp };
}

function planAxis(size: number, spec: Required<TileSpec>): AxisPlan {
  const padded = Math.max(size + 2 * spec.margin, spec.tile);
  const padBefore = Math.floor((padded - size) / 2);
  const starts = axisStarts(padded, spec.tile, spec.overlap);
  const { weights, ramp } = axisWeights(starts, spec.tile, spec.scale, spec.feather);
  return { size, padBefore, padded, starts, weights, ramp };
}

/**
 * Plans the tile grid of a `width x height` image.
 *
 * @param width - Image width in input pixels, >= 1.
 * @param height - Image height in input pixels, >= 1.
 * @param spec - Tile size, minimum overlap, scale and feather.
 * @throws {RangeError} On invalid sizes.
 */
export function planTiles(width: number, height: number, spec: TileSpec): TilePlan {
  const full: Required<TileSpec> = { feather: DEFAULT_FEATHER, margin: 0, ...spec };
  for (const [name, v] of [
    ['width', width],
    ['height', height],
    ['scale', full.scale],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} ${v} must be a positive integer`);
  }
  if (!(full.feather >= 0 && full.feather <= 1)) throw new RangeError(`feather ${full.feather} must be in [0, 1]`);
  if (!Number.isInteger(full.margin) || full.margin < 0)
    throw new RangeError(`margin ${full.margin} must be a non-negative integer`);
  const x = planAxis(width, full);
  const y = planAxis(height, full);
  const tiles: TileRect[] = [];
  y.starts.forEach((ty, row) =>
    x.starts.forEach((tx, column) => tiles.push({ index: tiles.length, column, row, x: tx, y: ty })),
  );
  return { width, height, tile: full.tile, scale: full.scale, x, y, tiles };
}

/** Mirrors index `i` into [0, n) (reflect-101, periodic); 0 when n is 1. */
export function reflectIndex(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  const k = ((i % period) + period) % period;
  return k < n ? k : period - k;
}

/**
 * Cuts one tile out of an image, mirroring pixels beyond its edges (the padding of the plan).
 *
 * @param src - Interleaved image, `plan.width * plan.height * channels` values.
 * @param plan - The plan.
 * @param rect - The tile.
 * @param channels - Values per pixel.
 * @returns `tile * tile * channels` values.
 */
export function extractTile(src: Uint8Array, plan: TilePlan, rect: TileRect, channels: number): Uint8Array {
  const t = plan.tile;
  const out = new Uint8Array(t * t * channels);
  const cols = new Int32Array(t);
  for (let i = 0; i < t; i++) cols[i] = reflectIndex(rect.x + i - plan.x.padBefore, plan.width);
  for (let j = 0; j < t; j++) {
    const sy = reflectIndex(rect.y + j - plan.y.padBefore, plan.height);
    const rowBase = sy * plan.width * channels;
    for (let i = 0; i < t; i++) {
      const s = rowBase + cols[i]! * channels;
      const d = (j * t + i) * channels;
      for (let c = 0; c < channels; c++) out[d + c] = src[s + c]!;
    }
  }
  return out;
}

/**
 * Blends upscaled tiles into the cropped output image.
 *
 * Tiles may be added in any order within a tile row, but rows must be completed in order for
 * memory to stay bounded: output rows above the first unfinished tile row are rounded to 8 bits
 * and written to `output` as soon as that row's tiles are all in.
 */
export class TileBlender {
  /** The finished image: `width * scale` x `height * scale` x channels, 8-bit interleaved. */
  readonly output: Uint8Array;
  readonly #plan: TilePlan;
  readonly #channels: number;
  readonly #outWidth: number;
  readonly #outHeight: number;
  /** Float rows in progress, by output row. */
  readonly #rows = new Map<number, Float32Array>();
  /** Tiles added per tile row. */
  readonly #added: number[];
  readonly #seen: Uint8Array;
  /** Output rows below this one have been written. */
  #flushed = 0;
  /** First tile row that is not complete. */
  #nextRow = 0;

  /**
   * @param plan - The tile plan.
   * @param channels - Values per pixel of the tiles and the output.
   */
  constructor(plan: TilePlan, channels: number) {
    this.#plan = plan;
    this.#channels = channels;
    this.#outWidth = plan.width * plan.scale;
    this.#outHeight = plan.height * plan.scale;
    this.output = new Uint8Array(this.#outWidth * this.#outHeight * channels);
    this.#added = plan.y.starts.map(() => 0);
    this.#seen = new Uint8Array(plan.tiles.length);
  }

  /** Whether every tile has been added (and so every output row written). */
  get done(): boolean {
    return this.#nextRow === this.#plan.y.starts.length;
  }

  /**
   * Adds one upscaled tile.
   *
   * @param index - The tile's row-major index in the plan.
   * @param pixels - `(tile * scale)^2 * channels` values.
   * @throws {RangeError} On a wrong index, a repeated tile or a wrong length.
   */
  add(index: number, pixels: ArrayLike<number>): void {
    const plan = this.#plan;
    const rect = plan.tiles[index];
    if (rect === undefined) throw new RangeError(`tile index ${index} is not in the plan`);
    if (this.#seen[index]) throw new RangeError(`tile ${index} was already added`);
    const s = plan.scale;
    const side = plan.tile * s;
    const ch = this.#channels;
    if (pixels.length !== side * side * ch) {
      throw new RangeError(`tile ${index} has ${pixels.length} values, expected ${side}x${side}x${ch}`);
    }
    this.#seen[index] = 1;
    const wx = plan.x.weights[rect.column]!;
    const wy = plan.y.weights[rect.row]!;
    // Tile pixel (p, q) lands on cropped output pixel (x0 + p, y0 + q).
    const x0 = (rect.x - plan.x.padBefore) * s;
    const y0 = (rect.y - plan.y.padBefore) * s;
    const pLo = Math.max(0, -x0);
    const pHi = Math.min(side, this.#outWidth - x0);
    for (let q = Math.max(0, -y0); q < side && y0 + q < this.#outHeight; q++) {
      const wq = wy[q]!;
      if (wq === 0) continue;
      const oy = y0 + q;
      let row = this.#rows.get(oy);
      if (row === undefined) {
        row = new Float32Array(this.#outWidth * ch);
        this.#rows.set(oy, row);
      }
      for (let p = pLo; p < pHi; p++) {
        const w = wq * wx[p]!;
        if (w === 0) continue;
        const src = (q * side + p) * ch;
        const dst = (x0 + p) * ch;
        for (let c = 0; c < ch; c++) row[dst + c]! += w * pixels[src + c]!;
      }
    }
    this.#added[rect.row]!++;
    this.#advance();
  }

  /** Writes the output rows that no remaining tile row can touch. */
  #advance(): void {
    const plan = this.#plan;
    const perRow = plan.x.starts.length;
    while (this.#nextRow < this.#added.length && this.#added[this.#nextRow] === perRow) this.#nextRow++;
    const limit =
      this.#nextRow < plan.y.starts.length
        ? (plan.y.starts[this.#nextRow]! - plan.y.padBefore) * plan.scale
        : this.#outHeight;
    const end = Math.min(limit, this.#outHeight);
    const rowLen = this.#outWidth * this.#channels;
    for (let oy = this.#flushed; oy < end; oy++) {
      const row = this.#rows.get(oy);
      if (row !== undefined) {
        const base = oy * rowLen;
        for (let k = 0; k < rowLen; k++) {
          const v = Math.round(row[k]!);
          this.output[base + k] = v < 0 ? 0 : v > 255 ? 255 : v;
        }
        this.#rows.delete(oy);
      }
    }
    this.#flushed = Math.max(this.#flushed, end);
  }
}
