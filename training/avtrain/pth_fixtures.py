"""`.pth` fixtures for the Node converter (src/convert/), written by torch.save in VARSR's layout.

Run from training/:  /usr/bin/python3 -m avtrain.pth_fixtures --out ../test/fixtures/pth

Writes (recipe and contents: test/fixtures/pth/README.md):
- varsr-tiny.pth: the official nesting (spec 8.1) {'epoch', 'iter', 'trainer': {'config',
  'var_wo_ddp', 'vae_local', 'var_opt'}, 'args'} for a tiny config. var_wo_ddp holds VARSR's
  keys (spec 8.2) including the persistent buffers (lvl_1L, attn_bias_for_masking,
  blocks.*.attn.zero_k_bias) and a refiner (decoder_norm.*, diffloss.net.*, refiner.py);
  head.weight is stored as a transposed (non-contiguous) view and q_bias / v_bias share one
  storage. vae_local is the full VQVAE (encoder included, spec 8.3) in bf16. var_opt is an AdamW
  state dict after one step; args is an argparse.Namespace.
- vae-plain-tiny.pth: the same VQVAE as VAR's plain `vae_ch160v4096z32.pth` state dict, in f16.
- views.pth: a plain dict of tensors exercising the reader: strided, offset, transposed,
  expanded (stride 0) and shared-storage views, bf16/f16/f64/int64 storages, and torch's own
  f32 -> bf16 / f16 roundings of one random tensor.
- evil.pth: a valid torch zip whose pickle calls os.system('touch <MARKER>') when loaded by
  pickle; checked here to really run the command under torch.load, then the marker is removed.
- golden-pth.safetensors: the reference's outputs for varsr-tiny.pth's weights as loaded back by
  torch.load (bf16 VQVAE weights upcast to f32): per-scale tokens and f_hat, the decoder output;
  the refiner stage on them (`ref.*`: z, the initial noise, per sampler step eps and x, the
  refined residual, f_hat and decoder output after it; guidance w = cfg_scale), and the same
  generation without guidance (`nocfg.*`: cfg 0, the refiner on the conditional half alone).

d24: `--d24 PATH [--dtype f32|bf16]` writes a d24-shaped random-weight VARSR .pth (no optimizer,
var_wo_ddp and vae_local in one trainer dict) for the memory test; a throwaway, never commit it.
"""

from __future__ import annotations

import argparse
import math
import os
from collections import OrderedDict

import numpy as np
import torch

from .config import ModelConfig, d24
from .golden import randomize_transformer, randomize_vqvae
from .model import AlignVAR
from .refiner import DiffLoss, SimpleMLPAdaLN, refine_f_hat, refiner_noise, STEPS
from .resample import preprocess_lr
from .safetensors_io import save_file
from .vqvae import VQVAE

SEED = 20241203
MARKER = "/tmp/alignvar-pth-fixture-pwned"
REFINER_WIDTH = 16
REFINER_BLOCKS = 2
CASE = dict(cfg_scale=2.0, top_k=1, top_p=0.0, seed=0)
# Every random weight is drawn in float64 and rounded to float32: PyTorch draws float32 normals
# with a kernel chosen by CPU capability (ATEN_CPU_CAPABILITY default and avx2 differ by an ulp),
# float64 draws are the same on every x86 CPU, so the .pth fixtures regenerate byte for byte
# everywhere (test_pth_fixtures; issue 10).
DRAW = torch.float64


def pth_tiny() -> ModelConfig:
    """The smallest config the engine accepts with every VARSR key family: 8x8 HR, 2x2 LR."""
    return ModelConfig(
        depth=1, width=32, heads=2, mlp_ratio=4.0, vocab=16, cvae=4,
        vq_ch=32, vq_ch_mult=(1, 1), vq_num_res=0, vq_attn_at_lowest=True,
        cond_ch=(8, 8), patch_nums=(1, 2, 3, 4), sca=False,
    )


