import pytest
import torch

from avtrain.config import tiny
from avtrain.resample import area_down, bicubic_up
from avtrain.vqvae import VQVAE


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    v = VQVAE(tiny()).eval()
    with torch.no_grad():
        v.quantize.embedding.weight.normal_()
        for phi in v.quantize.quant_resi.qresi_ls:
            phi.weight.normal_(std=0.1)
    return v


def _latent(cfg, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return bicubic_up(torch.randn(B, cfg.cvae, 4, 4, generator=g), cfg.grid) + 0.3 * torch.randn(B, cfg.cvae, cfg.grid, cfg.grid, generator=g)


def test_phi_selection_uses_spec_table(vae):
    q = vae.quantize
    ls = q.quant_resi.qresi_ls
    assert [list(ls).index(q.phi(si)) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_tokenizer_residual_identity(vae):
    """f = sum of the decoded scales (Phi at si < K-1, raw E at the last) + final residual."""
    cfg = vae.cfg
    f = _latent(cfg)
    idx, r_last = vae.f_to_idx(f)
    assert [i.shape for i in idx] == [(2, pn * pn) for pn in cfg.patch_nums]
    f_hat = vae.idx_to_f_hat(idx)
    e_last = vae.quantize.embedding(idx[-1])  # [B, G*G, Cv]
    resid = (r_last - e_last).transpose(1, 2).reshape(f.shape)
    assert torch.allclose(f_hat + resid, f, atol=1e-5)


def test_tokenizer_picks_nearest_code_per_scale(vae):
    cfg = vae.cfg
    f = _latent(cfg, seed=1)
    idx, _ = vae.f_to_idx(f)
    E = vae.quantize.embedding.weight
    R = f.clone()
    for si, pn in enumerate(cfg.patch_nums):
        z = area_down(R, pn) if si < len(cfg.patch_nums) - 1 else R
        zf = z.permute(0, 2, 3, 1).reshape(-1, cfg.cvae)
        ref = torch.cdist(zf.double(), E.double()).argmin(1)
        assert torch.equal(idx[si].reshape(-1), ref)
        R = R - (vae.quantize.accumulate(si, torch.zeros_like(R), vae.quantize.idx_to_h(idx[si], pn)))


def test_nearest_ties_go_to_lowest_index(vae):
    q = vae.quantize
    E = q.embedding.weight
    z = E[[7]].clone()
    with torch.no_grad():
        saved = E[3].clone()
        E[3] = E[7]
        try:
            assert q.nearest(z).item() == 3
        finally:
            E[3] = saved


def test_teacher_forcing_inputs(vae):
    cfg = vae.cfg
    idx, _ = vae.f_to_idx(_latent(cfg, seed=2))
    x = vae.idx_to_var_input(idx)
    assert x.shape == (2, cfg.L - 1, cfg.cvae)
    f_hat = torch.zeros(2, cfg.cvae, cfg.grid, cfg.grid)
    o = 0
    for si in range(len(cfg.patch_nums) - 1):
        f_hat = vae.quantize.accumulate(si, f_hat, vae.quantize.idx_to_h(idx[si], cfg.patch_nums[si]))
        pn = cfg.patch_nums[si + 1]
        ref = area_down(f_hat, pn).flatten(2).transpose(1, 2)
        assert torch.allclose(x[:, o:o + pn * pn], ref, atol=1e-6)
        o += pn * pn


def test_last_scale_adds_raw_embedding(vae):
    cfg = vae.cfg
    G = cfg.grid
    h = torch.randn(1, cfg.cvae, G, G)
    f0 = torch.randn(1, cfg.cvae, G, G)
    assert torch.equal(vae.quantize.accumulate(len(cfg.patch_nums) - 1, f0, h), f0 + h)
    phi = vae.quantize.phi(8)
    ref = 0.5 * h + 0.5 * torch.nn.functional.conv2d(h, phi.weight, phi.bias, padding=1)
    assert torch.allclose(vae.quantize.accumulate(8, f0, h), f0 + ref, atol=1e-6)


def test_vqvae_training_forward_gradients():
    torch.manual_seed(0)
    v = VQVAE(tiny()).train()
    img = torch.rand(1, 3, 256, 256) * 2 - 1
    rec, vq_loss, usage = v(img)
    assert rec.shape == img.shape and len(usage) == 10
    loss = (rec - img).abs().mean() + vq_loss
    loss.backward()
    for name in ("encoder.conv_in.weight", "quant_conv.weight", "quantize.embedding.weight",
                 "quantize.quant_resi.qresi_ls.3.weight", "decoder.conv_out.weight"):
        p = dict(v.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert v.quantize.ema_vocab_hit_SV.sum() > 0


def test_inference_only_vqvae_has_no_encoder():
    v = VQVAE(tiny(), with_encoder=False)
    assert not any(k.startswith(("encoder.", "quant_conv.")) for k in v.state_dict())
    with pytest.raises(RuntimeError):
        v.img_to_f(torch.zeros(1, 3, 256, 256))


def test_restart_dead_codes_reseeds_only_unused_codes_from_quantizer_inputs():
    torch.manual_seed(0)
    v = VQVAE(tiny()).train()
    q = v.quantize
    assert q.restart_dead_codes(0.5, torch.Generator().manual_seed(0)) == 0  # no forward yet
    with torch.no_grad():
        v(torch.rand(2, 3, 256, 256) * 2 - 1)
    hits = q.ema_vocab_hit_SV.sum(0).clone()
    before = q.embedding.weight.detach().clone()
    dead = hits < 0.5
    assert 0 < int(dead.sum()) < q.V
    n = q.restart_dead_codes(0.5, torch.Generator().manual_seed(1))
    after = q.embedding.weight.detach()
    assert n == int(dead.sum())
    assert torch.equal(after[~dead], before[~dead])  # live codes untouched
    assert not torch.equal(after[dead], before[dead])
    # every new code lies within 5% (of the inputs' spread) of some quantizer input of the last forward
    d = torch.cdist(after[dead], q.last_z).min(1).values
    assert float(d.max()) < 0.05 * float(q.last_z.std()) * q.Cv ** 0.5
    assert bool((q.ema_vocab_hit_SV.sum(0)[dead] >= 0.5).all())  # fresh codes get time before the next check
