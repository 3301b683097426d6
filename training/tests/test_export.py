import os

import numpy as np
import pytest
import torch

from avtrain.config import config_from_metadata, tiny
from avtrain.export import castable, export_model, export_tensors, load_model, load_training_checkpoint, main
from avtrain.golden import randomize_transformer, randomize_vqvae
from avtrain.model import AlignVAR, sca_keys
from avtrain.resample import preprocess_lr
from avtrain.safetensors_io import load_file, save_file
from avtrain.vqvae import VQVAE


@pytest.fixture(scope="module")
def pair():
    cfg = tiny()
    g = torch.Generator().manual_seed(11)
    var = AlignVAR(cfg).eval()
    vae = VQVAE(cfg).eval()
    randomize_transformer(var, g)
    randomize_vqvae(vae, g)
    return cfg, var, vae


def _lr(cfg):
    img = np.random.default_rng(5).integers(0, 256, (1, cfg.lr_size, cfg.lr_size, 3), dtype=np.uint8)
    return preprocess_lr(img, cfg.hr_size)


def test_safetensors_round_trip_all_dtypes(tmp_path):
    t = {
        "f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(2, 2).bfloat16(),
        "i32": torch.arange(6, dtype=torch.int32).view(2, 3), "i64": torch.tensor([-1, 2**40]),
        "u8": torch.arange(256, dtype=torch.uint8), "scalar": torch.tensor(1.5),
    }
    p = str(tmp_path / "a.safetensors")
    save_file(t, p, {"k": "v"})
    got, meta = load_file(p)
    assert meta == {"k": "v"}
    for k, v in t.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    raw = open(p, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and len(raw) == 8 + n + sum(v.numel() * v.element_size() for v in t.values())
    p2 = str(tmp_path / "b.safetensors")
    save_file(dict(reversed(list(t.items()))), p2, {"k": "v"})
    assert open(p2, "rb").read() == raw  # deterministic: sorted names, fixed JSON
    with pytest.raises(TypeError):
        save_file({"x": torch.zeros(1)}, p, {"n": 1})


def test_export_reload_identical_outputs(pair, tmp_path):
    cfg, var, vae = pair
    p = str(tmp_path / "m.safetensors")
    export_model(var, vae, p, dtype="f32")
    tensors, meta = load_file(p)
    assert meta["format"] == "alignvar" and meta["sca"] == "1" and meta["patch_nums"] == "1,2,3,4,5,6,8,10,13,16"
    assert meta["has_encoder"] == "0" and config_from_metadata(meta) == cfg
    assert not any(k.startswith(("encoder.", "quant_conv.")) or k.endswith("zero_k_bias") for k in tensors)
    assert "quantize.ema_vocab_hit_SV" not in tensors and "lvl_1L" not in tensors
    assert set(sca_keys(cfg.depth)) <= set(tensors)
    var2, vae2, cfg2 = load_model(p)
    assert cfg2 == cfg and not vae2.with_encoder
    lr_m11, _, lr01 = _lr(cfg)
    a = var.generate(vae, lr_m11, lr01, cfg_scale=2.0, top_k=5, top_p=0.9, seed=3, return_intermediates=True)
    b = var2.generate(vae2, lr_m11, lr01, cfg_scale=2.0, top_k=5, top_p=0.9, seed=3, return_intermediates=True)
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2]["dec"], b[2]["dec"])


def test_export_keep_encoder_and_nosca(pair, tmp_path):
    cfg, var, vae = pair
    p = str(tmp_path / "enc.safetensors")
    export_model(var, vae, p, keep_encoder=True)
    t, meta = load_file(p)
    assert "encoder.conv_in.weight" in t and "quant_conv.weight" in t and meta["has_encoder"] == "1"
    _, vae2, _ = load_model(p)
    assert vae2.with_encoder
    var_n = AlignVAR(cfg.replace(sca=False))
    var_n.load_checked({k: v for k, v in var.state_dict().items() if k not in sca_keys(cfg.depth)})
    pn = str(tmp_path / "nosca.safetensors")
    export_model(var_n, vae, pn)
    t, meta = load_file(pn)
    assert meta["sca"] == "0" and not any(k.startswith("sca.") or "mask_lambda" in k for k in t)
    assert load_model(pn)[0].cfg.sca is False
    # a partial SCA set in a file is a load error
    t.update({"sca.gamma": torch.zeros(10)})
    meta["sca"] = "1"
    bad = str(tmp_path / "bad.safetensors")
    save_file(t, bad, meta)
    with pytest.raises(ValueError, match="partial"):
        load_model(bad)


def test_bf16_export_casts_only_weight_matrices(pair, tmp_path):
    cfg, var, vae = pair
    t = export_tensors(var, vae, dtype="bf16")
    assert t["blocks.0.attn.mat_qkv.weight"].dtype == torch.bfloat16
    assert t["con_embedding.conv_in.weight"].dtype == torch.bfloat16
    assert t["decoder.conv_in.weight"].dtype == torch.bfloat16
    for k in ("blocks.0.attn.q_bias", "pos_start", "class_emb.weight", "lvl_embed.weight", "quantize.embedding.weight",
              "quantize.quant_resi.qresi_ls.0.weight", "sca.mask.0.weight", "blocks.0.attn.scale_mul_1H11",
              "decoder.norm_out.weight", "head.bias"):
        assert t[k].dtype == torch.float32, k
    assert all((v.dtype == torch.bfloat16) == castable(k, v.float()) for k, v in t.items())
    p = str(tmp_path / "bf16.safetensors")
    export_model(var, vae, p, dtype="bf16")
    var2, vae2, _ = load_model(p)
    w = var2.blocks[0].attn.mat_qkv.weight
    assert torch.equal(w, var.blocks[0].attn.mat_qkv.weight.bfloat16().float())
    with pytest.raises(ValueError):
        export_tensors(var, vae, dtype="int8")


def test_export_cli_from_training_checkpoint(pair, tmp_path):
    cfg, var, vae = pair
    from avtrain.config import config_to_metadata

    ck = str(tmp_path / "var.pt")
    torch.save({"cfg": config_to_metadata(cfg), "var": var.state_dict(), "vqvae": vae.state_dict()}, ck)
    var2, vae2, cfg2 = load_training_checkpoint(ck)
    assert cfg2 == cfg and torch.equal(var2.head.weight, var.head.weight)
    out = str(tmp_path / "cli.safetensors")
    main(["--ckpt", ck, "--out", out, "--dtype", "f16"])
    t, meta = load_file(out)
    assert meta["dtype"] == "f16" and t["head.weight"].dtype == torch.float16 and os.path.getsize(out) > 0
