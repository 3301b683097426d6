"""d24 shapes and parameter counts (spec 8.2, 8.3, 9.3, 11.7), built on the meta device."""

import pytest

from avtrain.config import ModelConfig, d24
from avtrain.model import AlignVAR, sca_keys
from avtrain.vqvae import VQVAE, vqvae_inference_keys


def _count(module, prefix=""):
    return sum(p.numel() for n, p in module.named_parameters() if n.startswith(prefix))


@pytest.fixture(scope="module")
def d24_models():
    cfg = d24()
    return AlignVAR(cfg, device="meta"), AlignVAR(cfg.replace(sca=False), device="meta"), VQVAE(cfg, device="meta")


def test_d24_transformer_counts(d24_models):
    var, var_nosca, _ = d24_models
    assert _count(var_nosca) == 1_065_327_840
    assert _count(var) - _count(var_nosca) == 12_572
    assert _count(var, "sca.") + 24 * 24 == 12_572
    assert _count(var_nosca, "con_embedding.") == 32_934_560
    assert _count(var_nosca, "blocks.") == 24 * 42_488_856
    assert _count(var_nosca, "head_nm.") == 4_721_664
    assert _count(var_nosca, "head.") == 6_295_552
    blk = var_nosca.blocks[0]
    assert blk.attn.mat_qkv.weight.numel() == 7_077_888
    assert sum(p.numel() for p in blk.ada_lin.parameters()) == 14_164_992


def test_d24_transformer_key_shapes(d24_models):
    var, var_nosca, _ = d24_models
    sd = {k: tuple(v.shape) for k, v in var.state_dict().items()}
    expect = {
        "con_embedding.conv_in.weight": (32, 3, 3, 3),
        "con_embedding.blocks.0.weight": (32, 32, 3, 3),
        "con_embedding.blocks.1.weight": (128, 32, 3, 3),
        "con_embedding.blocks.6.weight": (512, 512, 3, 3),
        "con_embedding.blocks.7.weight": (1536, 512, 3, 3),
        "con_embedding.conv_out.weight": (1536, 1536, 3, 3),
        "word_embed.weight": (1536, 32),
        "class_emb.weight": (2, 1536),
        "pos_start": (1, 1025, 1536),
        "lvl_embed.weight": (10, 1536),
        "blocks.23.attn.mat_qkv.weight": (4608, 1536),
        "blocks.0.attn.q_bias": (1536,),
        "blocks.0.attn.v_bias": (1536,),
        "blocks.0.attn.scale_mul_1H11": (1, 24, 1, 1),
        "blocks.0.attn.proj.weight": (1536, 1536),
        "blocks.0.ffn.fc1.weight": (6144, 1536),
        "blocks.0.ffn.fc2.weight": (1536, 6144),
        "blocks.0.ada_lin.1.weight": (9216, 1536),
        "head_nm.ada_lin.1.weight": (3072, 1536),
        "head.weight": (4096, 1536),
        "sca.mask.0.weight": (32, 9, 3, 3),
        "sca.mask.2.weight": (32, 32, 3, 3),
        "sca.mask.4.weight": (1, 33, 1, 1),
        "sca.mask.4.bias": (1,),
        "sca.level_embed.weight": (10, 8),
        "sca.gamma": (10,),
        "blocks.5.attn.mask_lambda": (24,),
    }
    for k, shape in expect.items():
        assert sd[k] == shape, k
    assert "blocks.0.attn.mat_qkv.bias" not in sd
    assert not any(k.endswith("zero_k_bias") or k in ("lvl_1L", "attn_bias_for_masking") for k in sd)
    assert set(sca_keys(24)) <= set(sd)
    assert not any(k.startswith("sca.") or "mask_lambda" in k for k in var_nosca.state_dict())


def test_d24_vqvae_counts_and_keys(d24_models):
    _, _, vae = d24_models
    assert _count(vae) == 108_948_355
    assert _count(vae, "encoder.") == 44_107_872
    assert _count(vae, "decoder.") == 64_653_923
    assert _count(vae, "quantize.") == 168_064
    assert _count(vae, "quant_conv.") == 9_248 and _count(vae, "post_quant_conv.") == 9_248
    sd = vae.state_dict()
    assert len(sd) == 324  # 323 params + ema_vocab_hit_SV (spec 8.3)
    inf = vqvae_inference_keys(sd.keys())
    assert sum(sd[k].numel() for k in inf) == 64_831_235
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["encoder.down.2.block.0.nin_shortcut.weight"] == (320, 160, 1, 1)
    assert shapes["encoder.down.4.block.0.nin_shortcut.weight"] == (640, 320, 1, 1)
    assert shapes["encoder.down.4.attn.1.qkv.weight"] == (1920, 640, 1, 1)
    assert shapes["encoder.down.3.downsample.conv.weight"] == (320, 320, 3, 3)
    assert shapes["decoder.up.3.block.0.nin_shortcut.weight"] == (320, 640, 1, 1)
    assert shapes["decoder.up.1.block.0.nin_shortcut.weight"] == (160, 320, 1, 1)
    assert shapes["decoder.up.4.attn.2.proj_out.weight"] == (640, 640, 1, 1)
    assert [shapes[f"decoder.up.{l}.upsample.conv.weight"][0] for l in (1, 2, 3, 4)] == [160, 320, 320, 640]
    assert "decoder.up.0.upsample.conv.weight" not in shapes
    assert shapes["decoder.conv_out.weight"] == (3, 160, 3, 3)
    assert shapes["quantize.embedding.weight"] == (4096, 32)
    assert shapes["quantize.quant_resi.qresi_ls.3.weight"] == (32, 32, 3, 3)
    assert shapes["quantize.ema_vocab_hit_SV"] == (10, 4096)


def test_spec_9_3_small_counts():
    # spec 9.3: depth 6, C 384, H 6, VQVAE ch 64, conditioning channels unchanged
    cfg = ModelConfig(depth=6, width=384, heads=6, vq_ch=64, sca=False)
    var = AlignVAR(cfg, device="meta")
    vae = VQVAE(cfg, device="meta")
    assert _count(var) == 35_249_220
    assert _count(var, "blocks.0.") == 2_659_590
    assert _count(var, "con_embedding.") == 17_008_160
    assert _count(vae, "decoder.") == 10_403_267
    assert _count(vae, "encoder.") == 7_112_352
