"""Presets for the shipped CPU model (models/alignvar-default.safetensors) and a runner for them.

config.py's presets are looked up by name in config.PRESETS; this module adds its own presets to
that dict at import time and dispatches to the two training stages and the export, so the stock
command lines work with `--config default`:

    cd training
    python3 -m avtrain.presets_default vqvae --config default --out runs/vq-default ...
    python3 -m avtrain.presets_default var   --config default --vqvae runs/vq-default/vqvae.pt ...
    python3 -m avtrain.presets_default export --ckpt runs/var-default/var.pt --out ../models/x.safetensors \
        --dtype bf16 --cfg 0

`export` is avtrain.export plus extra metadata keys: `cfg` (the engine's default guidance
weight; it falls back to 6 without it) and, with --color-fix, `color_fix` (the engine's default
colour fix; adain without it). The models here are trained with label 0 only (the data
has no low-quality class), so the negative class embedding is untrained and guidance must be 0.

Why these sizes (measured on 2 CPU cores, see models/MODEL_CARD.md): a ~1 hour CPU budget allows
~1,000 stage-1 steps of batch 8 and ~2,000 stage-2 steps of batch 4. The transformer is very small
(depth 3, C 192). The VQVAE (ch 32) and the conditioning net downsample by 8, not 16, so the 936
tokens of the 256-px schedule describe a 128x128 tile: four times the token rate of the spec's
16x, which a VQVAE this small needs to reconstruct anything.
"""

from __future__ import annotations

import importlib
import sys

from . import config as _config
from .config import PATCH_NUMS_256, PATCH_NUMS_512, ModelConfig


def default() -> ModelConfig:
    """The shipped CPU model: depth 3, C 192, 3 heads (hd 64), V 512; VQVAE and conditioning net
    downsample by 8 (4 levels), so the 16x16 latent grid of the 256-px schedule covers a 128x128 HR
    tile (32x32 LR). See models/MODEL_CARD.md for why 8x and not the spec's 16x."""
    return ModelConfig(
        depth=3, width=192, heads=3, mlp_ratio=4.0, vocab=512, cvae=16,
        vq_ch=32, vq_ch_mult=(1, 2, 2, 4), vq_num_res=1, vq_attn_at_lowest=True,
        cond_ch=(16, 32, 64, 128), patch_nums=PATCH_NUMS_256,
    )


def preview16() -> ModelConfig:
    """The first CPU preview (session 1): the spec's 16x downsampling, 256x256 HR tiles."""
    return ModelConfig(
        depth=3, width=192, heads=3, mlp_ratio=4.0, vocab=512, cvae=16,
        vq_ch=32, vq_ch_mult=(1, 1, 2, 2, 4), vq_num_res=1, vq_attn_at_lowest=True,
        cond_ch=(16, 32, 64, 96, 128), patch_nums=PATCH_NUMS_256,
    )


def default_d2() -> ModelConfig:
    """Speed candidate: depth 2, C 128, 2 heads."""
    return default().replace(depth=2, width=128, heads=2, vocab=256)


def default_d4() -> ModelConfig:
    """Speed candidate: depth 4, C 256, 4 heads, V 1024."""
    return default().replace(depth=4, width=256, heads=4, vocab=1024)


def default_abl() -> ModelConfig:
    """Ablation runs (paper Tables 3/4 in miniature): depth 2, C 128, on default()'s VQVAE (V 512)."""
    return default().replace(depth=2, width=128, heads=2)


def gpu_default() -> ModelConfig:
    """Larger settings for a GPU run: spec 9.3's small config (depth 6, C 384, VQVAE ch 64)."""
    return _config.small()


def gpu_default512() -> ModelConfig:
    return _config.small().replace(patch_nums=PATCH_NUMS_512)


def residual() -> ModelConfig:
    """Issue 11 redesign: default()'s sizes with the residual latent (the VQVAE tokenizes
    (HR - up4(LR)) / 0.25, the output is up4(LR) + 0.25 * decoder; see config.ModelConfig)."""
    return default().replace(latent="residual", residual_scale=0.25)


def residual_v1k() -> ModelConfig:
    """Capacity candidate: residual() with V 1024 and Cvae 32."""
    return residual().replace(vocab=1024, cvae=32)


def residual_ch64() -> ModelConfig:
    """Capacity candidate: residual() with a VQVAE of width 64 (GroupNorm(32) = 2 channels per group)."""
    return residual().replace(vq_ch=64, vq_ch_mult=(1, 1, 2, 2))


PRESETS = {"default": default, "residual": residual, "residual_v1k": residual_v1k, "residual_ch64": residual_ch64, "preview16": preview16, "default_d2": default_d2, "default_d4": default_d4, "default_abl": default_abl,
           "gpu_default": gpu_default, "gpu_default512": gpu_default512}
_config.PRESETS.update(PRESETS)


def _export(argv) -> None:
    import argparse

    from . import export as ex
    from .safetensors_io import load_file, save_file

    ap = argparse.ArgumentParser(description="avtrain.export + a 'cfg' metadata key")
    ap.add_argument("--cfg", default="0", help="default guidance weight written to __metadata__['cfg']")
    ap.add_argument("--color-fix", default=None, choices=("adain", "wavelet", "none"),
                    help="default colour fix written to __metadata__['color_fix'] (absent: the engine uses adain)")
    ap.add_argument("--status", default=None, help="a one-line model status written to __metadata__['status'] "
                    "(the CLI prints it whenever it loads the model)")
    own, rest = ap.parse_known_args(argv)
    ex.main(rest)
    out = rest[rest.index("--out") + 1]
    tensors, meta = load_file(out)
    meta = dict(meta)
    meta["cfg"] = str(float(own.cfg))
    if own.color_fix:
        meta["color_fix"] = own.color_fix
    if own.status:
        meta["status"] = own.status
    save_file(tensors, out, meta)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("vqvae", "var", "export"):
        raise SystemExit("usage: python3 -m avtrain.presets_default {vqvae|var|export} [args of that stage]")
    cmd, rest = argv[0], argv[1:]
    if cmd == "vqvae":
        importlib.import_module(".train_vqvae", __package__).main(rest)
    elif cmd == "var":
        importlib.import_module(".train_var", __package__).main(rest)
    else:
        _export(rest)


if __name__ == "__main__":
    main()
