"""Golden tensors for the engine: tiny config, seeded random weights, two seeded LR images.

Run from training/:  python3 -m avtrain.golden --out ../test/fixtures/golden

Writes tiny-model.safetensors (SCA), tiny-model-nosca.safetensors (same weights without the
SCA keys: the VARSR path), golden-residual.safetensors (the residual-latent output of
tiny-model.safetensors with latent = residual metadata) and golden.safetensors (every intermediate the engine reproduces;
names, shapes and layouts in test/fixtures/golden/README.md). Output is byte-identical across
runs on one machine: everything is seeded and torch runs single-threaded while generating.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Dict

import numpy as np
import torch
import torch.nn as nn

from .config import tiny
from .export import export_model, load_model
from .losses import ce_loss, hcc_loss
from .model import AlignVAR, AdaLNSelfAttn, sca_keys
from .resample import bicubic_up, preprocess_lr
from .safetensors_io import save_file
from .vqvae import VQVAE, AttnBlock

SEED = 20240611
CASE_A = dict(cfg_scale=2.0, top_k=1, top_p=0.0, seed=0)
CASE_B = dict(cfg_scale=3.0, top_k=5, top_p=0.9, seed=1234)
CASE_N = dict(cfg_scale=2.0, top_k=1, top_p=0.0, seed=0)
DEC_STD = 0.6


def _normal_(t: torch.Tensor, std: float, g: torch.Generator, mean: float = 0.0, draw: torch.dtype = torch.float32) -> None:
    t.copy_(torch.randn(t.shape, generator=g, dtype=draw) * std + mean)


def _uniform_(t: torch.Tensor, lo: float, hi: float, g: torch.Generator, draw: torch.dtype = torch.float32) -> None:
    t.copy_(torch.rand(t.shape, generator=g, dtype=draw) * (hi - lo) + lo)


@torch.no_grad()
def randomize_transformer(var: AlignVAR, g: torch.Generator, draw: torch.dtype = torch.float32) -> None:
    """Re-draw every parameter so gamma, masks, temperatures and biases are all non-trivial.

    draw: the dtype the values are drawn in. PyTorch draws float32 normals with a SIMD kernel
    chosen by CPU (ATEN_CPU_CAPABILITY default vs avx2 differ by an ulp); float64 draws are the
    same on every x86 CPU, so fixtures compared byte for byte draw in float64 (pth_fixtures).
    The golden fixtures keep float32 draws (their test compares with tolerances).
    """
    C = var.C
    for name, p in var.named_parameters():
        if p.ndim >= 2 and name.endswith(".weight"):
            fan_in = p[0].numel()
            _normal_(p, 1.0 / math.sqrt(fan_in), g, draw=draw)
        else:
            _normal_(p, 0.05, g, draw=draw)
    _normal_(var.class_emb.weight, 1.0, g, draw=draw)
    _normal_(var.pos_start, 0.5, g, draw=draw)
    _normal_(var.lvl_embed.weight, 0.5, g, draw=draw)
    _normal_(var.head.weight, 2.0 / math.sqrt(C), g, draw=draw)
    _normal_(var.head_nm.ada_lin[1].weight, 0.5 / math.sqrt(C), g, draw=draw)
    for i, blk in enumerate(var.blocks):
        blk: AdaLNSelfAttn
        _normal_(blk.ada_lin[1].weight, 0.5 / math.sqrt(C), g, draw=draw)
        _normal_(blk.ada_lin[1].bias[: 2 * C], 0.1, g, mean=0.3, draw=draw)  # gamma1/gamma2 around 0.3
        _normal_(blk.attn.q_bias, 0.1, g, draw=draw)
        _normal_(blk.attn.v_bias, 0.1, g, draw=draw)
        _uniform_(blk.attn.scale_mul_1H11, math.log(2.0), math.log(12.0), g, draw=draw)
        if var.cfg.sca:
            _uniform_(blk.attn.mask_lambda, -1.0, 1.0, g, draw=draw)
    var.blocks[0].attn.scale_mul_1H11[0, 0, 0, 0] = 5.0  # above ln 100: exercises the clamp
    if var.cfg.sca:
        s = var.sca
        _normal_(s.mask[0].weight, 1.0 / math.sqrt(s.mask[0].weight[0].numel()), g, draw=draw)
        _normal_(s.mask[2].weight, 1.0 / math.sqrt(s.mask[2].weight[0].numel()), g, draw=draw)
        _normal_(s.mask[4].weight, 0.3, g, draw=draw)
        s.mask[4].weight[0, -1, 0, 0] = 4.0
        s.mask[4].bias.fill_(-1.0)
        _normal_(s.level_embed.weight, 1.0, g, draw=draw)
        _uniform_(s.gamma, 0.2, 0.8, g, draw=draw)


@torch.no_grad()
def randomize_vqvae(vae: VQVAE, g: torch.Generator, draw: torch.dtype = torch.float32) -> None:
    """As randomize_transformer, for the VQVAE."""
    for m in vae.modules():
        if isinstance(m, nn.Conv2d):
            _normal_(m.weight, 1.0 / math.sqrt(m.weight[0].numel()), g, draw=draw)
            _normal_(m.bias, 0.05, g, draw=draw)
        elif isinstance(m, nn.GroupNorm):
            _normal_(m.weight, 0.1, g, mean=1.0, draw=draw)
            _normal_(m.bias, 0.1, g, draw=draw)
    for m in vae.modules():
        if isinstance(m, AttnBlock):
            m.proj_out.weight.mul_(0.5)
    for phi in vae.quantize.quant_resi.qresi_ls:
        phi.weight.mul_(0.5)
    _normal_(vae.quantize.embedding.weight, 1.0, g, draw=draw)


def make_lr(cfg, rng: np.random.Generator) -> np.ndarray:
    """Two LR images uint8 [2, h, w, 3]: smooth colour fields, sharp shapes and noise."""
    h = w = cfg.lr_size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    imgs = []
    r = np.hypot(yy - 0.45 * h, xx - 0.55 * w)
    base0 = np.stack([
        120 + 70 * np.sin(2 * np.pi * xx / (0.6 * w)),
        110 + 60 * np.cos(2 * np.pi * yy / (0.8 * h)),
        90 + 50 * np.sin(2 * np.pi * (xx + yy) / w),
    ], -1)
    base0[r < 0.22 * h] = [235, 210, 40]
    imgs.append(base0)
    stripes = ((xx + 2 * yy) // 6) % 2
    base1 = np.stack([60 + 140 * stripes, 80 + 40 * np.sin(xx / 5.0), 200 - 120 * yy / h], -1)
    sq = (np.abs(yy - 0.65 * h) < 0.15 * h) & (np.abs(xx - 0.3 * w) < 0.2 * w)
    base1[sq] = [20, 30, 25]
    imgs.append(base1)
    out = np.stack(imgs) + rng.normal(0, 6.0, (2, h, w, 3))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def build_models(cfg=None):
    cfg = cfg or tiny()
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    var = AlignVAR(cfg).eval()
    vae = VQVAE(cfg, with_encoder=False).eval()
    randomize_transformer(var, g)
    randomize_vqvae(vae, g)
    # Calibrate the decoder output to std DEC_STD on a fixed latent so the clamp matters a little.
    with torch.no_grad():
        z = torch.randn(2, cfg.cvae, cfg.grid, cfg.grid, generator=g)
        std = vae.decode(z).std().item()
        vae.decoder.conv_out.weight.mul_(DEC_STD / std)
        vae.decoder.conv_out.bias.mul_(DEC_STD / std)
    return var, vae


def _case(prefix: str, var, vae, lr_m11, up01, lr01, params, per_scale_f_hat: bool, images: bool):
    """Runs one generate() and names its tensors `{prefix}.*` (see the fixture README)."""
    B = lr_m11.shape[0]
    f_hat, _, inter = var.generate(
        vae, lr_m11, lr01, cfg_scale=params["cfg_scale"], top_k=params["top_k"], top_p=params["top_p"],
        seed=params["seed"], image_keys=list(range(B)), return_intermediates=True, adain_src=up01,
    )
    out: Dict[str, torch.Tensor] = {}
    for si, s in enumerate(inter["scales"]):
        out[f"{prefix}.s{si}.G"] = s["G"].float().contiguous()
        out[f"{prefix}.s{si}.idx"] = s["idx"].to(torch.int32).contiguous()
        if per_scale_f_hat:
            out[f"{prefix}.s{si}.f_hat"] = s["f_hat"].float().contiguous()
    if not per_scale_f_hat:
        out[f"{prefix}.f_hat"] = f_hat.float().contiguous()
    if images:
        out[f"{prefix}.dec"] = inter["dec"].float().contiguous()
        out[f"{prefix}.img_u8"] = inter["img_u8"].contiguous()
        out[f"{prefix}.img_adain_u8"] = inter["img_adain_u8"].contiguous()
    return out, inter


def generate(out_dir: str) -> Dict[str, str]:
    """Writes the three fixture files into out_dir; returns {file name: path}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _generate(out_dir)
    finally:
        torch.set_num_threads(threads)


