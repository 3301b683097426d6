"""Export AlignVAR + VQVAE to one safetensors file, and load it back.

File layout: the transformer keys (spec 8.2 / 11.7) and the VQVAE keys (spec 8.3), both
unprefixed (the two key sets never collide). By default only what inference needs is kept
from the VQVAE: decoder.*, post_quant_conv.*, quantize.embedding.weight and the Phi convs
quantize.quant_resi.qresi_ls.*; --keep-encoder also keeps encoder.* and quant_conv.*.
Recomputable buffers (zero_k_bias, lvl_1L, attn_bias_for_masking, the RoPE tables) and the
VQVAE usage statistics (quantize.ema_vocab_hit_SV) are never written.

dtype (f32 | f16 | bf16) applies to the weight matrices of Linear and Conv layers (keys ending
in ".weight" with >= 2 dims) outside sca.* and quantize.*; everything else (biases, norms,
embedding tables, pos_start, scale_mul, mask_lambda, gamma, the codebook, the Phi convs and
the mask generator) stays f32, matching spec 0's precision notes.

__metadata__: every ModelConfig field as a string (patch_nums "1,2,3,...", bools "1"/"0"),
"format": "alignvar", "sca": "1"/"0", "dtype", "has_encoder": "1"/"0".

CLI: python3 -m avtrain.export --ckpt runs/x/var.pt --out model.safetensors --dtype bf16
     [--vqvae runs/dec/vqvae.pt]   (the VQVAE of a train_vqvae / train_decoder checkpoint instead of
     the one in --ckpt: it must hold the same codebook and Phi convs, so the tokens mean the same;
     its config's decoder-side options, e.g. decoder_lr, go to the file)
"""

from __future__ import annotations

import argparse
from typing import Dict, Tuple

import torch

from .config import ModelConfig, config_from_metadata, config_to_metadata
from .model import AlignVAR, detect_sca
from .safetensors_io import load_file, save_file
from .vqvae import VQVAE

VQ_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")
_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def is_vq_key(k: str) -> bool:
    return k.startswith(VQ_PREFIXES)


def castable(name: str, t: torch.Tensor) -> bool:
    return (
        t.is_floating_point() and t.ndim >= 2 and name.endswith(".weight")
        and not name.startswith(("sca.", "quantize."))
        and name not in ("class_emb.weight", "lvl_embed.weight")
    )


def export_tensors(var: AlignVAR, vae: VQVAE, dtype: str = "f32", keep_encoder: bool = False) -> Dict[str, torch.Tensor]:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    out: Dict[str, torch.Tensor] = {}
    for k, v in var.state_dict().items():
        out[k] = v.detach().float().cpu()
    for k, v in vae.state_dict().items():
        if k == "quantize.ema_vocab_hit_SV":
            continue
        if not keep_encoder and (k.startswith("encoder.") or k.startswith("quant_conv.")):
            continue
        if k in out:
            raise ValueError(f"key collision between transformer and VQVAE: {k}")
        out[k] = v.detach().float().cpu()
    target = _DTYPES[dtype]
    return {k: (v.to(target) if castable(k, v) else v).contiguous() for k, v in out.items()}


def export_metadata(cfg: ModelConfig, dtype: str, has_encoder: bool) -> Dict[str, str]:
    meta = config_to_metadata(cfg)
    meta.update({"format": "alignvar", "sca": "1" if cfg.sca else "0", "dtype": dtype,
                 "has_encoder": "1" if has_encoder else "0"})
    return meta


def export_model(var: AlignVAR, vae: VQVAE, path: str, dtype: str = "f32", keep_encoder: bool = False) -> None:
    keep = keep_encoder and vae.with_encoder
    tensors = export_tensors(var, vae, dtype, keep)
    save_file(tensors, path, export_metadata(var.cfg, dtype, keep))


