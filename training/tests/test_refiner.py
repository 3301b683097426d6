"""The refiner reference (avtrain/refiner.py) against spec 6.1 / 6.2 / 8.2."""

import math

import numpy as np
import torch

from avtrain.refiner import DiffLoss, SimpleMLPAdaLN, refine, refiner_noise, refiner_schedule


def test_param_count_and_keys_match_spec_8_2():
    dl = DiffLoss(32, 1536, 1024, 6)
    assert sum(p.numel() for p in dl.parameters()) == 36_585_536
    sd = dl.state_dict()
    assert sd["net.time_embed.mlp.0.weight"].shape == (1024, 256)
    assert sd["net.res_blocks.5.adaLN_modulation.1.weight"].shape == (3072, 1024)
    assert sd["net.final_layer.linear.weight"].shape == (64, 1024)
    assert not any("norm_final" in k for k in sd)


def test_schedule_respacing():
    s = refiner_schedule()
    assert s.timesteps == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    # abar'_n equals the base schedule's abar at S_n.
    def abar_fn(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = [min(1 - abar_fn((i + 1) / 1000) / abar_fn(i / 1000), 0.999) for i in range(1000)]
    full = np.cumprod(1 - np.array(betas))
    np.testing.assert_allclose(s.abar, full[s.timesteps], rtol=1e-8)
    assert abs(s.coef1[0] - 1.0) < 1e-12 and s.coef2[0] == 0.0  # n = 0: x = clamp(x0)
    assert s.post_log_var[0] == s.post_log_var[1]


def test_noise_is_keyed_and_normal():
    a = refiner_noise(7, [0, 1], 10, 256, 32)
    b = refiner_noise(7, [0, 1], 10, 256, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a[:256], a[256:])  # image keys differ
    assert not torch.equal(a, refiner_noise(7, [0, 1], 9, 256, 32))  # steps differ
    assert abs(a.mean().item()) < 0.05 and abs(a.std().item() - 1) < 0.05


def test_refine_final_step_is_clamped_x0():
    torch.manual_seed(0)
    net = SimpleMLPAdaLN(4, 8, 16, 2).eval()
    z = torch.randn(2 * 2 * 3, 8)
    out, steps = refine(net, z, seed=1, image_keys=[0, 1], tokens=3, return_steps=True)
    assert out.shape == (6, 4) and [s["n"] for s in steps] == list(range(9, -1, -1))
    assert out.abs().max().item() <= 0.6 + 1e-6


def test_refine_without_guidance_uses_the_conditional_half_alone():
    torch.manual_seed(1)
    net = SimpleMLPAdaLN(4, 8, 16, 2).eval()
    z = torch.randn(2 * 2 * 3, 8)
    # One half: eps = eps_cond; equals the two-half sampler at guidance 0 on the same rows.
    one = refine(net, z[:6], seed=3, image_keys=[0, 1], tokens=3, guidance=0.0)
    two = refine(net, z, seed=3, image_keys=[0, 1], tokens=3, guidance=0.0)
    assert torch.allclose(one, two, atol=1e-6)
    assert not torch.allclose(two, refine(net, z, seed=3, image_keys=[0, 1], tokens=3, guidance=2.0), atol=1e-3)


def test_refine_f_hat_adds_the_refined_residual_token_major():
    from avtrain.refiner import refine_f_hat

    torch.manual_seed(2)
    B, G, C, Cv = 2, 2, 8, 4
    net = SimpleMLPAdaLN(Cv, C, 16, 2).eval()
    norm = torch.nn.LayerNorm(C, eps=1e-6)
    word = torch.nn.Linear(Cv, C)
    codebook = torch.randn(5, Cv)
    h_last = torch.randn(2 * B, G * G, C)
    idx = torch.randint(0, 5, (B, G * G))
    f_hat = torch.randn(B, Cv, G, G)
    out, z, refined, steps = refine_f_hat(net, norm, word, codebook, h_last, idx, f_hat, seed=0,
                                          image_keys=[0, 1], cfg_scale=2.0, return_steps=True)
    assert z.shape == (2 * B * G * G, C) and len(steps) == 10
    # token l = r * G + c of image b lands at f_hat[b, :, r, c]
    d = out - f_hat
    assert torch.allclose(d[1, :, 1, 0], refined[1 * G * G + 1 * G + 0], atol=1e-7)
    # cfg 0 drops the negative half: z has B * L rows
    _, z0, _, _ = refine_f_hat(net, norm, word, codebook, h_last, idx, f_hat, seed=0, image_keys=[0, 1],
                               cfg_scale=0.0, return_steps=True)
    assert z0.shape == (B * G * G, C)
