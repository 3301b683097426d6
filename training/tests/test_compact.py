"""Compact weights-only checkpoints: make, restore into a fresh run folder, resume."""

import os

import pytest
import torch

from avtrain import compact, train_var, train_vqvae

from test_train import _fake_root, _records


def test_make_restore_resume_both_stages(tmp_path):
    root, split = _fake_root(tmp_path)
    common = ["--data", root, "--split-file", split, "--batch", "1", "--workers", "0", "--val-images", "1",
              "--log-every", "1", "--device", "cpu", "--val-every", "10"]
    vq = str(tmp_path / "vq")
    train_vqvae.main(["--config", "tiny", "--out", vq, "--steps", "2", "--ckpt-every", "2", "--beta2", "0.9"] + common)
    ck = torch.load(os.path.join(vq, "vqvae.pt"), map_location="cpu")
    cpath = str(tmp_path / "c" / "vq.pt")
    c = compact.make(os.path.join(vq, "vqvae.pt"), cpath)
    assert c["stage"] == "vqvae" and c["step"] == 2
    assert os.path.getsize(cpath) < 0.4 * os.path.getsize(os.path.join(vq, "vqvae.pt"))  # no optimizer, fp16

    vq2 = str(tmp_path / "vq2")
    compact.restore(cpath, os.path.join(vq2, "vqvae.pt"))
    r = torch.load(os.path.join(vq2, "vqvae.pt"), map_location="cpu")
    assert r["step"] == 2 and r["opt"]["param_groups"][0]["betas"] == (0.9, 0.9)  # the run's own betas
    for k, v in ck["vqvae"].items():
        if v.is_floating_point():
            torch.testing.assert_close(r["vqvae"][k], v, atol=2e-3 * (1 + v.abs().max().item()), rtol=1e-3)
    train_vqvae.main(["--config", "tiny", "--out", vq2, "--steps", "3", "--ckpt-every", "1", "--resume"] + common)
    assert torch.load(os.path.join(vq2, "vqvae.pt"), map_location="cpu")["step"] == 3
    assert [x["step"] for x in _records(os.path.join(vq2, "log.jsonl")) if "loss" in x] == [3]

    var = str(tmp_path / "var")
    vargs = ["--config", "tiny", "--vqvae", os.path.join(vq, "vqvae.pt"), "--ckpt-every", "1", "--degrade", "bicubic"]
    train_var.main(vargs + ["--out", var, "--steps", "1"] + common)
    cvar = str(tmp_path / "c" / "var.pt")
    assert compact.make(os.path.join(var, "var.pt"), cvar)["stage"] == "var"
    var2, vq3 = str(tmp_path / "var2"), str(tmp_path / "vq3" / "vqvae.pt")
    compact.restore(cvar, os.path.join(var2, "var.pt"), vqvae_out=vq3)
    vargs[3] = vq3
    train_var.main(vargs + ["--out", var2, "--steps", "2", "--resume"] + common)
    assert torch.load(os.path.join(var2, "var.pt"), map_location="cpu")["step"] == 2
    with pytest.raises(SystemExit):  # restore never overwrites a run
        compact.main(["restore", "--compact", cvar, "--out", os.path.join(var2, "var.pt")])
