"""The residual latent (issue 11): config/metadata rules, the output composition, and both
training stages plus the export on a residual tiny config."""

import math
import os

import pytest
import torch

from avtrain import config as config_mod
from avtrain import train_var, train_vqvae
from avtrain.config import config_from_metadata, config_to_metadata, tiny
from avtrain.export import load_model, main as export_main
from avtrain.safetensors_io import load_file
from avtrain.train_vqvae import fft_l1, grad_l1
from avtrain.vqvae import VQVAE, compose_residual, residual_base

from test_train import _fake_root, _records


def test_metadata_only_when_not_the_default():
    meta = config_to_metadata(tiny())
    assert "latent" not in meta and "residual_scale" not in meta  # older files and golden fixtures unchanged
    cfg = tiny().replace(latent="residual", residual_scale=0.25)
    meta = config_to_metadata(cfg)
    assert meta["latent"] == "residual" and meta["residual_scale"] == "0.25"
    assert config_from_metadata(meta) == cfg
    # a residual file keeps its scale even when it is 1.0
    assert config_to_metadata(tiny().replace(latent="residual"))["residual_scale"] == "1.0"


@pytest.mark.parametrize("kw", [dict(latent="res"), dict(latent="residual", residual_scale=0.0),
                                dict(latent="residual", residual_scale=float("nan")),
                                dict(latent="residual", residual_scale=100.0)])
def test_bad_values_are_rejected(kw):
    with pytest.raises(ValueError):
        tiny().replace(**kw)


def test_encoder_input_and_output_invert_each_other():
    cfg = tiny().replace(latent="residual", residual_scale=0.25)
    vae = VQVAE(cfg, with_encoder=False)
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    up01 = torch.rand(2, 3, 8, 8, generator=g) * 1.1 - 0.05  # PIL bicubic overshoots [0, 1]
    x = vae.encoder_input(hr, up01)
    torch.testing.assert_close(x, (hr - (2 * up01 - 1)) / 0.25)
    torch.testing.assert_close(compose_residual(cfg, x, up01), hr, atol=1e-6, rtol=0)
    torch.testing.assert_close(residual_base(up01), up01 * 2 - 1)
    # an image-latent config is untouched
    assert compose_residual(tiny(), x, None) is x
    with pytest.raises(ValueError):
        compose_residual(cfg, x, None)


def test_sharpening_losses_vanish_only_at_the_target():
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(2, 3, 16, 16, generator=g)
    assert grad_l1(hr, hr) == 0 and fft_l1(hr, hr) < 1e-6
    blurred = torch.nn.functional.avg_pool2d(hr, 3, 1, 1)
    assert grad_l1(blurred, hr) > 0.05 and fft_l1(blurred, hr) > 0.01
    # a constant offset costs nothing in the gradient loss
    assert grad_l1(hr + 0.3, hr) < 1e-6


def test_residual_stages_and_export(tmp_path, monkeypatch):
    monkeypatch.setitem(config_mod.PRESETS, "tiny_residual",
                        lambda: tiny().replace(latent="residual", residual_scale=0.25))
    root, split = _fake_root(tmp_path)
    vq_out, var_out = str(tmp_path / "vq"), str(tmp_path / "var")
    common = ["--data", root, "--split-file", split, "--batch", "1", "--workers", "0", "--val-images", "1",
              "--log-every", "1", "--device", "cpu", "--degrade", "mixed"]
    train_vqvae.main(["--config", "tiny_residual", "--out", vq_out, "--steps", "2", "--val-every", "2",
                      "--ckpt-every", "2", "--grad-l1", "1.0", "--fft-l1", "0.5"] + common)
    recs = _records(os.path.join(vq_out, "log.jsonl"))
    assert recs[0]["config"]["latent"] == "residual"
    val = [r for r in recs if "val_psnr_y" in r]
    assert val and val[0]["val_sharpness"] > 0 and val[0]["codes_in_use"] > 0
    assert all(math.isfinite(r["loss"]) for r in recs if "loss" in r)
    with pytest.raises(SystemExit):  # the colour-invariant loss makes no sense on a residual
        train_vqvae.main(["--config", "tiny_residual", "--out", str(tmp_path / "vq2"), "--steps", "1",
                          "--loss", "l1-adain"] + common)

    train_var.main(["--config", "tiny_residual", "--vqvae", os.path.join(vq_out, "vqvae.pt"), "--out", var_out,
                    "--steps", "2", "--val-every", "2", "--ckpt-every", "2", "--input-mask", "0.5"] + common)
    recs = _records(os.path.join(var_out, "log.jsonl"))
    v = [r for r in recs if "val_psnr_y_raw" in r][0]
    # the base alone is bicubic-quality; the untrained residual must not drag the output far below it
    assert v["val_psnr_y_raw"] > recs[0]["val_psnr_y_bicubic"] - 10

    out = str(tmp_path / "model.safetensors")
    export_main(["--ckpt", os.path.join(var_out, "var.pt"), "--out", out, "--dtype", "bf16"])
    meta = load_file(out)[1]
    assert meta["latent"] == "residual" and meta["residual_scale"] == "0.25"
    _, _, cfg = load_model(out)
    assert cfg.residual and cfg.residual_scale == 0.25
