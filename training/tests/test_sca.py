import math

import numpy as np
import torch

from avtrain.config import tiny
from avtrain.losses import ce_loss
from avtrain.model import AlignVAR
from avtrain.resample import preprocess_lr
from avtrain.sca import (
    MaskGenerator, binomial_blur, expand2, key_bias, mask_sequence, reduce2, structural_guidance,
    structural_map, token_weights,
)
from avtrain.vqvae import VQVAE


def _edge_image(h=64, w=64):
    img = np.full((1, 3, h, w), 0.2)
    img[..., w // 2:] = 0.8  # vertical step edge at column w/2
    return torch.from_numpy(img)


def test_blur_reflect101_and_pyramid_sizes():
    x = torch.zeros(1, 5, 5, dtype=torch.float64)
    x[0, 1, 1] = 16.0 * 16.0
    y = binomial_blur(x)
    # impulse at index 1 with reflect-101 (-1 -> 1): out[0] gets taps t=1 and t=3 (4+4),
    # out[1] gets t=0 (mirrored) and t=2 (1+6), out[2] gets 4, out[3] gets 1
    row = torch.tensor([8.0, 7.0, 4.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(y[0], torch.outer(row, row))
    g = torch.rand(1, 13, 9, dtype=torch.float64)
    assert reduce2(g).shape == (1, 7, 5)
    assert expand2(reduce2(g), 13, 9).shape == (1, 13, 9)
    # constant images are fixed points of blur, REDUCE and (away from parity effects) EXPAND
    c = torch.full((1, 8, 8), 0.5, dtype=torch.float64)
    assert torch.allclose(binomial_blur(c), c) and torch.allclose(reduce2(c), torch.full((1, 4, 4), 0.5, dtype=torch.float64))


def test_structural_guidance_edge_high_flat_zero():
    sn = structural_map(_edge_image())[0]
    assert sn.shape == (64, 64)
    assert math.isclose(sn.max().item(), 1.0) and sn.min().item() == 0.0
    assert sn[:, 28:36].mean() > 0.3  # at the edge
    assert sn[:, :20].abs().max() < 1e-12 and sn[:, 44:].abs().max() < 1e-12  # flat regions are exactly 0
    sg = structural_guidance(_edge_image().float(), tiny().patch_nums)
    assert [tuple(s.shape) for s in sg] == [(1, 16, 16)] + [(1, p, p) for p in tiny().patch_nums[1:]]
    assert torch.allclose(sg[0], sg[-1])  # SG_pre and SG_9 are the same map
    for s in sg:
        assert s.dtype == torch.float32 and 0.0 <= s.min() and s.max() <= 1.0
        if s.shape[-1] >= 4:
            assert s[0, :, 0].max() == 0.0  # the leftmost area window lies in the flat part
    flat = structural_guidance(torch.full((1, 3, 64, 64), 0.37), tiny().patch_nums)
    assert all(s.abs().max() == 0 for s in flat)


def test_mask_generator_init_is_sigmoid_4sg():
    cfg = tiny()
    mg = MaskGenerator(cfg)
    mg.init_weights()
    sg = structural_guidance(_edge_image().float(), cfg.patch_nums)
    masks = mg.level_masks(sg)
    for s, m in zip(sg, masks):
        assert torch.allclose(m, torch.sigmoid(4 * s), atol=1e-6)
    assert torch.allclose(mg.gamma, torch.full((10,), 0.01))


def test_sequence_mask_key_bias_and_token_weights():
    cfg = tiny()
    masks = [torch.rand(2, cfg.grid, cfg.grid)] + [torch.rand(2, p, p) for p in cfg.patch_nums[1:]]
    m = mask_sequence(masks)
    b = key_bias(masks)
    gamma = torch.linspace(0.1, 1.0, 10)
    w = token_weights(masks, gamma, cfg)
    assert m.shape == b.shape == w.shape == (2, cfg.T)
    n = cfg.n_lr_tokens
    assert torch.equal(m[:, n], torch.ones(2)) and torch.equal(b[:, n], torch.zeros(2)) and torch.equal(w[:, n], torch.ones(2))
    assert torch.allclose(b[:, :n], torch.log(masks[0].reshape(2, -1) + 1e-6))
    b0, b1 = cfg.begin_ends[5]
    assert torch.allclose(m[:, b0:b1], masks[5].reshape(2, -1))
    assert torch.allclose(w[:, b0:b1], 1 + gamma[5] * masks[5].reshape(2, -1))
    assert torch.allclose(w[:, :n], 1 + gamma[0] * masks[0].reshape(2, -1))


def test_gradients_reach_mask_generator_gamma_and_lambda():
    torch.manual_seed(0)
    cfg = tiny()
    var = AlignVAR(cfg).train()
    vae = VQVAE(cfg, with_encoder=False).eval()
    lr = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    lr_m11, _, lr01 = preprocess_lr(lr, cfg.hr_size)
    gt = [torch.randint(0, cfg.vocab, (1, p * p)) for p in cfg.patch_nums]
    logits = var.forward_train(lr_m11, lr01, torch.zeros(1, dtype=torch.long), gt, vae)
    ce, _ = ce_loss(logits, torch.cat(gt, 1), cfg.patch_nums)
    ce.backward()
    params = dict(var.named_parameters())
    # At init mask.4 is zero on the 32 feature channels, so only mask.4 itself, gamma and the
    # attention lambdas receive gradient; after one step the whole generator does.
    first = ("sca.mask.4.weight", "sca.mask.4.bias", "sca.gamma", "blocks.0.attn.mask_lambda", "blocks.1.attn.mask_lambda")
    for name in first:
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    assert params["sca.mask.0.weight"].grad.abs().sum() == 0
    with torch.no_grad():
        for p in var.parameters():
            if p.grad is not None:
                p.sub_(0.5 * p.grad.sign() * 1e-2)
    var.zero_grad()
    logits = var.forward_train(lr_m11, lr01, torch.zeros(1, dtype=torch.long), gt, vae)
    ce_loss(logits, torch.cat(gt, 1), cfg.patch_nums)[0].backward()
    for name in first + ("sca.mask.0.weight", "sca.mask.0.bias", "sca.mask.2.weight", "sca.level_embed.weight"):
        g = params[name].grad
        assert g is not None and g.abs().sum() > 0, name
    assert vae.quantize.embedding.weight.grad is None
