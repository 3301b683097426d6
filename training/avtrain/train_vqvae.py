"""Stage 1: train the multi-scale VQVAE on HR crops.

    cd training && python3 -m avtrain.train_vqvae --config tiny --out runs/vq-tiny --steps 200

Loss = L1(output, HR) (or, with --loss l1-adain, L1 after matching the reconstruction's
per-channel mean/std to the HR's, plus --raw-l1 x L1) + VQ loss (codebook + 0.25 commitment,
averaged over the K scales, Phi applied at every scale as VAR's quantize.forward). No perceptual
or adversarial terms: there are no pretrained networks to build them from. The codebook is
initialised from encoder outputs of the first batch (random latent vectors plus small noise),
which avoids the dead codes of a fresh uniform init; --restart-every re-seeds codes that fall out
of use later. With a residual-latent config (config.latent "residual") the encoder sees (HR - base) /
residual_scale, base being the PIL-bicubic upsampled LR of --degrade, and the output is base +
residual_scale * decoder: every loss is taken on that output, divided by residual_scale.
--grad-l1 and --fft-l1 add the sharpening losses (finite-difference and Fourier-amplitude L1).
Checkpoints (<out>/vqvae.pt) hold the config metadata, the weights, the optimizer
and RNG state; --resume continues where the last one stopped.
Logs go to <out>/log.jsonl: loss terms every --log-every steps and validation PSNR-Y/SSIM-Y of
the reconstruction every --val-every steps.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from . import metrics
from .config import config_from_metadata, config_to_metadata, preset
from .data import PairDataset
from .postprocess import to_uint8
from .trainutil import (
    add_common_args,
    JsonlLog, StepBatches, autocast, lin0_factor, param_groups, pick_device, rng_state, save_checkpoint,
    seed_everything, set_rng_state,
)
from .resample import preprocess_lr
from .vqvae import VQVAE, compose_residual


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="AlignVAR stage 1: multi-scale VQVAE")
    add_common_args(ap, ckpt="vqvae.pt", steps=200, lr=2e-4, wd=0.0, val_every=50)
    ap.add_argument("--loss", default="l1", choices=("l1", "l1-adain"),
                    help="l1: L1(rec, HR); l1-adain: L1 after matching the reconstruction's per-channel mean and std "
                         "to the HR's (what the engine's colour fix does at inference) + --raw-l1 x L1(rec, HR)")
    ap.add_argument("--raw-l1", type=float, default=0.1, help="weight of the plain L1 term with --loss l1-adain")
    ap.add_argument("--restart-every", type=int, default=0,
                    help="every N steps, re-seed codes hit less than --restart-threshold times per step (0: never)")
    ap.add_argument("--restart-threshold", type=float, default=0.5,
                    help="EMA hits per step, summed over the scales, below which a code counts as dead")
    ap.add_argument("--restart-until", type=float, default=0.8,
                    help="stop re-seeding after this fraction of --steps so the codebook can settle")
    ap.add_argument("--grad-l1", type=float, default=0.0,
                    help="weight of an L1 loss between the horizontal and vertical finite differences of the "
                         "output and the HR (a sharpening loss that needs no pretrained net)")
    ap.add_argument("--fft-l1", type=float, default=0.0,
                    help="weight of an L1 loss between the Fourier amplitudes (rfft2, ortho) of the output and the HR")
    ap.add_argument("--degrade", default="mixed", choices=("realesrgan", "bicubic", "mixed"),
                    help="LR of a residual-latent config (the residual is HR minus the upsampled LR); unused otherwise")
    return ap.parse_args(argv)


def hr_to_u8(hr: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return to_uint8(hr).cpu().numpy()


def match_stats(rec: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """rec with each image's per-channel mean and std set to ref's (ref's statistics detached): the
    AdaIN colour fix of spec 2.2.3 with the HR standing in for the upsampled LR."""
    m, s = rec.mean((2, 3), keepdim=True), rec.std((2, 3), keepdim=True)
    M, S = ref.mean((2, 3), keepdim=True).detach(), ref.std((2, 3), keepdim=True).detach()
    return (rec - m) / (s + 1e-5) * S + M


def recon_loss(rec: torch.Tensor, hr: torch.Tensor, kind: str, raw_weight: float):
    """Returns (reconstruction loss, plain L1) for --loss `kind`."""
    l1 = (rec - hr).abs().mean()
    if kind == "l1":
        return l1, l1
    return (match_stats(rec, hr) - hr).abs().mean() + raw_weight * l1, l1


def grad_l1(rec: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between horizontal and vertical finite differences of rec and hr."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return (dx(rec) - dx(hr)).abs().mean() + (dy(rec) - dy(hr)).abs().mean()


def fft_l1(rec: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between the Fourier amplitudes (rfft2, ortho normalisation) of rec and hr."""
    return (torch.fft.rfft2(rec, norm="ortho").abs() - torch.fft.rfft2(hr, norm="ortho").abs()).abs().mean()


@torch.no_grad()
def init_codebook_from_data(vae: VQVAE, hr: torch.Tensor, gen: torch.Generator) -> None:
    f = vae.img_to_f(hr).float()
    vecs = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    pick = torch.randint(0, vecs.shape[0], (vae.V,), generator=gen)
    noise = torch.randn(vae.V, vecs.shape[1], generator=gen) * (vecs.std() * 0.1)
    vae.quantize.embedding.weight.copy_(vecs[pick].cpu() + noise)


@torch.no_grad()
def validate(vae: VQVAE, val_hr: torch.Tensor, device, amp: str, val_up01: torch.Tensor = None) -> dict:
    vae.eval()
    psnr, ssim, psnr_m, ssim_m, sharp = [], [], [], [], []
    for i in range(0, val_hr.shape[0], 4):
        hr = val_hr[i:i + 4].to(device)
        up01 = val_up01[i:i + 4].to(device) if val_up01 is not None else None
        with autocast(device, amp):
            rec, _, _ = vae(vae.encoder_input(hr, up01) if up01 is not None else hr)
        rec = compose_residual(vae.cfg, rec.float(), up01)
        b = hr_to_u8(hr)
        sharp.extend(metrics.sharpness(x, y) for x, y in zip(hr_to_u8(rec), b))
        for out, ps, ss in ((rec.float(), psnr, ssim), (match_stats(rec.float().clamp(-1, 1), hr), psnr_m, ssim_m)):
            for x, y in zip(hr_to_u8(out), b):
                ps.append(metrics.psnr_y(x, y))
                ss.append(metrics.ssim_y(x, y))
    vae.train()
    return {"val_psnr_y": float(np.mean(psnr)), "val_ssim_y": float(np.mean(ssim)),
            "val_psnr_y_matched": float(np.mean(psnr_m)), "val_ssim_y_matched": float(np.mean(ssim_m)),
            "val_sharpness": float(np.mean(sharp)),
            "codes_in_use": int((vae.quantize.ema_vocab_hit_SV.sum(0) > 0.01).sum().item()), "n_val": len(psnr)}


def main(argv=None) -> None:
    args = parse_args(argv)
    device = pick_device(args.device)
    ckpt_path = os.path.join(args.out, "vqvae.pt")
    resume = args.resume and os.path.exists(ckpt_path)
    ck = torch.load(ckpt_path, map_location="cpu") if resume else None
    cfg = config_from_metadata(ck["cfg"]) if ck else preset(args.config)
    seed_everything(args.seed)
    vae = VQVAE(cfg).to(device).train()
    opt = torch.optim.AdamW(param_groups(vae, args.wd), lr=args.lr, betas=(args.beta1, args.beta2))
    start = 0
    if ck:
        vae.load_state_dict(ck["vqvae"])
        vae.quantize.record_hit = int(ck.get("record_hit", 1))
        opt.load_state_dict(ck["opt"])
        start = int(ck["step"])
        set_rng_state(ck["rng"])
    warmup = args.warmup_steps if args.warmup_steps >= 0 else max(1, args.steps // 20)

    train_ds = PairDataset(args.data, "train", hr_size=cfg.hr_size, seed=args.seed, length=args.steps * args.batch,
                           split_file=args.split_file, degrade=args.degrade)
    val_ds = PairDataset(args.data, "val", hr_size=cfg.hr_size, seed=args.seed, split_file=args.split_file,
                         degrade=args.degrade)
    n_val = min(args.val_images, len(val_ds))
    val_up01 = None
    if cfg.residual:  # the residual needs the LR: same val LR as stage 2 (seeded by the image)
        items = [val_ds[i] for i in range(n_val)]
        val_hr = torch.stack([it["hr"] for it in items])
        val_up01 = preprocess_lr(torch.stack([it["lr_u8"] for it in items]).numpy(), cfg.hr_size)[1]
    else:
        val_hr = torch.stack([torch.from_numpy(val_ds.hr_u8(i).transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0)
                              for i in range(n_val)])
    train_ds.preload()
    log = JsonlLog(os.path.join(args.out, "log.jsonl"), resume_step=start if ck else None)
    if not ck:
        log.write({"event": "start", "stage": "vqvae", "config": config_to_metadata(cfg), "args": vars(args),
                   "params": sum(p.numel() for p in vae.parameters())})
    else:
        log.write({"event": "resume", "step": start, "args": vars(args)})
    gen = torch.Generator().manual_seed(args.seed)
    if ck and "gen" in ck:
        gen.set_state(ck["gen"])

    def checkpoint(step):
        save_checkpoint(ckpt_path, {"cfg": config_to_metadata(cfg), "vqvae": vae.state_dict(), "opt": opt.state_dict(),
                                    "step": step, "rng": rng_state(), "record_hit": vae.quantize.record_hit,
                                    "gen": gen.get_state(), "args": vars(args)})

    t0 = time.time()
    step = start
    if cfg.residual and args.loss != "l1":
        raise SystemExit("a residual-latent config takes --loss l1 (its colour comes from the LR base)")
    for batch in StepBatches(train_ds, args.batch, start, args.steps, workers=args.workers, hr_only=not cfg.residual):
        hr = batch["hr"].to(device)
        up01 = preprocess_lr(batch["lr_u8"].numpy(), cfg.hr_size)[1].to(device) if cfg.residual else None
        x = vae.encoder_input(hr, up01) if cfg.residual else hr
        if step == 0:
            init_codebook_from_data(vae, x, gen)
        factor = lin0_factor(step, args.steps, warmup)
        for g in opt.param_groups:
            g["lr"] = args.lr * factor
        with autocast(device, args.amp):
            rec, vq_loss, usage = vae(x)
        # losses in image units, divided by residual_scale (= in decoder units for a residual config)
        out = compose_residual(cfg, rec.float(), up01)
        rec_loss, l1 = recon_loss(out, hr, args.loss, args.raw_l1)
        if args.grad_l1 > 0:
            rec_loss = rec_loss + args.grad_l1 * grad_l1(out, hr)
        if args.fft_l1 > 0:
            rec_loss = rec_loss + args.fft_l1 * fft_l1(out, hr)
        loss = rec_loss / (cfg.residual_scale if cfg.residual else 1.0) + vq_loss.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(vae.parameters(), args.clip)
        opt.step()
        step += 1
        restarted = 0
        if args.restart_every > 0 and step % args.restart_every == 0 and step <= args.restart_until * args.steps:
            restarted = vae.quantize.restart_dead_codes(args.restart_threshold, gen)
        if step % args.log_every == 0 or step == 1 or restarted:
            log.write({"step": step, "lr": args.lr * factor, "loss": loss, "l1": l1, "vq": vq_loss,
                       "usage": float(np.mean(usage)), "grad_norm": gn, "restarted": restarted,
                       "sec": time.time() - t0})
        if step % args.val_every == 0 or step == args.steps:
            log.write({"step": step, **validate(vae, val_hr, device, args.amp, val_up01)})
        if step % args.ckpt_every == 0 or step == args.steps:
            checkpoint(step)
    log.close()


if __name__ == "__main__":
    main()