def _generate(out_dir: str) -> Dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    cfg = tiny()
    var0, vae0 = build_models(cfg)
    paths = {n: os.path.join(out_dir, n) for n in ("tiny-model.safetensors", "tiny-model-nosca.safetensors", "golden.safetensors")}
    export_model(var0, vae0, paths["tiny-model.safetensors"], dtype="f32")
    var_n = AlignVAR(cfg.replace(sca=False)).eval()
    sd = {k: v for k, v in var0.state_dict().items() if k not in set(sca_keys(cfg.depth))}
    var_n.load_checked(sd)
    export_model(var_n, vae0, paths["tiny-model-nosca.safetensors"], dtype="f32")

    # Everything below runs on the reloaded files: what the engine loads is what made the tensors.
    var, vae, cfg = load_model(paths["tiny-model.safetensors"])
    var_n, vae_n, cfg_n = load_model(paths["tiny-model-nosca.safetensors"])

    rng = np.random.default_rng(SEED)
    lr_u8 = make_lr(cfg, rng)
    lr_m11, up01, lr01 = preprocess_lr(lr_u8, cfg.hr_size)
    B = lr_u8.shape[0]

    tensors: Dict[str, torch.Tensor] = {
        "input.lr_u8": torch.from_numpy(lr_u8),
        "input.lr_m11": lr_m11.contiguous(),
        "rope_pos": var.rope_pos.float().contiguous(),
    }
    a, inter = _case("a", var, vae, lr_m11, up01, lr01, CASE_A, per_scale_f_hat=True, images=True)
    tensors.update(a)
    for lvl, (sg, m) in enumerate(zip(inter["sg"], inter["mask"])):
        tensors[f"sg.l{lvl}"] = sg.float().contiguous()
        tensors[f"mask.l{lvl}"] = m.float().contiguous()
    tensors["key_bias"] = inter["key_bias"].float().contiguous()
    tensors["lr_tokens"] = inter["lr_tokens"].float().contiguous()
    tensors["prefix_x"] = inter["prefix_x"][:B].float().contiguous()
    b, _ = _case("b", var, vae, lr_m11, up01, lr01, CASE_B, per_scale_f_hat=True, images=False)
    tensors.update(b)
    n, _ = _case("n", var_n, vae_n, lr_m11, up01, lr01, CASE_N, per_scale_f_hat=False, images=False)
    tensors.update(n)

    # HCC on one teacher-forced batch: a seeded latent f, its VARSR tokens as targets.
    g = torch.Generator().manual_seed(SEED + 1)
    G = cfg.grid
    f = bicubic_up(torch.randn(B, cfg.cvae, 4, 4, generator=g), G) + 0.5 * torch.randn(B, cfg.cvae, G, G, generator=g)
    gt_list, _ = vae.f_to_idx(f)
    with torch.no_grad():
        logits = var.forward_train(lr_m11, lr01, torch.zeros(B, dtype=torch.long), gt_list, vae)
        gt = torch.cat(gt_list, dim=1)
        ce, ce_scales = ce_loss(logits, gt, cfg.patch_nums)
        hcc, terms = hcc_loss(logits, f, vae, cfg.patch_nums)
    tensors.update({
        "hcc.f": f.float().contiguous(),
        "hcc.gt_idx": gt.to(torch.int32).contiguous(),
        "hcc.logits": logits.float().contiguous(),
        "hcc.terms": torch.stack(terms).float(),
        "hcc.total": hcc.float().reshape(1),
        "hcc.ce": ce.float().reshape(1),
        "hcc.ce_scales": torch.stack(ce_scales).float(),
    })
    meta = {
        "config": "tiny", "seed": str(SEED), "batch": str(B), "image_keys": ",".join(str(i) for i in range(B)),
        "patch_nums": ",".join(str(p) for p in cfg.patch_nums),
    }
    for tag, p in (("a", CASE_A), ("b", CASE_B), ("n", CASE_N)):
        for k, v in p.items():
            meta[f"{tag}.{k}"] = repr(v) if isinstance(v, float) else str(v)
    save_file(tensors, paths["golden.safetensors"], meta)
    paths["golden-residual.safetensors"] = residual_golden(out_dir, lr_u8)
    paths["golden-declr.safetensors"] = declr_golden(out_dir, lr_u8)
    paths["golden-tokmean.safetensors"] = tokmean_golden(out_dir, lr_u8)
    return paths


