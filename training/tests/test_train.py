"""Training utilities, and both stages end to end on a synthetic 3-image data folder."""

import hashlib
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from avtrain import train_var, train_vqvae
from avtrain.config import tiny
from avtrain.export import load_model, main as export_main
from avtrain.model import AlignVAR
from avtrain.trainutil import JsonlLog, batch_indices, lin0_factor, param_groups, upsample_lr


def test_lin0_schedule():
    total, warm = 100, 10
    f = [lin0_factor(s, total, warm) for s in range(total)]
    assert math.isclose(f[0], 0.005) and f[5] < f[9] < 1.0
    assert f[10] == 1.0 and f[10 + 27] == 1.0  # flat for 30% of the remaining 90 steps
    assert all(a >= b for a, b in zip(f[37:], f[38:]))
    assert math.isclose(f[-1], 0.01, rel_tol=1e-6)


def test_param_groups_follow_spec_no_wd_list():
    m = AlignVAR(tiny(), device="meta")
    groups = param_groups(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert {"blocks.0.attn.mat_qkv.weight", "head.weight", "word_embed.weight", "class_emb.weight",
            "con_embedding.conv_in.weight", "sca.mask.0.weight"} <= decay
    assert {"pos_start", "lvl_embed.weight", "blocks.0.attn.scale_mul_1H11", "sca.gamma", "sca.level_embed.weight",
            "blocks.1.attn.mask_lambda", "head.bias", "blocks.0.attn.q_bias"} <= no_decay
    assert len(decay) + len(no_decay) == len(names)


def test_batch_indices_are_disjoint_and_resumable():
    assert batch_indices(0, 4) == [0, 1, 2, 3] and batch_indices(3, 4) == [12, 13, 14, 15]


def test_upsample_lr_modes():
    lr = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    g = torch.Generator().manual_seed(0)
    a = upsample_lr(lr, 32, "pil", g)
    b = upsample_lr(lr, 32, "random", g)
    assert a.shape == b.shape == (2, 3, 32, 32)
    assert torch.allclose(torch.round((b + 1) / 2 * 255), (b + 1) / 2 * 255, atol=1e-3)  # on the 1/255 grid
    assert b.min() >= -1 and b.max() <= 1
    with pytest.raises(ValueError):
        upsample_lr(lr, 32, "nearest", g)


def test_jsonl_log_resume_drops_records_after_the_checkpoint(tmp_path):
    p = str(tmp_path / "log.jsonl")
    log = JsonlLog(p)
    for step in (1, 2, 3, 4):
        log.write({"step": step, "x": torch.tensor(float(step))})
    log.close()
    log = JsonlLog(p, resume_step=2)
    log.write({"event": "resume", "step": 2})
    log.close()
    recs = _records(p)
    assert [r["step"] for r in recs] == [1, 2, 2] and recs[1]["x"] == 2.0
    JsonlLog(p).close()
    assert _records(p) == []


def _fake_root(tmp_path, n=3, size=288):
    root = tmp_path / "data"
    (root / "raw").mkdir(parents=True)
    entries = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        img = np.stack([128 + 100 * np.sin(xx / (7.0 + i)), 128 + 90 * np.cos(yy / (5.0 + i)),
                        ((xx // (12 + i) + yy // 16) % 2) * 200 + 20], -1)
        path = root / "raw" / f"img{i}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append({"file": f"raw/img{i}.png", "sha256": sha, "group": f"g{i}", "width": size, "height": size})
    (root / "manifest.json").write_text(json.dumps({"images": entries}))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"val": [entries[0]]}))
    return str(root), str(split)


def _records(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_both_stages_end_to_end_with_resume_and_export(tmp_path):
    root, split = _fake_root(tmp_path)
    vq_out, var_out = str(tmp_path / "vq"), str(tmp_path / "var")
    common = ["--data", root, "--split-file", split, "--batch", "1", "--workers", "0", "--val-images", "1",
              "--log-every", "1", "--device", "cpu"]
    train_vqvae.main(["--config", "tiny", "--out", vq_out, "--steps", "2", "--val-every", "2", "--ckpt-every", "2"] + common)
    recs = _records(os.path.join(vq_out, "log.jsonl"))
    assert recs[0]["event"] == "start" and any("val_psnr_y" in r for r in recs)
    assert all(math.isfinite(r["loss"]) for r in recs if "loss" in r)

    args = ["--config", "tiny", "--vqvae", os.path.join(vq_out, "vqvae.pt"), "--out", var_out,
            "--val-every", "2", "--ckpt-every", "2", "--lr", "1e-3", "--degrade", "bicubic"] + common
    train_var.main(args + ["--steps", "2"])
    ck2 = torch.load(os.path.join(var_out, "var.pt"), map_location="cpu")
    assert ck2["step"] == 2
    train_var.main(args + ["--steps", "3", "--resume"])
    recs = _records(os.path.join(var_out, "log.jsonl"))
    steps = [r for r in recs if "ce" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert len(r["ce_scales"]) == 10 and len(r["hcc_scales"]) == 10 and r["hcc"] > 0 and len(r["sca_gamma"]) == 10
    vals = [r for r in recs if "val_psnr_y" in r]
    assert len(vals) == 2 and all(0 < v["val_ssim_y"] <= 1 and v["val_ce"] > 0 for v in vals)
    assert "val_psnr_y_bicubic" in recs[0]
    ck3 = torch.load(os.path.join(var_out, "var.pt"), map_location="cpu")
    assert ck3["step"] == 3 and not torch.equal(ck2["var"]["head.weight"], ck3["var"]["head.weight"])

    out = str(tmp_path / "model.safetensors")
    export_main(["--ckpt", os.path.join(var_out, "var.pt"), "--out", out, "--dtype", "bf16"])
    var, vae, cfg = load_model(out)
    assert cfg.sca and torch.allclose(var.sca.gamma, ck3["var"]["sca.gamma"])

    # the VARSR ablation trains without SCA parameters and with HCC switched off
    nosca_out = str(tmp_path / "nosca")
    train_var.main(["--config", "tiny", "--vqvae", os.path.join(vq_out, "vqvae.pt"), "--out", nosca_out, "--steps", "1",
                    "--no-sca", "--hcc-lambda", "0", "--val-every", "5", "--ckpt-every", "1", "--degrade", "bicubic"] + common)
    ck = torch.load(os.path.join(nosca_out, "var.pt"), map_location="cpu")
    assert not any(k.startswith("sca.") for k in ck["var"]) and ck["cfg"]["sca"] == "0"


def test_l1_adain_loss_ignores_per_channel_colour_and_contrast():
    from avtrain.train_vqvae import match_stats, recon_loss

    g = torch.Generator().manual_seed(3)
    hr = torch.rand(2, 3, 17, 13, generator=g) * 2 - 1
    rec = torch.rand(2, 3, 17, 13, generator=g) * 2 - 1
    m = match_stats(rec, hr)
    torch.testing.assert_close(m.mean((2, 3)), hr.mean((2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(m.std((2, 3)), hr.std((2, 3)), atol=1e-4, rtol=1e-4)
    # a per-image, per-channel gain and offset changes only the raw-L1 share of the loss
    gain = torch.rand(2, 3, 1, 1, generator=g) + 0.5
    off = torch.rand(2, 3, 1, 1, generator=g) - 0.5
    a, _ = recon_loss(rec, hr, "l1-adain", 0.0)
    b, _ = recon_loss(rec * gain + off, hr, "l1-adain", 0.0)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert recon_loss(hr, hr, "l1-adain", 0.1)[0] < 1e-4
    loss, l1 = recon_loss(rec, hr, "l1", 0.1)
    torch.testing.assert_close(loss, (rec - hr).abs().mean())
    torch.testing.assert_close(l1, (rec - hr).abs().mean())


def test_cpu_recipe_options_run(tmp_path):
    """The stage options of the shipped CPU recipe (scripts/train_default.sh) on the tiny config."""
    root, split = _fake_root(tmp_path)
    vq_out, var_out = str(tmp_path / "vq"), str(tmp_path / "var")
    common = ["--data", root, "--split-file", split, "--batch", "1", "--workers", "0", "--val-images", "1",
              "--log-every", "1", "--device", "cpu"]
    train_vqvae.main(["--config", "tiny", "--out", vq_out, "--steps", "2", "--val-every", "2", "--ckpt-every", "2",
                      "--loss", "l1-adain", "--restart-every", "1", "--restart-threshold", "1e9"] + common)
    recs = _records(os.path.join(vq_out, "log.jsonl"))
    assert any(r.get("restarted", 0) > 0 for r in recs)  # every code counts as dead at this threshold
    assert any("val_psnr_y_matched" in r for r in recs)
    train_var.main(["--config", "tiny", "--vqvae", os.path.join(vq_out, "vqvae.pt"), "--out", var_out,
                    "--steps", "1", "--val-every", "1", "--ckpt-every", "1", "--degrade", "bicubic",
                    "--attn-temp-init", "25", "--cond-init", "he", "--input-mask", "0.5"] + common)
    ck = torch.load(os.path.join(var_out, "var.pt"), map_location="cpu")
    assert ck["step"] == 1
    rho = ck["var"]["blocks.0.attn.scale_mul_1H11"]
    assert torch.allclose(rho, torch.full_like(rho, math.log(25.0)), atol=0.01)  # one step of lr 2e-4 at most
    recs = _records(os.path.join(var_out, "log.jsonl"))
    assert any("val_psnr_y_wavelet" in r and "val_ce_lr_shuffled" in r for r in recs)
