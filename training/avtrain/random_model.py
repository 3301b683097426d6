"""A random-weight model file for benchmarks (bench/upscale.bench.ts).

Run from training/:  python3 -m avtrain.random_model --preset small512 --dtype bf16 --out /tmp/x.safetensors

Builds AlignVAR + the inference-only VQVAE for a config preset (config.py: tiny, small,
small512, d24), re-draws every weight with the golden generator's well-scaled random draws
(golden.randomize_transformer / randomize_vqvae: activations stay O(1), no denormals or
overflow, so timings are those of a trained model) and writes it with export.export_model, i.e.
exactly the key names, dtypes and __metadata__ of a real export. Weights are seeded, so a file
is reproducible; it is a throwaway (tens of MB): write it to a temp path, never commit it.
"""

from __future__ import annotations

import argparse

import torch

from .config import PRESETS, preset
from .export import export_model
from .golden import randomize_transformer, randomize_vqvae
from .model import AlignVAR
from .vqvae import VQVAE


def build(name: str, seed: int = 0):
    cfg = preset(name)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    var = AlignVAR(cfg).eval()
    vae = VQVAE(cfg, with_encoder=False).eval()
    randomize_transformer(var, g)
    randomize_vqvae(vae, g)
    return var, vae, cfg


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--out", required=True, help="output .safetensors path (a temp path)")
    ap.add_argument("--dtype", default="bf16", choices=("f32", "f16", "bf16"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    var, vae, cfg = build(args.preset, args.seed)
    export_model(var, vae, args.out, dtype=args.dtype)
    n = sum(p.numel() for p in var.parameters()) + sum(p.numel() for p in vae.parameters())
    print(f"wrote {args.out}: preset={args.preset} dtype={args.dtype} params={n} lr={cfg.lr_size} hr={cfg.hr_size}")


if __name__ == "__main__":
    main()
