/** Configurations the tests state by hand (the oracle detection must reproduce, cost inputs). */
import type { ModelConfig } from '../../src/model/config.js';

/** VARSR d24 (spec 8.4) as detectConfig reports it for a converted checkpoint (no SCA keys). */
export const D24_CONFIG: ModelConfig = Object.freeze({
  depth: 24,
  width: 1536,
  heads: 24,
  mlpHidden: 6144,
  vocab: 4096,
  cvae: 32,
  numClasses: 2,
  patchNums: [1, 2, 3, 4, 6, 9, 13, 18, 24, 32],
  condCh: [32, 128, 256, 512, 1536],
  vqCh: 160,
  vqChMult: [1, 1, 2, 2, 4],
  vqNumRes: 2,
  vqAttnAtLowest: true,
  nPhi: 4,
  quantResi: 0.5,
  ropeBase: 10000,
  sca: false,
  grid: 32,
  hrSize: 512,
  lrSize: 128,
});
