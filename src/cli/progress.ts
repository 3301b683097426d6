/**
 * What `alignvar upscale` tells the user while a batch runs, on stderr: one cli-progress bar for
 * the whole batch on a terminal (files, tiles, rate, ETA; per-file lines printed above it), plain
 * lines otherwise, nothing with `--quiet` but errors. `--json` lines go to stdout separately.
 */
import cliProgress from 'cli-progress';

/** How progress is shown. */
export type ProgressMode = 'bar' | 'lines' | 'none';

function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--';
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** The batch's progress display. */
export class BatchProgress {
  readonly #mode: ProgressMode;
  readonly #filesTotal: number;
  #tilesTotal: number;
  #filesDone = 0;
  #tilesFinished = 0;
  readonly #fileTiles = new Map<number, number>();
  #startedAt = 0;
  readonly #multi: cliProgress.MultiBar | undefined;
  readonly #bar: cliProgress.SingleBar | undefined;

  /**
   * @param mode - `'bar'` (stderr is a terminal), `'lines'` or `'none'`.
   * @param filesTotal - Files to upscale (skipped ones not counted).
   * @param tilesTotal - Their tiles.
   */
  constructor(mode: ProgressMode, filesTotal: number, tilesTotal: number) {
    this.#mode = mode;
    this.#filesTotal = filesTotal;
    this.#tilesTotal = Math.max(1, tilesTotal);
    this.#startedAt = performance.now();
    if (mode === 'bar' && filesTotal > 0) {
      this.#multi = new cliProgress.MultiBar(
        {
          stream: process.stderr,
          format:
            '{bar} {percentage}% | files {files}/{filesTotal} | tiles {tiles}/{tilesTotal} | {rate} tiles/s | ETA {eta}',
          hideCursor: true,
          clearOnComplete: false,
          fps: 5,
          barsize: 20,
        },
        cliProgress.Presets.shades_classic,
      );
      this.#bar = this.#multi.create(this.#tilesTotal, 0, this.#payload());
    }
  }

  #payload(): Record<string, string | number> {
    const live = [...this.#fileTiles.values()].reduce((a, b) => a + b, 0);
    const done = this.#tilesFinished + live;
    const secs = (performance.now() - this.#startedAt) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    return {
      files: this.#filesDone,
      filesTotal: this.#filesTotal,
      tiles: Math.floor(done),
      tilesTotal: this.#tilesTotal,
      rate: rate.toFixed(rate < 10 ? 2 : 1),
      eta: done > 0 ? formatSeconds((this.#tilesTotal - done) / rate) : '--',
    };
  }

  #render(): void {
    if (this.#bar === undefined) return;
    const p = this.#payload();
    this.#bar.update(Math.min(this.#tilesTotal, Number(p.tiles)), p);
  }

  /**
   * A file's progress: `tiles` (fractional) of its tiles are done.
   *
   * @param id - The file's index in the batch.
   * @param tiles - Tiles done, counting scales of running tiles as fractions.
   */
  update(id: number, tiles: number): void {
    this.#fileTiles.set(id, tiles);
    this.#render();
  }

  /**
   * A file is finished (done or failed).
   *
   * @param id - The file's index.
   * @param tiles - Its tile count, added to the finished total.
   * @param line - What to print about it (`undefined`: nothing); errors are printed even with
   *   `'none'` when `always` is set.
   * @param always - Print the line in every mode.
   */
  finish(id: number, tiles: number, line: string | undefined, always = false): void {
    this.#fileTiles.delete(id);
    this.#filesDone++;
    this.#tilesFinished += tiles;
    if (line !== undefined && (always || this.#mode !== 'none')) this.log(line);
    this.#render();
  }

  /** Prints a line to stderr (above the bar on a terminal). */
  log(line: string): void {
    if (this.#multi !== undefined) this.#multi.log(`${line}\n`);
    else process.stderr.write(`${line}\n`);
  }

  /** Draws the bar a last time and ends it, then prints the lines still pending. */
  stop(): void {
    if (this.#multi === undefined) return;
    // MultiBar.log() holds lines until the next redraw; stop() does not print them, so take
    // them out (cli-progress keeps them in `loggingBuffer`) and print them after the bar is gone.
    const pending = (this.#multi as unknown as { loggingBuffer?: string[] }).loggingBuffer?.splice(0) ?? [];
    this.#render(); // the final counts: stop() draws the bar once more and leaves it on screen
    this.#multi.stop();
    for (const line of pending) process.stderr.write(line);
  }
}