def varsr_buffers(cfg: ModelConfig) -> "OrderedDict[str, torch.Tensor]":
    """VARSR's persistent buffers: lvl_1L [1,T] int64, attn_bias_for_masking [1,1,T,T], zero_k_bias."""
    lvl = torch.tensor(cfg.level_of_position, dtype=torch.int64).view(1, -1)
    d = lvl[0]
    bias = torch.where(d[:, None] >= d[None, :], 0.0, -math.inf).float().view(1, 1, cfg.T, cfg.T)
    out = OrderedDict()
    for i in range(cfg.depth):
        out[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros(cfg.width)
    out["lvl_1L"] = lvl
    out["attn_bias_for_masking"] = bias
    return out


def refiner_state(cfg: ModelConfig, g: torch.Generator, width: int, blocks: int) -> "OrderedDict[str, torch.Tensor]":
    dl = DiffLoss(cfg.cvae, cfg.width, width, blocks)
    with torch.no_grad():
        for p in dl.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DRAW) * (1.0 / math.sqrt(p.shape[-1]) if p.ndim >= 2 else 0.05))
        # Smaller eps keeps x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps mostly inside the clamp.
        dl.net.final_layer.linear.weight.mul_(0.1)
    out = OrderedDict()
    out["decoder_norm.weight"] = (1.0 + 0.1 * torch.randn(cfg.width, generator=g, dtype=DRAW)).float()
    out["decoder_norm.bias"] = (0.1 * torch.randn(cfg.width, generator=g, dtype=DRAW)).float()
    for k, v in dl.state_dict().items():
        out[f"diffloss.{k}"] = v
    return out


def build_tiny():
    cfg = pth_tiny()
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    var = AlignVAR(cfg).eval()
    vae = VQVAE(cfg, with_encoder=True).eval()
    randomize_transformer(var, g, draw=DRAW)
    randomize_vqvae(vae, g, draw=DRAW)
    return cfg, var, vae, g


def var_wo_ddp(cfg, var, g) -> "OrderedDict[str, torch.Tensor]":
    sd = var.state_dict()
    C = cfg.width
    # q_bias and v_bias: two views of one storage (offsets 0 and C).
    qv = torch.cat([sd["blocks.0.attn.q_bias"], sd["blocks.0.attn.v_bias"]]).clone()
    sd["blocks.0.attn.q_bias"] = qv[:C]
    sd["blocks.0.attn.v_bias"] = qv[C:]
    # head.weight: a transposed view (strides (1, V)), same values.
    sd["head.weight"] = sd["head.weight"].t().contiguous().t()
    assert not sd["head.weight"].is_contiguous()
    sd.update(varsr_buffers(cfg))
    sd.update(refiner_state(cfg, g, REFINER_WIDTH, REFINER_BLOCKS))
    return sd


def var_opt(var: AlignVAR):
    """AdamW state after one step on a loss that touches only head.bias (keeps the file small)."""
    opt = torch.optim.AdamW(var.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    var.head.bias.sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"optim": opt.state_dict()}


def trainer_config(cfg: ModelConfig) -> dict:
    """What VAR's VARTrainer.get_config() writes: plain data."""
    return {"patch_nums": tuple(cfg.patch_nums), "resos": tuple(p * 2 for p in cfg.patch_nums),
            "label_smooth": 0.0, "prog_it": 0, "last_prog_si": -1, "first_prog": True}


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def write_evil(path: str) -> None:
    torch.save({"trainer": {"var_wo_ddp": OrderedDict(w=torch.zeros(2)), "payload": _Evil()}}, path)
    # Prove the fixture is live: Python's own pickle runs the command.
    if os.path.exists(MARKER):
        os.remove(MARKER)
    torch.load(path, map_location="cpu")  # torch 1.13: full pickle, so this runs the command
    assert os.path.exists(MARKER), "evil.pth did not run its command under pickle"
    os.remove(MARKER)