def load_model(path: str, device="cpu") -> Tuple[AlignVAR, VQVAE, ModelConfig]:
    """Load an exported file -> (AlignVAR, VQVAE, cfg), all fp32, in eval mode.

    SCA is enabled iff all SCA keys are present (a partial set raises); the metadata's "sca"
    must agree with the keys.
    """
    tensors, meta = load_file(path)
    if meta.get("format") != "alignvar":
        raise ValueError(f"{path}: metadata format is {meta.get('format')!r}, expected 'alignvar'")
    var_sd = {k: v.float() for k, v in tensors.items() if not is_vq_key(k)}
    vq_sd = {k: v.float() for k, v in tensors.items() if is_vq_key(k)}
    has_sca = detect_sca(var_sd.keys())
    cfg = config_from_metadata(meta)
    if "sca" in meta and cfg.sca != has_sca:
        raise ValueError(f"{path}: metadata sca={meta['sca']} but the SCA keys are {'present' if has_sca else 'absent'}")
    cfg = cfg.replace(sca=has_sca)
    var = AlignVAR(cfg)
    var.load_checked(var_sd)
    vae = VQVAE(cfg, with_encoder="encoder.conv_in.weight" in vq_sd)
    missing, unexpected = vae.load_state_dict(vq_sd, strict=False)
    if unexpected or [k for k in missing if k != "quantize.ema_vocab_hit_SV"]:
        raise ValueError(f"{path}: VQVAE keys do not match (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return var.to(device).eval(), vae.to(device).eval(), cfg


def load_training_checkpoint(path: str):
    """A train_var.py checkpoint -> (AlignVAR, VQVAE, cfg) with the checkpoint's weights."""
    ck = torch.load(path, map_location="cpu")
    cfg = config_from_metadata(ck["cfg"])
    var = AlignVAR.from_state_dict(ck["var"], cfg)
    vae = VQVAE(var.cfg, with_encoder=any(k.startswith("encoder.") for k in ck["vqvae"]))
    vae.load_state_dict(ck["vqvae"], strict=True)
    return var.eval(), vae.eval(), var.cfg


def replace_vqvae(var: AlignVAR, vae: VQVAE, path: str) -> Tuple[AlignVAR, VQVAE, ModelConfig]:
    """The VQVAE of a stage-1 checkpoint in place of `vae`; the tokenizer must be the same."""
    ck = torch.load(path, map_location="cpu")
    vcfg = config_from_metadata(ck["cfg"])
    sd = ck["vqvae"]
    for k in ["quantize.embedding.weight"] + [k for k in sd if k.startswith("quantize.quant_resi.")]:
        if k not in sd or not torch.equal(sd[k].float(), vae.state_dict()[k].float()):
            raise ValueError(f"{path}: {k} differs from the transformer checkpoint's: not the same tokenizer")
    cfg = var.cfg.replace(decoder_lr=vcfg.decoder_lr)
    new = VQVAE(cfg, with_encoder=any(k.startswith("encoder.") for k in sd))
    new.load_state_dict(sd, strict=True)
    var.cfg = cfg
    return var, new.eval(), cfg


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True, help="checkpoint written by avtrain.train_var")
    ap.add_argument("--out", required=True, help="output .safetensors path")
    ap.add_argument("--dtype", default="f32", choices=sorted(_DTYPES))
    ap.add_argument("--keep-encoder", action="store_true", help="also write encoder.* and quant_conv.*")
    ap.add_argument("--vqvae", default=None, help="take the VQVAE from this stage-1 checkpoint (same tokenizer)")
    ap.add_argument("--token-mode", default=None, choices=("sample", "mean"),
                    help="ModelConfig.token_mode written to the file (default: the checkpoint's)")
    args = ap.parse_args(argv)
    var, vae, cfg = load_training_checkpoint(args.ckpt)
    if args.vqvae:
        var, vae, cfg = replace_vqvae(var, vae, args.vqvae)
    if args.token_mode:
        cfg = var.cfg = cfg.replace(token_mode=args.token_mode)
    export_model(var, vae, args.out, dtype=args.dtype, keep_encoder=args.keep_encoder)
    n = sum(t.numel() for t in export_tensors(var, vae, args.dtype, args.keep_encoder and vae.with_encoder).values())
    print(f"wrote {args.out}: {n} values, sca={int(cfg.sca)}, dtype={args.dtype}")


if __name__ == "__main__":
    main()
