"""Where the quality goes (issue 11; the paper's Fig. 9 in small), on the validation crops.

    cd training
    python3 -m avtrain.diagnose --ckpt runs/var-residual/var.pt --out-md diag.md --out-json diag.json
    python3 -m avtrain.diagnose --model ../models/alignvar-default.safetensors ...   # (c), (e) only
    python3 -m avtrain.diagnose --vqvae runs/vq-residual/vqvae.pt ...                # (a) only

One centre crop of the model's tile size (cfg.hr_size, e.g. 128x128 HR from 32x32 LR) per
validation image of training/avtrain/split.json, the LR made by --degrade ('bicubic' = clean,
'realesrgan' = degraded; the val seed depends only on the image). One crop is one tile, so no
tiling or blending enters any figure. Rows:

- baseline: PIL bicubic of the LR (the residual latent's base) and lanczos3.
- (a) tokenizer ceiling: HR -> encoder -> residual quantizer (all K scales) -> decoder, raw and
  after the colour fixes; codes in use = distinct indices over all scales and images.
  Needs an encoder (a training checkpoint, or an export with --keep-encoder).
- (b) teacher-forced: ground-truth tokens for scales 0..k-1, greedy predictions from scale k on,
  for each k (k = 0 is free-running greedy, k = K is the tokenizer ceiling). Needs an encoder.
- (c) free-running: greedy and sampled (top-k / top-p, and cfg where the model has a trained
  negative class) generations.
- (d) per scale: teacher-forced token accuracy (argmax of the teacher-forced logits) and
  free-running greedy accuracy against the ground-truth tokens, and the MSE of the greedy
  cumulative f_hat against the ground truth's after each scale. Needs an encoder.
- (e) shuffled LR: (c)'s greedy with the transformer conditioned on another image's LR (rolled by
  one); a residual-latent output still adds back its own image's base, so only the transformer's
  use of the LR changes. Also the teacher-forced CE with the true and with the shuffled LR.

Metrics: PSNR-Y / SSIM-Y (BT.601 Y, 4-px border) averaged over the crops; sharpness = the summed
Sobel magnitude of the outputs' Y over that of the ground truths (metrics.py's definition, summed
over the set instead of averaged per image).
"""

from __future__ import annotations

import argparse
import json
from typing import Dict, List, Optional

import numpy as np
import torch

from . import metrics
from .data import PairDataset
from .losses import ce_loss
from .postprocess import adain_fix, to_uint8, wavelet_fix
from .resample import preprocess_lr
from .trainutil import collate
from .vqvae import VQVAE


def _sobel_sum(img: np.ndarray) -> float:
    y = metrics.rgb_to_y(img)[4:-4, 4:-4]
    return metrics._mean_sobel_magnitude(y)


def score_set(outs: np.ndarray, refs: np.ndarray) -> Dict[str, float]:
    """outs, refs uint8 [N, H, W, 3] -> mean PSNR-Y, mean SSIM-Y, summed-Sobel sharpness."""
    ps = [metrics.psnr_y(a, b) for a, b in zip(outs, refs)]
    ss = [metrics.ssim_y(a, b) for a, b in zip(outs, refs)]
    sh = sum(_sobel_sum(a) for a in outs) / sum(_sobel_sum(b) for b in refs)
    return {"psnr_y": float(np.mean(ps)), "ssim_y": float(np.mean(ss)), "sharpness": float(sh)}


def load_any(args):
    """(var or None, vae, cfg) from --ckpt (train_var), --model (export) or --vqvae (train_vqvae)."""
    from .config import config_from_metadata
    from .export import load_model, load_training_checkpoint

    if args.ckpt:
        var, vae, cfg = load_training_checkpoint(args.ckpt)
        return var, vae, cfg
    if args.model:
        return load_model(args.model)
    ck = torch.load(args.vqvae, map_location="cpu")
    cfg = config_from_metadata(ck["cfg"])
    vae = VQVAE(cfg)
    vae.load_state_dict(ck["vqvae"])
    return None, vae.eval(), cfg


def _fixes(dec_out: torch.Tensor, up01: torch.Tensor) -> Dict[str, np.ndarray]:
    sr = to_uint8(dec_out.float()).cpu()
    return {"raw": sr.numpy(), "adain": adain_fix(sr, up01).numpy(), "wavelet": wavelet_fix(sr, up01).numpy()}


