"""Compact, weights-only checkpoints that let a run continue on a fresh machine.

A run's own checkpoints (runs/<name>/vqvae.pt or var.pt) hold fp32 weights plus the AdamW
moments and RNG states: 3-4x the weights, too large to commit. `make` keeps only what a
continuation needs: the config metadata, the step, the weights in fp16 (floating tensors; the
integer buffers as they are), the VQVAE usage statistics, and the args. `restore` turns it back
into a normal checkpoint that `--resume` accepts: same step, weights cast back to fp32, a fresh
optimizer state (AdamW moments restart from zero, which the lin0 schedule's lr at that step
tolerates), fresh RNG state. Batches are a function of the step, so the data order continues.

    cd training
    python3 -m avtrain.compact make --ckpt runs/vq-residual/vqvae.pt --out checkpoints/vq-residual-step300.pt
    python3 -m avtrain.compact restore --compact checkpoints/vq-residual-step300.pt --out runs/vq-residual/vqvae.pt

A compact stage-2 checkpoint also holds the VQVAE (encoder included): `restore` of a var
checkpoint writes var.pt and, with --vqvae-out, the frozen stage-1 vqvae.pt it needs.
The fp16 rounding changes the weights by < 1e-3 relative; a continued stage 2 therefore sees
tokens of the rounded VQVAE, which is the one it then keeps.
"""

from __future__ import annotations

import argparse
import os
from typing import Dict

import torch

from .config import config_from_metadata
from .trainutil import param_groups, rng_state, save_checkpoint

FORMAT = "avtrain-compact-1"


def _half(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in sd.items()}


def _full(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def make(ckpt: str, out: str) -> Dict:
    ck = torch.load(ckpt, map_location="cpu")
    stage = "var" if "var" in ck else "vqvae"
    c = {"format": FORMAT, "stage": stage, "cfg": ck["cfg"], "step": int(ck["step"]), "args": ck.get("args"),
         "vqvae": _half(ck["vqvae"])}
    if stage == "var":
        c["var"] = _half(ck["var"])
    else:
        c["record_hit"] = int(ck.get("record_hit", 1))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_checkpoint(out, c)
    return c


def _adamw(model, args, wd_default: float):
    """A fresh AdamW with the run's own betas and weight decay (load_state_dict keeps these)."""
    a = args or {}
    return torch.optim.AdamW(param_groups(model, a.get("wd", wd_default)), lr=a.get("lr", 1e-4),
                             betas=(a.get("beta1", 0.9), a.get("beta2", 0.95)))


def restore(compact: str, out: str, vqvae_out: str = None) -> Dict:
    from .model import AlignVAR
    from .vqvae import VQVAE

    c = torch.load(compact, map_location="cpu")
    if c.get("format") != FORMAT:
        raise ValueError(f"{compact}: not a compact checkpoint (format {c.get('format')!r}, expected {FORMAT!r})")
    cfg = config_from_metadata(c["cfg"])
    vae = VQVAE(cfg)
    vae.load_state_dict(_full(c["vqvae"]))
    if c["stage"] == "vqvae":
        opt = _adamw(vae, c.get("args"), 0.0)
        save_checkpoint(out, {"cfg": c["cfg"], "vqvae": vae.state_dict(), "opt": opt.state_dict(), "step": c["step"],
                              "rng": rng_state(), "record_hit": c.get("record_hit", 1),
                              "gen": torch.Generator().manual_seed(c["step"]).get_state(), "args": c.get("args")})
        return c
    var = AlignVAR(cfg)
    var.load_checked(_full(c["var"]))
    opt = _adamw(var, c.get("args"), 0.05)
    save_checkpoint(out, {"cfg": c["cfg"], "var": var.state_dict(), "vqvae": vae.state_dict(), "opt": opt.state_dict(),
                          "step": c["step"], "rng": rng_state(), "args": c.get("args")})
    if vqvae_out:
        vopt = _adamw(vae, None, 0.0)
        save_checkpoint(vqvae_out, {"cfg": c["cfg"], "vqvae": vae.state_dict(), "opt": vopt.state_dict(), "step": -1,
                                    "rng": rng_state(), "record_hit": 1, "args": None})
    return c


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="compact weights-only checkpoints (make / restore)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--ckpt", required=True, help="a train_vqvae or train_var checkpoint")
    m.add_argument("--out", required=True)
    r = sub.add_parser("restore")
    r.add_argument("--compact", required=True)
    r.add_argument("--out", required=True, help="the run's checkpoint path (runs/<name>/vqvae.pt or var.pt)")
    r.add_argument("--vqvae-out", default=None, help="stage 2 only: also write the frozen stage-1 vqvae.pt here")
    args = ap.parse_args(argv)
    if args.cmd == "make":
        c = make(args.ckpt, args.out)
        print(f"wrote {args.out}: stage {c['stage']}, step {c['step']}, {os.path.getsize(args.out)} bytes")
    else:
        if os.path.exists(args.out):
            raise SystemExit(f"{args.out} exists; restore only seeds a fresh run folder")
        c = restore(args.compact, args.out, args.vqvae_out)
        print(f"wrote {args.out}: stage {c['stage']}, step {c['step']}; continue with --resume")


if __name__ == "__main__":
    main()
