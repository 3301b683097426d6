/**
 * The cost model of src/bench/cost.ts against spec 9 (shared/spec/model.md): the d24 transformer
 * per scale, the conditioning net and decoder totals, and the VARSR refiner (spec 6, 9.2's
 * 1,496.5 GFLOP), whose terms are also recounted from the refiner's weight shapes.
 */
import { describe, expect, it } from 'vitest';

import { convCosts, refinerCost, stepCosts } from '../../src/bench/cost.js';
import { type ModelConfig, scheduleOf } from '../../src/model/config.js';
import { REFINER_STEPS, type RefinerDims, refinerTensors } from '../../src/model/refiner.js';
import { D24_CONFIG } from '../helpers/configs.js';

const D24: ModelConfig = D24_CONFIG;
const VARSR_REFINER: RefinerDims = { width: 1024, blocks: 6 };

/** MACs of one row through the refiner's linears whose names match, from refinerTensors. */
function macs(cfg: ModelConfig, r: RefinerDims, match: (name: string) => boolean): number {
  return refinerTensors(cfg, r)
    .filter((t) => t.shape.length === 2 && match(t.name))
    .reduce((a, t) => a + t.shape[0]! * t.shape[1]!, 0);
}

describe('stepCosts / convCosts (spec 9.2, d24 with CFG)', () => {
  it('gives the per-scale table and the totals', () => {
    const s = stepCosts(D24, scheduleOf(D24), true);
    expect(s.map((x) => x.pn)).toEqual(D24.patchNums);
    expect(s[0]!.linear).toBeCloseTo(2785.9, 1);
    expect(s[0]!.attention).toBeCloseTo(309.8, 1);
    expect(s[9]!.attention).toBeCloseTo(985.7, 1);
    expect(s[9]!.head).toBeCloseTo(25.77, 2);
    expect(Math.round(s.reduce((a, x) => a + x.total, 0))).toBe(10878);
    const c = convCosts(D24);
    expect(c.condNet).toBeCloseTo(145.4, 1);
    expect(c.decoder).toBeCloseTo(1582.9, 1);
  });
});

describe('refinerCost (spec 6, 9.2)', () => {
  it("gives spec 9.2's 1,496.5 GFLOP per d24 tile as the reference counts it, and the engine's share", () => {
    const c = refinerCost(D24, VARSR_REFINER, true);
    expect(c.rows).toBe(2048);
    expect(c.steps).toBe(10);
    // Spec 6.2: about 73.1 MFLOP per row and step, every linear counted per row and step.
    expect(c.reference / (c.rows * c.steps)).toBeCloseTo(73.07e-3, 5);
    expect(c.reference).toBeCloseTo(1496.5, 1);
    // The engine: 2 ((5n + 2) W^2 + 3 Cv W) per row and step; cond_embed once per row, the time
    // embedding once per step, z's word embedding once per token.
    expect(c.perRowStep).toBe(2 * (32 * 1024 * 1024 + 3 * 32 * 1024));
    expect(c.network).toBeCloseTo(1378.416, 3);
    expect(c.condEmbed).toBeCloseTo(6.442, 3);
    expect(c.timeEmbed).toBeCloseTo(0.0262, 4);
    expect(c.wordEmbed).toBeCloseTo(0.1007, 4);
    expect(c.total).toBeCloseTo(c.network + c.condEmbed + c.timeEmbed + c.wordEmbed, 9);
    expect(c.total).toBeCloseTo(1384.99, 2);
  });

  it('halves the rows without guidance and counts the time embedding once per batch', () => {
    const g = refinerCost(D24, VARSR_REFINER, true);
    const u = refinerCost(D24, VARSR_REFINER, false);
    expect(u.rows).toBe(1024);
    expect(u.network).toBeCloseTo(g.network / 2, 9);
    expect(u.condEmbed).toBeCloseTo(g.condEmbed / 2, 9);
    expect(u.wordEmbed).toBe(g.wordEmbed);
    const b4 = refinerCost(D24, VARSR_REFINER, true, 4);
    expect(b4.rows).toBe(4 * 2048);
    expect(b4.timeEmbed).toBe(g.timeEmbed);
    expect(b4.total).toBeCloseTo(4 * (g.total - g.timeEmbed) + g.timeEmbed, 9);
    expect(b4.reference).toBeCloseTo(4 * g.reference, 9);
  });

  it("matches a recount over the refiner's weight shapes (tiny refiner of varsr-tiny.pth, and d24)", () => {
    // pth_fixtures.pth_tiny: width 32, Cv 4, grid 4; its refiner W 16, 2 blocks.
    const tiny = { ...D24, depth: 1, width: 32, cvae: 4, grid: 4, patchNums: [1, 2, 3, 4] };
    for (const [cfg, r] of [
      [tiny, { width: 16, blocks: 2 }],
      [D24, VARSR_REFINER],
    ] as const) {
      const rows = 2 * cfg.grid * cfg.grid;
      const c = refinerCost(cfg, r, true);
      const embed = (n: string): boolean => n.includes('.time_embed.') || n.includes('.cond_embed.');
      expect(c.perRowStep).toBe(2 * macs(cfg, r, (n) => !embed(n)));
      expect(c.condEmbed * 1e9).toBeCloseTo(rows * 2 * macs(cfg, r, (n) => n.includes('.cond_embed.')), 0);
      expect(c.timeEmbed * 1e9).toBeCloseTo(REFINER_STEPS * 2 * macs(cfg, r, (n) => n.includes('.time_embed.')), 0);
      expect(c.wordEmbed * 1e9).toBeCloseTo(cfg.grid * cfg.grid * 2 * cfg.cvae * cfg.width, 0);
      expect(c.reference * 1e9).toBeCloseTo(rows * REFINER_STEPS * 2 * macs(cfg, r, () => true), 0);
    }
    // Spec 9's memory line: the refiner is 36.6 M parameters.
    const params = refinerTensors(D24, VARSR_REFINER).reduce((a, t) => a + t.shape.reduce((p, d) => p * d, 1), 0);
    expect(params / 1e6).toBeCloseTo(36.6, 1);
  });
});