@torch.no_grad()
def run(var, vae: VQVAE, cfg, data: str, degrade: str, n_images: int, seed: int = 0, batch: int = 4) -> Dict:
    ds = PairDataset(data, "val", hr_size=cfg.hr_size, degrade=degrade, seed=seed)
    items = collate([ds[i] for i in range(min(n_images, len(ds)))])
    hr = items["hr"]
    lr_u8 = items["lr_u8"].numpy()
    N = hr.shape[0]
    ref = to_uint8(hr).numpy()
    lr_m11, up01, lr01 = preprocess_lr(lr_u8, cfg.hr_size)
    res: Dict = {"n": N, "tile": cfg.hr_size, "degrade": degrade, "latent": cfg.latent, "rows": []}

    def add(group: str, name: str, outs: np.ndarray, **extra):
        res["rows"].append({"group": group, "name": name, **score_set(outs, ref), **extra})

    add("baseline", "bicubic (PIL)", np.stack([metrics.bicubic_upscale(x) for x in lr_u8]))
    add("baseline", "lanczos3 (PIL)", np.stack([metrics.lanczos_upscale(x) for x in lr_u8]))
    has_enc = vae.with_encoder
    K = cfg.num_scales
    chunks = [slice(i, min(i + batch, N)) for i in range(0, N, batch)]

    gt_idx: Optional[List[torch.Tensor]] = None
    gt_fhat_scales: Optional[List[torch.Tensor]] = None
    if has_enc:  # (a)
        x = vae.encoder_input(hr, up01)
        f = vae.img_to_f(x).float()
        gt_idx, _ = vae.f_to_idx(f)
        f_hat = vae.idx_to_f_hat(gt_idx)
        out = vae.output(f_hat, up01)
        codes = len(torch.unique(torch.cat([i.flatten() for i in gt_idx])))
        for k, v in _fixes(out, up01).items():
            add("a", f"tokenizer ceiling, {k}", v, codes_in_use=codes, vocab=cfg.vocab)
        gt_fhat_scales = []
        fh = torch.zeros_like(f_hat)
        for si, pn in enumerate(cfg.patch_nums):
            fh = vae.quantize.accumulate(si, fh, vae.quantize.idx_to_h(gt_idx[si], pn))
            gt_fhat_scales.append(fh.clone())
    if var is None:
        return res

    def generate(lr_c=None, force=None, **kw):
        outs, fhs, idxs = [], [], []
        for sl in chunks:
            lm, l1 = (lr_m11[sl], lr01[sl]) if lr_c is None else (lr_c[0][sl], lr_c[1][sl])
            fi = None if force is None else [t[sl] for t in force]
            f_hat, idx, inter = var.generate(vae, lm, l1, image_keys=list(range(sl.start, sl.stop)),
                                             return_intermediates=True, adain_src=up01[sl], force_idx=fi, **kw)
            outs.append(vae.output(f_hat, up01[sl]))
            fhs.append([s["f_hat"] for s in inter["scales"]])
            idxs.append(idx)
        out = torch.cat(outs)
        fh = [torch.cat([c[si] for c in fhs]) for si in range(K)]
        ix = [torch.cat([c[si] for c in idxs]) for si in range(K)]
        return out, fh, ix

    fix = "none" if cfg.residual else "wavelet"  # what each kind of model ships with
    greedy = dict(cfg_scale=0.0, top_k=1, top_p=0.0, seed=0)
    out_g, fh_g, ix_g = generate(**greedy)
    for k, v in _fixes(out_g, up01).items():
        add("c", f"greedy, {k}", v)
    for name, kw in (("top-k 8", dict(cfg_scale=0.0, top_k=8, top_p=0.0, seed=1)),
                     ("top-p 0.75", dict(cfg_scale=0.0, top_k=0, top_p=0.75, seed=1)),
                     ("top-k 32 top-p 0.9", dict(cfg_scale=0.0, top_k=32, top_p=0.9, seed=1)),
                     ("greedy cfg 1.5", dict(cfg_scale=1.5, top_k=1, top_p=0.0, seed=0))):
        out, _, _ = generate(**kw)
        v = _fixes(out, up01)
        add("c", f"{name}, {'raw' if fix == 'none' else fix}", v["raw" if fix == "none" else fix])

    # (e) shuffled LR for the transformer
    sh = (lr_m11.roll(1, 0), lr01.roll(1, 0))
    out_s, _, _ = generate(lr_c=sh, **greedy)
    v = _fixes(out_s, up01)
    add("e", f"greedy, another image's LR, {'raw' if fix == 'none' else fix}", v["raw" if fix == "none" else fix])

    if has_enc:
        # (b) teacher-forced for each k
        for k in range(1, K + 1):
            out, _, _ = generate(force=gt_idx[:k], **greedy)
            v = _fixes(out, up01)
            add("b", f"GT tokens for scales < {k}, {'raw' if fix == 'none' else fix}", v["raw" if fix == "none" else fix])
        # (d) per scale; CE with the true and the shuffled LR
        label = torch.zeros(N, dtype=torch.long)
        x_in = vae.idx_to_var_input(gt_idx)
        logits = torch.cat([var.forward_train(lr_m11[sl], lr01[sl], label[sl], [t[sl] for t in gt_idx], vae,
                                              x_in=x_in[sl]) for sl in chunks])
        logits_sh = torch.cat([var.forward_train(sh[0][sl], sh[1][sl], label[sl], [t[sl] for t in gt_idx], vae,
                                                 x_in=x_in[sl]) for sl in chunks])
        gt = torch.cat(gt_idx, dim=1)
        ce, _ = ce_loss(logits, gt, cfg.patch_nums)
        ce_sh, _ = ce_loss(logits_sh, gt, cfg.patch_nums)
        res["ce_true_lr"], res["ce_shuffled_lr"] = float(ce), float(ce_sh)
        pred = logits.argmax(-1)
        per = []
        offs = list(cfg.token_offsets) + [cfg.L]  # token positions in the logits (no LR prefix)
        for si in range(K):
            b0, b1 = offs[si], offs[si + 1]
            tf_acc = float((pred[:, b0:b1] == gt[:, b0:b1]).float().mean())
            fr_acc = float((ix_g[si] == gt_idx[si]).float().mean())
            mse = float((fh_g[si] - gt_fhat_scales[si]).square().mean())
            ref_pow = float(gt_fhat_scales[si].square().mean())
            per.append({"scale": si, "pn": cfg.patch_nums[si], "tf_acc": tf_acc, "free_acc": fr_acc,
                        "f_hat_mse": mse, "gt_f_hat_power": ref_pow})
        res["per_scale"] = per
    return res


