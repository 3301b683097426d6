import { describe, expect, it } from 'vitest';

import {
  type ModelConfig,
  type TensorShapeInfo,
  detectConfig,
  expectedTensors,
  scaTensorNames,
  scheduleOf,
} from '../../src/model/config.js';
import { D24_CONFIG } from '../helpers/configs.js';

/** The tiny golden config of training/avtrain/config.py. */
const TINY: ModelConfig = {
  depth: 2,
  width: 64,
  heads: 2,
  mlpHidden: 256,
  vocab: 64,
  cvae: 16,
  numClasses: 2,
  patchNums: [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
  condCh: [8, 8, 16, 16, 32],
  vqCh: 32,
  vqChMult: [1, 1, 1, 1, 2],
  vqNumRes: 1,
  vqAttnAtLowest: true,
  nPhi: 4,
  quantResi: 0.5,
  ropeBase: 10000,
  sca: true,
  grid: 16,
  hrSize: 256,
  lrSize: 64,
};

const TINY_META: Record<string, string> = {
  depth: '2',
  width: '64',
  heads: '2',
  mlp_ratio: '4.0',
  vocab: '64',
  cvae: '16',
  vq_ch: '32',
  vq_ch_mult: '1,1,1,1,2',
  vq_num_res: '1',
  vq_attn_at_lowest: '1',
  cond_ch: '8,8,16,16,32',
  patch_nums: '1,2,3,4,5,6,8,10,13,16',
  num_classes: '2',
  share_quant_resi: '4',
  quant_resi: '0.5',
  sca: '1',
  rope_base: '10000.0',
  format: 'alignvar',
};

function tensorsOf(cfg: ModelConfig, extra: Record<string, number[]> = {}): Map<string, TensorShapeInfo> {
  const m = new Map<string, TensorShapeInfo>();
  for (const e of expectedTensors(cfg)) m.set(e.name, { shape: e.shape, dtype: 'F32' });
  for (const [k, v] of Object.entries(extra)) m.set(k, { shape: v, dtype: 'F32' });
  return m;
}

describe('detectConfig', () => {
  it('reads the tiny config from metadata and checks every tensor', () => {
    const cfg = detectConfig({ metadata: TINY_META, tensors: tensorsOf(TINY) }, 'tiny.safetensors');
    expect(cfg).toEqual(TINY);
    expect(scheduleOf(cfg).seqLen).toBe(936);
  });

  it('derives the tiny config from shapes alone (patch_nums from metadata)', () => {
    const cfg = detectConfig(
      { metadata: { patch_nums: TINY_META.patch_nums! }, tensors: tensorsOf(TINY) },
      'tiny.safetensors',
    );
    expect(cfg).toEqual(TINY);
  });

  it('derives the d24 config of spec 8.4 from shapes with the default schedule', () => {
    const d24: ModelConfig = D24_CONFIG;
    // A converted VARSR checkpoint: no metadata, refiner and encoder keys present (ignored).
    const tensors = tensorsOf(d24, {
      'diffloss.net.input_proj.weight': [1024, 32],
      'decoder_norm.weight': [1536],
      'encoder.conv_in.weight': [160, 3, 3, 3],
      'quant_conv.weight': [32, 32, 3, 3],
    });
    expect(detectConfig({ tensors }, 'varsr.safetensors')).toEqual(d24);
    // Spec 8.2/8.3 key counts: the transformer without refiner and the decoder side.
    const names = expectedTensors(d24).map((e) => e.name);
    expect(names.filter((n) => n.startsWith('blocks.0.')).length).toBe(12);
    expect(new Set(names).size).toBe(names.length);
  });

  it('detects SCA off when no SCA tensor is present', () => {
    const cfg = { ...TINY, sca: false };
    const meta = { ...TINY_META, sca: '0' };
    expect(detectConfig({ metadata: meta, tensors: tensorsOf(cfg) }, 'x').sca).toBe(false);
  });

  it('rejects a partial SCA set, listing the missing tensors', () => {
    const tensors = tensorsOf(TINY);
    tensors.delete('sca.gamma');
    tensors.delete('blocks.1.attn.mask_lambda');
    expect(() => detectConfig({ metadata: TINY_META, tensors }, 'x.safetensors')).toThrow(
      'Invalid safetensors file x.safetensors: SCA tensors are only partly present; missing: sca.gamma, blocks.1.attn.mask_lambda',
    );
    expect(scaTensorNames(2)).toContain('blocks.1.attn.mask_lambda');
  });

  it('rejects metadata sca=1 without SCA tensors', () => {
    expect(() => detectConfig({ metadata: TINY_META, tensors: tensorsOf({ ...TINY, sca: false }) }, 'x')).toThrow(
      /metadata sca=1 but the SCA tensors are missing: sca\.mask\.0\.weight/,
    );
  });

  it('names the first tensor whose shape does not fit', () => {
    const tensors = tensorsOf(TINY);
    tensors.set('blocks.1.ffn.fc2.weight', { shape: [64, 128], dtype: 'F16' });
    tensors.set('head.bias', { shape: [65], dtype: 'F16' });
    expect(() => detectConfig({ metadata: TINY_META, tensors }, 'x.safetensors')).toThrow(
      'Invalid safetensors file x.safetensors: tensor "blocks.1.ffn.fc2.weight": expected shape [64, 256] but found [64, 128]',
    );
  });

  it('names a tensor that contradicts the metadata', () => {
    const meta = { ...TINY_META, width: '96' };
    expect(() => detectConfig({ metadata: meta, tensors: tensorsOf(TINY) }, 'x')).toThrow(
      'metadata width="96" contradicts the tensors: word_embed.weight is [64, 16] (width first)',
    );
  });

  it('names a missing tensor', () => {
    const tensors = tensorsOf(TINY);
    tensors.delete('decoder.up.4.attn.1.proj_out.bias');
    expect(() => detectConfig({ metadata: TINY_META, tensors }, 'x')).toThrow(
      'tensor "decoder.up.4.attn.1.proj_out.bias": missing (expected shape [64])',
    );
  });

  it('rejects unsupported dtypes and bad metadata', () => {
    const tensors = tensorsOf(TINY);
    tensors.set('head.bias', { shape: [64], dtype: 'I64' });
    expect(() => detectConfig({ metadata: TINY_META, tensors }, 'x')).toThrow(
      'tensor "head.bias": dtype I64 is not supported (expected F32, F16 or BF16)',
    );
    expect(() =>
      detectConfig({ metadata: { ...TINY_META, patch_nums: '1,3,2' }, tensors: tensorsOf(TINY) }, 'x'),
    ).toThrow('metadata patch_nums="1,3,2": expected strictly increasing sizes');
    expect(() => detectConfig({ metadata: { ...TINY_META, depth: 'two' }, tensors: tensorsOf(TINY) }, 'x')).toThrow(
      'Expected an integer in [1, 1000] for metadata depth but received "two"',
    );
  });
});
