import math

import numpy as np
import pytest
import torch

from avtrain.config import PATCH_NUMS_512, tiny
from avtrain.golden import randomize_transformer, randomize_vqvae
from avtrain.model import AlignVAR, detect_sca, sca_keys, strip_ignored
from avtrain.resample import preprocess_lr
from avtrain.vqvae import VQVAE


def _lr(cfg, B=2, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:cfg.lr_size, 0:cfg.lr_size]
    base = 128 + 80 * np.sin(xx / 4.0)[..., None] * np.array([1.0, 0.5, -0.7])
    img = np.clip(base[None] + rng.normal(0, 20, (B, cfg.lr_size, cfg.lr_size, 3)), 0, 255)
    return preprocess_lr(img.astype(np.uint8), cfg.hr_size)


@pytest.fixture(scope="module")
def models():
    cfg = tiny()
    g = torch.Generator().manual_seed(3)
    var = AlignVAR(cfg).eval()
    vae = VQVAE(cfg, with_encoder=False).eval()
    randomize_transformer(var, g)
    randomize_vqvae(vae, g)
    var_n = AlignVAR(cfg.replace(sca=False)).eval()
    var_n.load_checked({k: v for k, v in var.state_dict().items() if k not in sca_keys(cfg.depth)})
    return cfg, var, var_n, vae


@pytest.mark.parametrize("which", ["sca", "nosca"])
def test_kv_cache_inference_equals_block_causal_training(models, which):
    cfg, var, var_n, vae = models
    m = var if which == "sca" else var_n
    lr_m11, _, lr01 = _lr(cfg)
    _, idx, inter = m.generate(vae, lr_m11, lr01, cfg_scale=0.0, top_k=1, return_intermediates=True)
    logits = m.forward_train(lr_m11, lr01, torch.zeros(2, dtype=torch.long), idx, vae)
    assert logits.shape == (2, cfg.L, cfg.vocab)
    for si, (o, pn) in enumerate(zip(cfg.token_offsets, cfg.patch_nums)):
        assert torch.allclose(inter["scales"][si]["G"], logits[:, o:o + pn * pn], atol=2e-5), si


def test_cfg_mix_and_shapes_in_generate(models):
    cfg, var, _, vae = models
    lr_m11, _, lr01 = _lr(cfg)
    f_hat, idx, inter = var.generate(vae, lr_m11, lr01, cfg_scale=3.0, top_k=5, top_p=0.9, seed=7,
                                     return_intermediates=True)
    assert f_hat.shape == (2, cfg.cvae, cfg.grid, cfg.grid)
    assert inter["dec"].shape == (2, 3, cfg.hr_size, cfg.hr_size)
    assert len(inter["sg"]) == len(inter["mask"]) == 10 and inter["key_bias"].shape == (2, cfg.T)
    for si, s in enumerate(inter["scales"]):
        rows = 1 if si == 0 else cfg.patch_nums[si] ** 2
        assert s["G"].shape == (2, rows, cfg.vocab) and s["Z"].shape == (4, rows, cfg.vocab)
        t = 3.0 * si / 9
        assert torch.allclose(s["G"], (1 + t) * s["Z"][:2] - t * s["Z"][2:], atol=1e-5)
        assert idx[si].shape == (2, cfg.patch_nums[si] ** 2)


def test_block_causal_mask_in_training(models):
    cfg, var, _, vae = models
    lr_m11, _, lr01 = _lr(cfg)
    gt = [torch.randint(0, cfg.vocab, (2, p * p), generator=torch.Generator().manual_seed(p)) for p in cfg.patch_nums]
    lab = torch.zeros(2, dtype=torch.long)
    a = var.forward_train(lr_m11, lr01, lab, gt, vae)
    gt2 = [t.clone() for t in gt]
    gt2[5] = (gt2[5] + 1) % cfg.vocab  # changes the inputs of scales 6..9 only
    b = var.forward_train(lr_m11, lr01, lab, gt2, vae)
    o6 = cfg.token_offsets[6]
    assert torch.equal(a[:, :o6], b[:, :o6])
    assert not torch.allclose(a[:, o6:], b[:, o6:])


def test_nosca_equals_sca_with_neutral_parameters(models):
    """m = 1, gamma = 0, beta = 0 (the VARSR path) must equal an SCA model whose gamma is 0
    and whose beta = softplus(lambda) is exactly 0."""
    cfg, var, var_n, vae = models
    neutral = AlignVAR(cfg).eval()
    neutral.load_state_dict(var.state_dict())
    with torch.no_grad():
        neutral.sca.gamma.zero_()
        for blk in neutral.blocks:
            blk.attn.mask_lambda.fill_(-1e4)
    lr_m11, _, lr01 = _lr(cfg)
    _, _, ia = neutral.generate(vae, lr_m11, lr01, cfg_scale=2.0, top_k=1, return_intermediates=True)
    _, _, ib = var_n.generate(vae, lr_m11, lr01, cfg_scale=2.0, top_k=1, return_intermediates=True)
    for sa, sb in zip(ia["scales"], ib["scales"]):
        assert torch.equal(sa["Z"], sb["Z"]) and torch.equal(sa["idx"], sb["idx"])
    _, _, ic = var.generate(vae, lr_m11, lr01, cfg_scale=2.0, top_k=1, return_intermediates=True)
    assert not torch.allclose(ic["scales"][9]["Z"], ib["scales"][9]["Z"])