def to_markdown(results: List[Dict], label: str) -> str:
    lines = [f"### {label}", ""]
    for r in results:
        lines.append(f"LR: {r['degrade']}; {r['n']} validation crops of {r['tile']}x{r['tile']} (one tile each); "
                     f"latent {r['latent']}")
        lines.append("")
        lines.append("| row | setting | PSNR-Y | SSIM-Y | sharpness | codes |")
        lines.append("|---|---|---|---|---|---|")
        for x in r["rows"]:
            codes = f"{x['codes_in_use']}/{x['vocab']}" if "codes_in_use" in x else ""
            lines.append(f"| {x['group']} | {x['name']} | {x['psnr_y']:.2f} | {x['ssim_y']:.4f} | {x['sharpness']:.3f} | {codes} |")
        if "ce_true_lr" in r:
            lines.append("")
            lines.append(f"(e) teacher-forced CE: {r['ce_true_lr']:.3f} with the true LR, {r['ce_shuffled_lr']:.3f} "
                         "with another image's LR")
        if "per_scale" in r:
            lines.append("")
            lines.append("| (d) scale | pn | TF token acc | free-running acc | f_hat MSE (greedy vs GT) | GT f_hat power |")
            lines.append("|---|---|---|---|---|---|")
            for p in r["per_scale"]:
                lines.append(f"| {p['scale']} | {p['pn']} | {p['tf_acc']:.3f} | {p['free_acc']:.3f} | "
                             f"{p['f_hat_mse']:.4f} | {p['gt_f_hat_power']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="issue 11 diagnosis table (tokenizer ceiling, teacher forcing, "
                                             "free running, per scale, shuffled LR)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="train_var checkpoint (var.pt, with the VQVAE encoder)")
    src.add_argument("--model", help="exported .safetensors (rows (a), (b), (d) need --keep-encoder)")
    src.add_argument("--vqvae", help="train_vqvae checkpoint: row (a) only")
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--degrade", nargs="+", default=["bicubic", "realesrgan"])
    ap.add_argument("--images", type=int, default=100, help="at most this many validation images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--label", default=None, help="heading of the markdown table (default: the source path)")
    ap.add_argument("--out-json", default=None)
    ap.add_argument("--out-md", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    var, vae, cfg = load_any(args)
    results = [run(var, vae, cfg, args.data, d, args.images) for d in args.degrade]
    label = args.label or (args.ckpt or args.model or args.vqvae)
    md = to_markdown(results, label)
    print(md)
    if args.out_json:
        with open(args.out_json, "w") as fh:
            json.dump({"source": label, "results": results}, fh, indent=1)
    if args.out_md:
        with open(args.out_md, "w") as fh:
            fh.write(md + "\n")


if __name__ == "__main__":
    main()