RESIDUAL_META = {"latent": "residual", "residual_scale": "0.25"}


def residual_golden(out_dir: str, lr_u8: np.ndarray) -> str:
    """golden-residual.safetensors: tiny-model.safetensors with RESIDUAL_META added to its
    metadata (the test writes that file itself), run as case a; holds r.img_u8 [B, S, S, 3], the
    output clamp(base + 0.25 * decoder) as uint8 with no colour fix (same tokens as case a)."""
    var, vae, cfg = load_model(os.path.join(out_dir, "tiny-model.safetensors"))
    rcfg = cfg.replace(latent=RESIDUAL_META["latent"], residual_scale=float(RESIDUAL_META["residual_scale"]))
    var.cfg, vae.cfg, vae.quantize.cfg = rcfg, rcfg, rcfg
    lr_m11, up01, lr01 = preprocess_lr(lr_u8, cfg.hr_size)
    out, _ = _case("r", var, vae, lr_m11, up01, lr01, CASE_A, per_scale_f_hat=False, images=True)
    tensors = {"r.img_u8": out["r.img_u8"]}  # the decoder output is golden.safetensors a.dec
    meta = {**RESIDUAL_META, **{f"r.{k}": (repr(v) if isinstance(v, float) else str(v)) for k, v in CASE_A.items()}}
    path = os.path.join(out_dir, "golden-residual.safetensors")
    save_file(tensors, path, meta)
    return path


