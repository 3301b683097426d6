"""Stage 2: train the AlignVAR transformer with teacher forcing (spec 10.2, 11.6).

    cd training && python3 -m avtrain.train_var --config tiny --vqvae runs/vq-tiny/vqvae.pt \\
        --out runs/var-tiny --steps 300

Per step: the frozen VQVAE encodes the HR crop (T1), tokenises it (T2, spec 7.3) and builds
the teacher-forcing inputs (T3, spec 7.4). The transformer runs the whole sequence under the
block-causal mask (T4-T6). Loss = CE + lambda * L_HCC (lambda = --hcc-lambda, default 1.0).
With --hcc-lambda 0 HCC is still measured and logged, without gradient.
--no-sca trains the VARSR baseline (no SCA parameters). AdamW has betas (0.9, 0.95) and weight
decay 0.05 on >= 2-D weights outside the spec 10.3 no-wd list. Gradients are clipped to 2.0.
The lin0 schedule is used. Autocast is bf16 on CPU or CUDA with --amp bf16.

The model's LR input is the upsampled LR: --lr-up pil (default) uses the inference
preprocessing; 'random' is spec 10.1's random torch area / bilinear / bicubic.
Logs (<out>/log.jsonl): every --log-every steps the loss, CE, HCC and their per-scale values,
and every --val-every steps the validation PSNR-Y / SSIM-Y of greedy generations (after the
AdaIN colour fix; without it as *_raw), plus teacher-forced validation CE and HCC.
With a residual-latent config the tokens are those of (HR - base) / residual_scale (base: the
PIL-bicubic upsampled LR, vqvae.VQVAE.encoder_input) and the validation output is base +
residual_scale * decoder (VQVAE.output); the *_raw figures are then the model's own output.
Checkpoints (<out>/var.pt) hold the config metadata, transformer and VQVAE weights, the
optimizer and RNG states; --resume continues from the last one. Export one with
`python3 -m avtrain.export --ckpt <out>/var.pt --out model.safetensors`.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Dict

import numpy as np
import torch

from . import metrics
from .config import config_from_metadata, config_to_metadata, preset
from .data import PairDataset
from .losses import total_loss
from .model import AlignVAR
from .postprocess import adain_fix, to_uint8, wavelet_fix
from .resample import preprocess_lr
from .trainutil import (
    add_common_args,
    JsonlLog, StepBatches, autocast, collate, lin0_factor, param_groups, pick_device, rng_state,
    save_checkpoint, seed_everything, set_rng_state, upsample_lr,
)
from .vqvae import VQVAE

VQ_FIELDS = ("vocab", "cvae", "vq_ch", "vq_ch_mult", "vq_num_res", "vq_attn_at_lowest", "patch_nums",
             "share_quant_resi", "quant_resi")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="AlignVAR stage 2: transformer, CE + lambda * HCC")
    add_common_args(ap, ckpt="var.pt", steps=300, lr=1e-4, wd=0.05, val_every=100)
    ap.add_argument("--vqvae", required=True, help="stage-1 checkpoint (train_vqvae's vqvae.pt)")
    ap.add_argument("--hcc-lambda", type=float, default=1.0)
    ap.add_argument("--no-sca", action="store_true", help="VARSR baseline: no SCA parameters")
    ap.add_argument("--attn-temp-init", type=float, default=4.0,
                    help="initial attention temperature exp(rho) of every head (spec 4.5: 4; a short run from scratch "
                         "learns local attention much sooner from a sharper start, e.g. 25)")
    ap.add_argument("--input-mask", type=float, default=0.0,
                    help="fraction of teacher-forcing input tokens zeroed per step (the reference's random-masking "
                         "hook, a no-op there): the model must then read those positions from the LR prefix")
    ap.add_argument("--cond-init", default="spec", choices=("spec", "he"),
                    help="conditioning-net init: spec (trunc-normal 0.02, spec 10.3) or he (variance-preserving; "
                         "narrow conditioning nets need it for the LR to reach the transformer)")
    ap.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth at the last block (0.1 in spec 10.3)")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--lr-up", default="pil", choices=("pil", "random"))
    ap.add_argument("--degrade", default="realesrgan", choices=("realesrgan", "bicubic", "mixed"))
    ap.add_argument("--val-cfg", type=float, default=0.0, help="CFG scale of the validation generations")
    return ap.parse_args(argv)


def load_frozen_vqvae(path: str, cfg, device) -> VQVAE:
    ck = torch.load(path, map_location="cpu")
    vcfg = config_from_metadata(ck["cfg"])
    diff = [f for f in VQ_FIELDS if getattr(vcfg, f) != getattr(cfg, f)]
    if diff:
        raise ValueError(f"{path}: VQVAE config differs from the transformer config in {diff}")
    vae = VQVAE(cfg)
    vae.load_state_dict(ck["vqvae"])
    vae.requires_grad_(False)
    return vae.to(device).eval()


@torch.no_grad()
def tokenize(vae: VQVAE, hr: torch.Tensor):
    """T1-T3: latent f, per-scale indices, concatenated targets, teacher-forcing inputs."""
    f = vae.img_to_f(hr).float()
    idx, _ = vae.f_to_idx(f)
    return f, idx, torch.cat(idx, dim=1), vae.idx_to_var_input(idx)


@torch.no_grad()
def validate(var: AlignVAR, vae: VQVAE, val: Dict[str, torch.Tensor], cfg, device, args) -> Dict:
    var.eval()
    out = {k: [] for k in ("psnr", "ssim", "psnr_raw", "ssim_raw", "psnr_wav", "ssim_wav", "ce", "ce_lr_shuffled",
                           "hcc")}
    n = val["hr"].shape[0]
    for i in range(0, n, 4):
        hr = val["hr"][i:i + 4].to(device)
        lr_u8 = val["lr_u8"][i:i + 4]
        lr_m11, up01, lr01 = preprocess_lr(lr_u8.numpy(), cfg.hr_size)
        lr_m11, lr01 = lr_m11.to(device), lr01.to(device)
        f, idx, gt, x_in = tokenize(vae, vae.encoder_input(hr, up01.to(device)))
        label = torch.zeros(hr.shape[0], dtype=torch.long, device=device)
        with autocast(device, args.amp):
            logits = var.forward_train(lr_m11, lr01, label, idx, vae, x_in=x_in)
        _, st = total_loss(logits.float(), gt, f, vae, cfg.patch_nums, hcc_lambda=0.0)
        out["ce"].append(st["ce"].item())
        # the same targets with another image's LR (rolled within the batch): equal CE means the
        # model does not read the LR at all
        with autocast(device, args.amp):
            logits_sh = var.forward_train(lr_m11.roll(1, 0), lr01.roll(1, 0), label, idx, vae, x_in=x_in)
        _, st_sh = total_loss(logits_sh.float(), gt, f, vae, cfg.patch_nums, hcc_lambda=0.0)
        out["ce_lr_shuffled"].append(st_sh["ce"].item())
        out["hcc"].append(st["hcc"].item())
        with autocast(device, args.amp):
            f_hat, _, _ = var.generate(vae, lr_m11, lr01, cfg_scale=args.val_cfg, top_k=1)
            dec = vae.output(f_hat, up01.to(device))
        sr = to_uint8(dec.float()).cpu()
        fixed = adain_fix(sr, up01).numpy()
        wav = wavelet_fix(sr, up01).numpy()
        ref = to_uint8(hr).cpu().numpy()
        for a, b, c, w in zip(fixed, sr.numpy(), ref, wav):
            out["psnr_wav"].append(metrics.psnr_y(w, c))
            out["ssim_wav"].append(metrics.ssim_y(w, c))
            out["psnr"].append(metrics.psnr_y(a, c))
            out["ssim"].append(metrics.ssim_y(a, c))
            out["psnr_raw"].append(metrics.psnr_y(b, c))
            out["ssim_raw"].append(metrics.ssim_y(b, c))
    var.train()
    return {"val_psnr_y": float(np.mean(out["psnr"])), "val_ssim_y": float(np.mean(out["ssim"])),
            "val_psnr_y_raw": float(np.mean(out["psnr_raw"])), "val_ssim_y_raw": float(np.mean(out["ssim_raw"])),
            "val_psnr_y_wavelet": float(np.mean(out["psnr_wav"])), "val_ssim_y_wavelet": float(np.mean(out["ssim_wav"])),
            "val_ce": float(np.mean(out["ce"])), "val_ce_lr_shuffled": float(np.mean(out["ce_lr_shuffled"])),
            "val_hcc": float(np.mean(out["hcc"])), "n_val": n}


def bicubic_baseline(val: Dict[str, torch.Tensor], cfg) -> Dict:
    """PSNR-Y / SSIM-Y of the preprocessed (PIL bicubic) LR itself, for reference."""
    _, up01, _ = preprocess_lr(val["lr_u8"].numpy(), cfg.hr_size)
    up = to_uint8(up01 * 2 - 1).numpy()
    ref = to_uint8(val["hr"]).numpy()
    return {"val_psnr_y_bicubic": float(np.mean([metrics.psnr_y(a, b) for a, b in zip(up, ref)])),
            "val_ssim_y_bicubic": float(np.mean([metrics.ssim_y(a, b) for a, b in zip(up, ref)]))}


def main(argv=None) -> None:
    args = parse_args(argv)
    device = pick_device(args.device)
    ckpt_path = os.path.join(args.out, "var.pt")
    resume = args.resume and os.path.exists(ckpt_path)
    ck = torch.load(ckpt_path, map_location="cpu") if resume else None
    cfg = config_from_metadata(ck["cfg"]) if ck else preset(args.config).replace(sca=not args.no_sca)
    seed_everything(args.seed)
    vae = load_frozen_vqvae(args.vqvae, cfg, device)
    var = AlignVAR(cfg, drop_path_rate=args.drop_path).to(device).train()
    with torch.no_grad():
        for blk in var.blocks:
            blk.attn.scale_mul_1H11.fill_(math.log(args.attn_temp_init))  # overwritten by a resumed checkpoint
    if args.cond_init == "he":
        var.con_embedding.init_variance_preserving()
    opt = torch.optim.AdamW(param_groups(var, args.wd), lr=args.lr, betas=(args.beta1, args.beta2))
    start = 0
    if ck:
        var.load_checked(ck["var"])
        opt.load_state_dict(ck["opt"])
        start = int(ck["step"])
        set_rng_state(ck["rng"])
    warmup = args.warmup_steps if args.warmup_steps >= 0 else max(1, args.steps // 20)

    train_ds = PairDataset(args.data, "train", hr_size=cfg.hr_size, degrade=args.degrade, seed=args.seed,
                           length=args.steps * args.batch, split_file=args.split_file)
    val_ds = PairDataset(args.data, "val", hr_size=cfg.hr_size, degrade=args.degrade, seed=args.seed,
                         split_file=args.split_file)
    val = collate([val_ds[i] for i in range(min(args.val_images, len(val_ds)))])
    train_ds.preload()
    log = JsonlLog(os.path.join(args.out, "log.jsonl"), resume_step=start if ck else None)
    if not ck:
        log.write({"event": "start", "stage": "var", "config": config_to_metadata(cfg), "args": vars(args),
                   "params": sum(p.numel() for p in var.parameters()), **bicubic_baseline(val, cfg)})
    else:
        log.write({"event": "resume", "step": start, "args": vars(args)})

    def checkpoint(step):
        save_checkpoint(ckpt_path, {"cfg": config_to_metadata(cfg), "var": var.state_dict(), "vqvae": vae.state_dict(),
                                    "opt": opt.state_dict(), "step": step, "rng": rng_state(), "args": vars(args)})

    t0 = time.time()
    step = start
    for batch in StepBatches(train_ds, args.batch, start, args.steps, workers=args.workers):
        hr = batch["hr"].to(device)
        lr01 = batch["lr"].to(device)
        label = batch["label"].to(device)
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        lr_m11 = upsample_lr(batch["lr_u8"], cfg.hr_size, args.lr_up, gen).to(device)
        # a residual latent tokenizes HR minus the inference preprocessing's upsampled LR, whatever --lr-up
        x_enc = vae.encoder_input(hr, preprocess_lr(batch["lr_u8"].numpy(), cfg.hr_size)[1].to(device)) \
            if cfg.residual else hr
        f, idx, gt, x_in = tokenize(vae, x_enc)
        if args.input_mask > 0:
            keep = torch.rand(x_in.shape[:2], generator=gen) >= args.input_mask
            x_in = x_in * keep[..., None].to(x_in.device, x_in.dtype)
        factor = lin0_factor(step, args.steps, warmup)
        for g in opt.param_groups:
            g["lr"] = args.lr * factor
        with autocast(device, args.amp):
            logits = var.forward_train(lr_m11, lr01, label, idx, vae, x_in=x_in)
        loss, st = total_loss(logits.float(), gt, f, vae, cfg.patch_nums, hcc_lambda=args.hcc_lambda,
                              label_smoothing=args.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(var.parameters(), args.clip)
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == 1:
            rec = {"step": step, "lr": args.lr * factor, "loss": loss, "ce": st["ce"], "hcc": st["hcc"],
                   "ce_scales": st["ce_scales"], "hcc_scales": st["hcc_scales"], "grad_norm": gn,
                   "sec": time.time() - t0}
            if cfg.sca:
                rec["sca_gamma"] = var.sca.gamma.detach()
                rec["sca_beta_mean"] = torch.stack([torch.nn.functional.softplus(b.attn.mask_lambda).mean()
                                                    for b in var.blocks]).mean()
            log.write(rec)
        if step % args.val_every == 0 or step == args.steps:
            log.write({"step": step, **validate(var, vae, val, cfg, device, args)})
        if step % args.ckpt_every == 0 or step == args.steps:
            checkpoint(step)
    log.close()


if __name__ == "__main__":
    main()
