import math

import pytest
import torch
import torch.nn.functional as F

from avtrain.config import tiny
from avtrain.losses import ce_loss, hcc_loss, hcc_targets, total_loss
from avtrain.resample import area_down, bicubic_up
from avtrain.vqvae import VQVAE


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = tiny()
    vae = VQVAE(cfg, with_encoder=False).eval()
    with torch.no_grad():
        vae.quantize.embedding.weight.normal_()
        vae.quantize.embedding.weight[0].zero_()  # code 0 is the zero vector
        for phi in vae.quantize.quant_resi.qresi_ls:  # Phi = identity: conv = centre tap 1, bias 0
            phi.weight.zero_()
            phi.bias.zero_()
            for c in range(cfg.cvae):
                phi.weight[c, c, 1, 1] = 1.0
    vae.requires_grad_(False)
    return cfg, vae


def _one_hot_logits(cfg, idx, big=80.0):
    return F.one_hot(idx, cfg.vocab).float() * big


def test_hcc_zero_for_one_hot_on_consistent_targets(setup):
    """f = E[a] everywhere; predicting a at scale 0 and the zero code after reconstructs every
    scale exactly, so u_hat_k == u_gt_k for all k and L_HCC = 0."""
    cfg, vae = setup
    B, a = 2, 5
    E = vae.quantize.embedding.weight
    f = E[a].view(1, -1, 1, 1).expand(B, -1, cfg.grid, cfg.grid).contiguous()
    idx = torch.zeros(B, cfg.L, dtype=torch.long)
    idx[:, 0] = a
    logits = _one_hot_logits(cfg, idx)
    hcc, terms = hcc_loss(logits, f, vae, cfg.patch_nums)
    assert len(terms) == 10
    assert hcc.item() < 1e-8
    # the same targets under a uniform or a wrong prediction give a positive loss
    assert hcc_loss(torch.zeros_like(logits), f, vae, cfg.patch_nums)[0] > 0.1
    idx2 = idx.clone()
    idx2[:, 0] = a + 1
    assert hcc_loss(_one_hot_logits(cfg, idx2), f, vae, cfg.patch_nums)[0] > 0.1


def test_hcc_matches_direct_formula(setup):
    cfg, vae = setup
    torch.manual_seed(1)
    B = 2
    f = bicubic_up(torch.randn(B, cfg.cvae, 3, 3), cfg.grid) + 0.2 * torch.randn(B, cfg.cvae, cfg.grid, cfg.grid)
    logits = torch.randn(B, cfg.L, cfg.vocab) * 3
    hcc, terms = hcc_loss(logits, f, vae, cfg.patch_nums)
    E = vae.quantize.embedding.weight
    rhat = logits.softmax(-1) @ E
    Fh = torch.zeros(B, cfg.cvae, cfg.grid, cfg.grid)
    o, total = 0, 0.0
    for k, pn in enumerate(cfg.patch_nums):
        r = rhat[:, o:o + pn * pn].transpose(1, 2).reshape(B, cfg.cvae, pn, pn)
        o += pn * pn
        Fh = Fh + (bicubic_up(r, cfg.grid) if k < 9 else r)  # Phi is the identity here
        z = area_down(f, pn).permute(0, 2, 3, 1).reshape(-1, cfg.cvae)
        gt = E[torch.cdist(z, E).argmin(1)].view(B, pn, pn, -1).permute(0, 3, 1, 2)
        term = ((area_down(Fh, pn) - gt) ** 2).sum(1).mean()
        assert math.isclose(terms[k].item(), term.item(), rel_tol=1e-5)
        total += term.item()
    assert math.isclose(hcc.item(), total, rel_tol=1e-5)
    tg = hcc_targets(f, vae, cfg.patch_nums)
    assert [tuple(t.shape) for t in tg] == [(B, cfg.cvae, p, p) for p in cfg.patch_nums]


def test_hcc_gradient_reaches_logits_only(setup):
    cfg, vae = setup
    f = torch.randn(1, cfg.cvae, cfg.grid, cfg.grid)
    logits = torch.randn(1, cfg.L, cfg.vocab, requires_grad=True)
    hcc, _ = hcc_loss(logits, f, vae, cfg.patch_nums)
    hcc.backward()
    assert logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in vae.parameters())


def test_ce_per_scale_and_total(setup):
    cfg, vae = setup
    logits = torch.randn(2, cfg.L, cfg.vocab)
    gt = torch.randint(0, cfg.vocab, (2, cfg.L))
    ce, scales = ce_loss(logits, gt, cfg.patch_nums)
    assert math.isclose(ce.item(), F.cross_entropy(logits.reshape(-1, cfg.vocab), gt.reshape(-1)).item(), rel_tol=1e-6)
    assert math.isclose(scales[0].item(), F.cross_entropy(logits[:, 0], gt[:, 0]).item(), rel_tol=1e-6)
    f = torch.randn(2, cfg.cvae, cfg.grid, cfg.grid)
    loss1, st1 = total_loss(logits, gt, f, vae, cfg.patch_nums, hcc_lambda=1.0)
    loss0, st0 = total_loss(logits, gt, f, vae, cfg.patch_nums, hcc_lambda=0.0)
    assert math.isclose(loss1.item(), (st1["ce"] + st1["hcc"]).item(), rel_tol=1e-6)
    assert math.isclose(loss0.item(), ce.item(), rel_tol=1e-6) and st0["hcc"] > 0