DECLR_META = {**RESIDUAL_META, "decoder_lr": "1"}


def declr_golden(out_dir: str, lr_u8: np.ndarray) -> str:
    """golden-declr.safetensors: tiny-model.safetensors as a residual-latent model with an
    LR-conditioned decoder (DECLR_META; config.decoder_lr), its decoder.lr_in.<l> weights drawn
    here (N(0, 0.05^2), seeded) and stored in the file; run as case a. Holds those weights, d.dec
    (the decoder output [B, 3, S, S]) and d.img_u8 (clamp(base + 0.25 * decoder), no colour fix)."""
    var, vae, cfg = load_model(os.path.join(out_dir, "tiny-model.safetensors"))
    dcfg = cfg.replace(latent="residual", residual_scale=float(DECLR_META["residual_scale"]), decoder_lr=True)
    vae_d = VQVAE(dcfg, with_encoder=False).eval()
    missing, unexpected = vae_d.load_state_dict(vae.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("decoder.lr_in.") for k in missing), (missing, unexpected)
    g = torch.Generator().manual_seed(SEED + 11)
    lr_in = {}
    with torch.no_grad():
        for name, p in vae_d.decoder.lr_in.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            lr_in[f"decoder.lr_in.{name}"] = p.detach().clone().contiguous()
    var.cfg = dcfg
    lr_m11, up01, lr01 = preprocess_lr(lr_u8, cfg.hr_size)
    out, _ = _case("d", var, vae_d, lr_m11, up01, lr01, CASE_A, per_scale_f_hat=False, images=True)
    tensors = {**lr_in, "d.dec": out["d.dec"], "d.img_u8": out["d.img_u8"]}
    meta = {**DECLR_META, **{f"d.{k}": (repr(v) if isinstance(v, float) else str(v)) for k, v in CASE_A.items()}}
    path = os.path.join(out_dir, "golden-declr.safetensors")
    save_file(tensors, path, meta)
    return path


TOKMEAN_META = {"token_mode": "mean"}


def tokmean_golden(out_dir: str, lr_u8: np.ndarray) -> str:
    """golden-tokmean.safetensors: tiny-model.safetensors with token_mode = mean (each scale's map
    softmax(G) E; config.token_mode), run as case a (cfg 2: the CFG mix feeds the softmax). Holds
    m.s{si}.idx (the sampled tokens, still reported), m.s{si}.f_hat and m.img_u8 (no colour fix)."""
    var, vae, cfg = load_model(os.path.join(out_dir, "tiny-model.safetensors"))
    mcfg = cfg.replace(token_mode=TOKMEAN_META["token_mode"])
    var.cfg, vae.cfg, vae.quantize.cfg = mcfg, mcfg, mcfg
    lr_m11, up01, lr01 = preprocess_lr(lr_u8, cfg.hr_size)
    out, _ = _case("m", var, vae, lr_m11, up01, lr01, CASE_A, per_scale_f_hat=True, images=True)
    tensors = {k: v for k, v in out.items() if ".idx" in k or ".f_hat" in k or k == "m.img_u8"}
    meta = {**TOKMEAN_META, **{f"m.{k}": (repr(v) if isinstance(v, float) else str(v)) for k, v in CASE_A.items()}}
    path = os.path.join(out_dir, "golden-tokmean.safetensors")
    save_file(tensors, path, meta)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="write the tiny-config golden fixtures")
    ap.add_argument("--out", required=True, help="output directory (../test/fixtures/golden)")
    args = ap.parse_args(argv)
    for name, path in generate(args.out).items():
        print(f"{name}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