def test_key_set_rules(models):
    cfg, var, var_n, _ = models
    sd = var.state_dict()
    assert detect_sca(sd.keys()) is True
    assert detect_sca(var_n.state_dict().keys()) is False
    partial = {k: v for k, v in sd.items() if k != "sca.gamma"}
    with pytest.raises(ValueError, match="partial"):
        detect_sca(partial.keys())
    with pytest.raises(ValueError, match="partial"):
        AlignVAR.from_state_dict(partial, cfg)
    no_lambda = {k: v for k, v in sd.items() if k != "blocks.1.attn.mask_lambda"}
    with pytest.raises(ValueError):
        AlignVAR(cfg).load_checked(no_lambda)
    with pytest.raises(ValueError):
        AlignVAR(cfg).load_checked(var_n.state_dict())  # SCA model, VARSR weights
    # a VARSR-style dict with refiner and recomputable buffers loads as the no-SCA model
    varsr = dict(var_n.state_dict())
    varsr.update({"decoder_norm.weight": torch.ones(cfg.width), "diffloss.net.input_proj.weight": torch.zeros(4, 4),
                  "attn_bias_for_masking": torch.zeros(1, 1, 2, 2), "lvl_1L": torch.zeros(1, 2, dtype=torch.long),
                  "blocks.0.attn.zero_k_bias": torch.zeros(cfg.width)})
    assert set(strip_ignored(varsr)) == set(var_n.state_dict())
    m = AlignVAR.from_state_dict(varsr, cfg)
    assert m.cfg.sca is False and not hasattr(m, "sca")


def test_init_follows_spec():
    torch.manual_seed(0)
    cfg = tiny()
    m = AlignVAR(cfg)
    C = cfg.width
    std = math.sqrt(1 / (3 * C))
    blk = m.blocks[0]
    assert torch.allclose(blk.attn.scale_mul_1H11, torch.full((1, cfg.heads, 1, 1), math.log(4.0)))
    assert torch.equal(blk.attn.mask_lambda, torch.full((cfg.heads,), -3.0))
    # trunc_normal_ truncates at +-2 absolute (as the reference), so compare standard deviations
    def rel(t, s):
        return abs(t.std().item() / s - 1)
    assert rel(blk.ada_lin[1].weight[: 2 * C], std * 1e-5) < 0.05
    assert rel(blk.ada_lin[1].weight[2 * C:], std * 0.5) < 0.05
    assert rel(m.head.weight, std * 0.02) < 0.05
    assert rel(m.word_embed.weight, std) < 0.1
    assert rel(blk.attn.proj.weight, std / math.sqrt(2 * cfg.depth)) < 0.05
    assert rel(blk.ffn.fc2.weight, std / math.sqrt(2 * cfg.depth)) < 0.05
    assert rel(m.con_embedding.blocks[3].weight, 0.02) < 0.05
    assert blk.ada_lin[1].bias.abs().max() == 0 and m.head.bias.abs().max() == 0
    assert torch.equal(m.sca.gamma, torch.full((10,), 0.01))
    w4 = m.sca.mask[4].weight
    assert w4[0, :32].abs().max() == 0 and w4[0, 32, 0, 0] == 4.0 and m.sca.mask[4].bias.item() == 0.0
    assert blk.attn.q_bias.abs().max() == 0 and blk.attn.v_bias.abs().max() == 0


def test_512_schedule_end_to_end():
    cfg = tiny().replace(patch_nums=PATCH_NUMS_512)
    assert (cfg.hr_size, cfg.lr_size, cfg.T) == (512, 128, 3264)
    torch.manual_seed(0)
    var = AlignVAR(cfg).eval()
    vae = VQVAE(cfg, with_encoder=False).eval()
    lr_m11, _, lr01 = _lr(cfg, B=1)
    f_hat, idx, inter = var.generate(vae, lr_m11, lr01, cfg_scale=6.0, top_k=1, return_intermediates=True)
    assert f_hat.shape == (1, cfg.cvae, 32, 32) and inter["dec"].shape == (1, 3, 512, 512)
    assert [i.shape[1] for i in idx] == [p * p for p in PATCH_NUMS_512]


def test_variance_preserving_cond_init_lets_the_lr_reach_the_tokens():
    """With the spec's 0.02 init a narrow conditioning net's tokens barely depend on the image;
    the He init keeps the per-position spread across images at the scale of the embeddings."""
    import avtrain.presets_default  # noqa: F401  (registers the 'default' preset)
    from avtrain.config import preset
    from avtrain.model import AlignVAR

    cfg = preset("default")
    torch.manual_seed(0)
    var = AlignVAR(cfg)
    x = torch.rand(3, 3, cfg.hr_size, cfg.hr_size) * 2 - 1
    with torch.no_grad():
        spec_spread = var.con_embedding(x).std(0).mean().item()
        var.con_embedding.init_variance_preserving()
        he_spread = var.con_embedding(x).std(0).mean().item()
    assert spec_spread < 1e-3 * var.pos_start.std().item()
    assert he_spread > var.pos_start.std().item()
