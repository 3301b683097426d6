import { describe, expect, it } from 'vitest';

import {
  DEFAULT_PATCH_NUMS,
  cfgWeight,
  checkPatchNums,
  levelIndices,
  makeSchedule,
  parsePatchNums,
  phiTable,
  ropeGrids,
  ropeTable,
} from '../../src/model/schedule.js';

describe('schedule (d24, spec 1.3)', () => {
  const s = makeSchedule(DEFAULT_PATCH_NUMS);

  it('has the spec sizes', () => {
    expect(s.K).toBe(10);
    expect(s.pnLast).toBe(32);
    expect(s.prefixLen).toBe(1025);
    expect(s.totalTokens).toBe(2240);
    expect(s.seqLen).toBe(3264);
  });

  it('has the spec token offsets', () => {
    expect(s.tokenOffsets).toEqual([0, 1, 5, 14, 30, 66, 147, 316, 640, 1216]);
  });

  it('has the spec per-step Lq and Lk', () => {
    expect(s.steps.map((st) => st.lq)).toEqual([1025, 4, 9, 16, 36, 81, 169, 324, 576, 1024]);
    expect(s.steps.map((st) => st.lk)).toEqual([1025, 1029, 1038, 1054, 1090, 1171, 1340, 1664, 2240, 3264]);
  });

  it('has the spec sequence blocks', () => {
    expect(s.steps.map((st) => [st.seqBegin, st.seqEnd])).toEqual([
      [0, 1025],
      [1025, 1029],
      [1029, 1038],
      [1038, 1054],
      [1054, 1090],
      [1090, 1171],
      [1171, 1340],
      [1340, 1664],
      [1664, 2240],
      [2240, 3264],
    ]);
  });

  it('has the spec Phi table, with no Phi at the last scale', () => {
    expect(phiTable(10, 4)).toEqual([0, 0, 1, 1, 1, 2, 2, 3, 3, 3]);
    expect(s.steps.map((st) => st.phi)).toEqual([0, 0, 1, 1, 1, 2, 2, 3, 3, -1]);
  });

  it('has level indices 0 on the prefix and si on scale si', () => {
    const lvl = levelIndices(s);
    expect(lvl.length).toBe(3264);
    expect(lvl[0]).toBe(0);
    expect(lvl[1024]).toBe(0);
    expect(lvl[1025]).toBe(1);
    expect(lvl[1028]).toBe(1);
    expect(lvl[1029]).toBe(2);
    expect(lvl[2239]).toBe(8);
    expect(lvl[2240]).toBe(9);
    expect(lvl[3263]).toBe(9);
  });

  it('builds the RoPE grid list and coordinates of spec 4.2', () => {
    expect(ropeGrids(s)).toEqual([32, 1, 2, 3, 4, 6, 9, 13, 18, 24, 32]);
    const r = ropeTable(s);
    expect(r.length).toBe(3264 * 2);
    // LR token (r=1, c=2): integer coordinates.
    expect([r[2 * 34], r[2 * 34 + 1]]).toEqual([1, 2]);
    // Class token: (0, 0).
    expect([r[2 * 1024], r[2 * 1024 + 1]]).toEqual([0, 0]);
    // Scale 1 (pn=2) token (1, 1): (16, 16).
    expect([r[2 * 1028], r[2 * 1028 + 1]]).toEqual([16, 16]);
    // Scale 2 (pn=3) token (1, 2): fp32 (1/3)*32 and (2/3)*32.
    const third = Math.fround(Math.fround(1 / 3) * 32);
    const twoThirds = Math.fround(Math.fround(2 / 3) * 32);
    expect(r[2 * (1029 + 5)]).toBe(third);
    expect(r[2 * (1029 + 5) + 1]).toBe(twoThirds);
    expect(third).toBeCloseTo(10.6667, 4);
    // Scale 8 (pn=24) token (3, 0): 3/24*32 = 4 exactly.
    expect(r[2 * (1664 + 3 * 24)]).toBe(4);
    // Last position: scale 9 (31, 31) = (31, 31).
    expect([r[2 * 3263], r[2 * 3263 + 1]]).toEqual([31, 31]);
  });

  it('grows the CFG weight linearly to cfg', () => {
    expect(cfgWeight(6, 0, 10)).toBe(0);
    expect(cfgWeight(6, 9, 10)).toBe(6);
    expect(cfgWeight(6, 3, 10)).toBeCloseTo(2, 12);
  });
});

describe('schedule (tiny 256-px)', () => {
  const pns = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16];
  const s = makeSchedule(pns);

  it('derives prefix, offsets and lengths', () => {
    expect(s.prefixLen).toBe(257);
    expect(s.totalTokens).toBe(1 + 4 + 9 + 16 + 25 + 36 + 64 + 100 + 169 + 256);
    expect(s.seqLen).toBe(257 + 680 - 1);
    expect(s.tokenOffsets).toEqual([0, 1, 5, 14, 30, 55, 91, 155, 255, 424]);
    expect(s.steps[0]!.lq).toBe(257);
    expect(s.steps[1]!.seqBegin).toBe(257);
    expect(s.steps[9]!.seqEnd).toBe(s.seqLen);
    expect(s.steps.map((st) => st.phi)).toEqual([0, 0, 1, 1, 1, 2, 2, 3, 3, -1]);
  });

  it('puts consecutive steps end to end', () => {
    for (let i = 1; i < s.K; i++) expect(s.steps[i]!.seqBegin).toBe(s.steps[i - 1]!.seqEnd);
  });
});

describe('phiTable', () => {
  it('uses linspace(1/(2n), 1-1/(2n)) when n != 4', () => {
    expect(phiTable(10, 1)).toEqual(new Array(10).fill(0));
    // n = 2: ticks 0.25, 0.75.
    expect(phiTable(5, 2)).toEqual([0, 0, 0, 1, 1]);
    // n = K: one Phi per scale.
    expect(phiTable(6, 6)).toEqual([0, 1, 2, 3, 4, 5]);
  });
});

describe('patch-number parsing', () => {
  it('parses metadata lists', () => {
    expect(parsePatchNums('1,2,3,4,6,9,13,18,24,32')).toEqual([...DEFAULT_PATCH_NUMS]);
    expect(parsePatchNums(' 1, 2 ,4')).toEqual([1, 2, 4]);
    expect(parsePatchNums('1,2,x')).toBeUndefined();
    expect(parsePatchNums('')).toBeUndefined();
  });

  it('rejects invalid lists', () => {
    expect(checkPatchNums([1])).toMatch(/at least 2/);
    expect(checkPatchNums([2, 3])).toMatch(/first scale/);
    expect(checkPatchNums([1, 3, 3])).toMatch(/increasing/);
    expect(checkPatchNums([1, 2.5, 3])).toMatch(/integers/);
    expect(checkPatchNums([1, 2, 4])).toBeUndefined();
    expect(() => makeSchedule([1, 1])).toThrow('Expected strictly increasing sizes for patchNums but received [1,1]');
  });
});