def write_views(path: str) -> None:
    g = torch.Generator().manual_seed(SEED + 7)
    base = (torch.arange(48, dtype=torch.float32) - 20.0) / 4.0  # exact in f16 and bf16
    m = base.view(6, 8)
    src = (torch.randn(64, generator=g, dtype=DRAW) * 3.0).float()
    src[:4] = torch.tensor([1e-8, -7e-6, 65504.0, 1.0 + 2 ** -9])  # f16 subnormal, overflow edge, bf16 tie
    d = OrderedDict()
    d["contig"] = m
    d["transposed"] = m.t()                # [8, 6], strides (1, 8)
    d["strided"] = m[:, ::3]               # [6, 3], strides (8, 3)
    d["offset"] = base[10:20]              # storage offset 10, shares the storage of contig
    d["expanded"] = base[:3].view(3, 1).expand(3, 4)  # stride 0
    d["scalar"] = base[5]                  # shape [], offset 5
    d["bf16"] = m.to(torch.bfloat16)
    d["f16_t"] = m.to(torch.float16).t()
    d["f64"] = m.double()
    d["i64"] = torch.arange(5, dtype=torch.int64)
    d["src_f32"] = src
    d["src_bf16"] = src.to(torch.bfloat16)
    d["src_f16"] = src.to(torch.float16)
    torch.save(d, path)


@torch.no_grad()
def write_golden(path: str, varsr_path: str) -> None:
    ck = torch.load(varsr_path, map_location="cpu")
    tr = ck["trainer"]
    cfg = pth_tiny()
    var = AlignVAR.from_state_dict({k: v.float() for k, v in tr["var_wo_ddp"].items()}, cfg).eval()
    vae = VQVAE(cfg, with_encoder=True).eval()
    vae.load_state_dict({k: v.float() for k, v in tr["vae_local"].items()}, strict=True)
    rng = np.random.default_rng(SEED)
    lr_u8 = rng.integers(0, 256, (2, cfg.lr_size, cfg.lr_size, 3), dtype=np.uint8)
    lr_m11, up01, lr01 = preprocess_lr(lr_u8, cfg.hr_size)
    sd = tr["var_wo_ddp"]
    B, L, C, Cv = 2, cfg.grid * cfg.grid, cfg.width, cfg.cvae
    net = SimpleMLPAdaLN(Cv, C, REFINER_WIDTH, REFINER_BLOCKS).eval()
    net.load_state_dict({k[len("diffloss.net."):]: v.float() for k, v in sd.items() if k.startswith("diffloss.net.")})
    dec_norm = torch.nn.LayerNorm(C, eps=1e-6)
    dec_norm.load_state_dict({"weight": sd["decoder_norm.weight"].float(), "bias": sd["decoder_norm.bias"].float()})

    def run(cfg_scale):
        seen = []
        hook = var.head_nm.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
        try:
            f_hat, _, inter = var.generate(vae, lr_m11, lr01, cfg_scale=cfg_scale, top_k=CASE["top_k"],
                                           top_p=CASE["top_p"], seed=CASE["seed"], image_keys=[0, 1],
                                           return_intermediates=True, adain_src=up01)
        finally:
            hook.remove()
        # The refiner (spec 6.2) on the same weights: z from the last scale's residual stream (both
        # halves, the head_nm input) and the conditional half's tokens; guidance w = cfg_scale.
        f_ref, z, refined, steps = refine_f_hat(net, dec_norm, var.word_embed, vae.quantize.embedding.weight,
                                                seen[-1], inter["scales"][-1]["idx"], f_hat, seed=CASE["seed"],
                                                image_keys=[0, 1], cfg_scale=cfg_scale, return_steps=True)
        return inter, f_ref, z, refined, steps

    inter, f_ref, z, refined, steps = run(CASE["cfg_scale"])
    out = {"input.lr_u8": torch.from_numpy(lr_u8)}
    for si, s in enumerate(inter["scales"]):
        out[f"s{si}.idx"] = s["idx"].to(torch.int32).contiguous()
        out[f"s{si}.f_hat"] = s["f_hat"].float().contiguous()
    out["dec"] = inter["dec"].float().contiguous()
    out["img_u8"] = inter["img_u8"].contiguous()
    out["ref.z"] = z.contiguous()
    out["ref.noise"] = refiner_noise(CASE["seed"], [0, 1], STEPS, L, Cv)
    for st in steps:
        out[f"ref.n{st['n']}.eps"] = st["eps"].contiguous()
        out[f"ref.n{st['n']}.x"] = st["x"].contiguous()
    out["ref.refined"] = refined.contiguous()
    out["ref.f_hat"] = f_ref.contiguous()
    out["ref.dec"] = vae.decode(f_ref).float().contiguous()
    inter0, f_ref0, _, refined0, _ = run(0.0)
    out["nocfg.idx"] = inter0["scales"][-1]["idx"].to(torch.int32).contiguous()
    out["nocfg.refined"] = refined0.contiguous()
    out["nocfg.f_hat"] = f_ref0.contiguous()
    out["nocfg.dec"] = vae.decode(f_ref0).float().contiguous()
    meta = {k: repr(v) if isinstance(v, float) else str(v) for k, v in CASE.items()}
    meta["patch_nums"] = ",".join(str(p) for p in cfg.patch_nums)
    save_file(out, path, meta)


