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