def generate(out_dir: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        os.makedirs(out_dir, exist_ok=True)
        cfg, var, vae, g = build_tiny()
        sd = var_wo_ddp(cfg, var, g)
        vae_sd = OrderedDict((k, v.to(torch.bfloat16) if v.is_floating_point() else v)
                             for k, v in vae.state_dict().items())
        args = argparse.Namespace(depth=cfg.depth, patch_nums="1_2_3_4", tblr=1e-4, vae_ckpt="VQVAE.pth")
        ck = {"epoch": 3, "iter": 120, "trainer": {"config": trainer_config(cfg), "var_wo_ddp": sd,
                                                    "vae_local": vae_sd, "var_opt": var_opt(var)},
              "args": args}
        varsr = os.path.join(out_dir, "varsr-tiny.pth")
        torch.save(ck, varsr)
        torch.save(OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in vae.state_dict().items()),
                   os.path.join(out_dir, "vae-plain-tiny.pth"))
        write_views(os.path.join(out_dir, "views.pth"))
        write_evil(os.path.join(out_dir, "evil.pth"))
        write_golden(os.path.join(out_dir, "golden-pth.safetensors"), varsr)
    finally:
        torch.set_num_threads(threads)


def write_d24(path: str, dtype: str) -> None:
    """d24 VARSR + VQVAE with random weights (not well scaled: only shapes and bytes matter)."""
    cfg = d24().replace(sca=False)
    dt = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    with torch.no_grad():
        var = AlignVAR(cfg, device="meta")
        sd = OrderedDict((k, torch.empty(v.shape, dtype=dt).normal_(0, 0.02)) for k, v in var.state_dict().items())
        sd.update(varsr_buffers(cfg))
        g = torch.Generator().manual_seed(0)
        sd.update(OrderedDict((k, v.to(dt)) for k, v in refiner_state(cfg, g, 1024, 6).items()))
        vae = VQVAE(cfg, with_encoder=True, device="meta")
        vsd = OrderedDict((k, torch.empty(v.shape, dtype=torch.float32).normal_(0, 0.02)) for k, v in vae.state_dict().items())
    torch.save({"epoch": 0, "iter": 0, "trainer": {"config": trainer_config(cfg), "var_wo_ddp": sd, "vae_local": vsd},
                "args": {}}, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="output directory (../test/fixtures/pth)")
    ap.add_argument("--d24", help="write a d24-shaped random VARSR .pth here instead (a temp path)")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    args = ap.parse_args(argv)
    if args.d24:
        write_d24(args.d24, args.dtype)
        print(f"{args.d24}: {os.path.getsize(args.d24)} bytes")
        return
    if not args.out:
        ap.error("--out or --d24 is required")
    generate(args.out)
    for n in sorted(os.listdir(args.out)):
        print(f"{n}: {os.path.getsize(os.path.join(args.out, n))} bytes")


if __name__ == "__main__":
    main()
