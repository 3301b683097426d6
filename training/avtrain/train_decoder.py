"""Stage 1b: an LR-conditioned decoder (config.decoder_lr) for a trained, frozen tokenizer.

    cd training && python3 -m avtrain.train_decoder --init runs/vq-residual-b/vqvae.pt \\
        --out runs/dec-lr --steps 1500 --batch 8 --lr 5e-4 --grad-l1 1.0 --fft-l1 0.5

The encoder, codebook and Phi convs of --init stay as they are, so the tokens (and a stage-2
transformer trained on them) do not change; only post_quant_conv and the decoder train, the
decoder starting from --init's with its LR inputs (decoder.lr_in.*) at zero. The decoder reads
f_hat of the ground-truth tokens of the first k scales, k = K with probability --full-prob and
uniform in 0 .. K-1 otherwise (k = 0: f_hat = 0), so it learns to use the LR alone where tokens
are missing and the tokens where they are there: a generation's tokens are right at the coarse
scales more often than at the fine ones. Loss: L1 + --grad-l1 x finite-difference L1 + --fft-l1
x Fourier-amplitude L1 on the output (base + residual_scale x decoder), divided by
residual_scale, as train_vqvae. Writes <out>/vqvae.pt in train_vqvae's format (the config
with decoder_lr), so train_var, export and diagnose take it as a VQVAE checkpoint; --resume
continues. Validation: PSNR-Y / SSIM-Y / sharpness with all tokens and with none.

--var <exported .safetensors> trains the decoder on what it decodes at inference: with
probability --model-prob a batch's f_hat is that transformer's free-running f_hat (cfg 0, greedy,
in the file's token mode: the expected code under "mean"), generated from the batch's LR with
the frozen quantizer of --init; the other batches take the ground-truth f_hat above. The
transformer itself does not train. Validation then also reports the "model" row: the output
from the transformer's f_hat, which is what the engine computes (up to bf16 rounding).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from . import metrics
from .config import config_from_metadata, config_to_metadata
from .data import PairDataset
from .resample import preprocess_lr
from .train_vqvae import fft_l1, grad_l1, hr_to_u8
from .trainutil import (
    JsonlLog, StepBatches, add_common_args, lin0_factor, param_groups, pick_device, rng_state, save_checkpoint,
    seed_everything, set_rng_state,
)
from .vqvae import VQVAE, compose_residual


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="AlignVAR stage 1b: LR-conditioned decoder for a frozen tokenizer")
    add_common_args(ap, ckpt="vqvae.pt", steps=1000, lr=5e-4, wd=0.0, val_every=100)
    ap.add_argument("--init", required=True, help="train_vqvae checkpoint whose tokenizer is kept (vqvae.pt)")
    ap.add_argument("--full-prob", type=float, default=0.5, help="probability of decoding all K scales' tokens")
    ap.add_argument("--grad-l1", type=float, default=1.0)
    ap.add_argument("--fft-l1", type=float, default=0.5)
    ap.add_argument("--degrade", default="mixed", choices=("realesrgan", "bicubic", "mixed"))
    ap.add_argument("--var", default=None, help="exported .safetensors whose transformer supplies f_hat (see above)")
    ap.add_argument("--model-prob", type=float, default=0.75, help="with --var: probability of the transformer's f_hat")
    return ap.parse_args(argv)


def trainable(vae: VQVAE):
    return [p for n, p in vae.named_parameters() if n.startswith("decoder.") or n.startswith("post_quant_conv.")]


@torch.no_grad()
def partial_f_hat(vae: VQVAE, idx, k: int) -> torch.Tensor:
    """f_hat of the tokens of scales 0 .. k-1 (spec 5.4's recurrence stopped early; 0 when k = 0)."""
    B = idx[0].shape[0]
    G = vae.cfg.grid
    f_hat = torch.zeros(B, vae.Cv, G, G, device=idx[0].device)
    for si in range(k):
        f_hat = vae.quantize.accumulate(si, f_hat, vae.quantize.idx_to_h(idx[si], vae.cfg.patch_nums[si]))
    return f_hat


@torch.no_grad()
def model_f_hat(var, vae: VQVAE, lr_m11: torch.Tensor, lr01: torch.Tensor) -> torch.Tensor:
    """The transformer's free-running f_hat (cfg 0, greedy) for preprocess_lr's lr_m11 / lr01."""
    return var.generate(vae, lr_m11, lr01, cfg_scale=0.0, top_k=1)[0]


@torch.no_grad()
def validate(vae: VQVAE, hr_all: torch.Tensor, up_all: torch.Tensor, model_f=None) -> dict:
    """model_f: the frozen transformer's f_hat of every validation tile (the "model" row), or None."""
    vae.eval()
    out = {}
    K = len(vae.cfg.patch_nums)
    rows = (("all", K), ("none", 0)) + ((("model", -1),) if model_f is not None else ())
    for name, k in rows:
        ps, ss, sh = [], [], []
        for i in range(0, hr_all.shape[0], 4):
            hr, up01 = hr_all[i:i + 4], up_all[i:i + 4]
            if k < 0:
                f_hat = model_f[i:i + 4]
            else:
                idx, _ = vae.f_to_idx(vae.img_to_f(vae.encoder_input(hr, up01)).float())
                f_hat = partial_f_hat(vae, idx, k)
            rec = vae.output(f_hat, up01)
            for x, y in zip(hr_to_u8(rec), hr_to_u8(hr)):
                ps.append(metrics.psnr_y(x, y))
                ss.append(metrics.ssim_y(x, y))
                sh.append(metrics.sharpness(x, y))
        out.update({f"val_psnr_y_{name}": float(np.mean(ps)), f"val_ssim_y_{name}": float(np.mean(ss)),
                    f"val_sharpness_{name}": float(np.mean(sh))})
    vae.train()
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    device = pick_device(args.device)
    ckpt_path = os.path.join(args.out, "vqvae.pt")
    os.makedirs(args.out, exist_ok=True)
    resume = args.resume and os.path.exists(ckpt_path)
    ck = torch.load(ckpt_path if resume else args.init, map_location="cpu")
    cfg = config_from_metadata(ck["cfg"]).replace(decoder_lr=True)
    if not cfg.residual:
        raise SystemExit("train_decoder takes a residual-latent tokenizer (config latent 'residual')")
    seed_everything(args.seed)
    vae = VQVAE(cfg).to(device)
    missing, unexpected = vae.load_state_dict(ck["vqvae"], strict=False)
    if unexpected or any(not k.startswith("decoder.lr_in.") for k in missing):
        raise SystemExit(f"{args.init}: unexpected keys {unexpected}, missing {missing}")
    vae.requires_grad_(False)
    params = trainable(vae)
    for p in params:
        p.requires_grad_(True)
    vae.train()
    opt = torch.optim.AdamW(param_groups(vae.decoder, args.wd) + [{"params": list(vae.post_quant_conv.parameters()),
                                                                      "weight_decay": 0.0}],
                            lr=args.lr, betas=(args.beta1, args.beta2))
    start = 0
    if resume:
        try:
            opt.load_state_dict(ck["opt"])
        except ValueError:  # a compact.restore'd checkpoint carries a whole-VQVAE AdamW: fresh moments
            pass
        start = int(ck["step"])
        set_rng_state(ck["rng"])
    warmup = args.warmup_steps if args.warmup_steps >= 0 else max(1, args.steps // 20)
    train_ds = PairDataset(args.data, "train", hr_size=cfg.hr_size, seed=args.seed, length=args.steps * args.batch,
                           split_file=args.split_file, degrade=args.degrade)
    val_ds = PairDataset(args.data, "val", hr_size=cfg.hr_size, seed=args.seed, split_file=args.split_file,
                         degrade=args.degrade)
    items = [val_ds[i] for i in range(min(args.val_images, len(val_ds)))]
    val_hr = torch.stack([it["hr"] for it in items]).to(device)
    val_m11, val_up, val_01 = (t.to(device) for t in preprocess_lr(
        torch.stack([it["lr_u8"] for it in items]).numpy(), cfg.hr_size))
    var = val_model_f = None
    if args.var:
        from .export import load_model

        var, _, vcfg = load_model(args.var, device)
        if config_to_metadata(vcfg.replace(decoder_lr=True, token_mode="sample")) != config_to_metadata(
                cfg.replace(token_mode="sample")):
            raise SystemExit(f"{args.var}: its config does not match --init's tokenizer")
        var.requires_grad_(False)
        # The transformer and the quantizer are frozen: its validation f_hat never changes.
        with torch.no_grad():
            val_model_f = torch.cat([model_f_hat(var, vae, val_m11[i:i + 4], val_01[i:i + 4])
                                     for i in range(0, val_m11.shape[0], 4)])

    def val():
        return validate(vae, val_hr, val_up, val_model_f)
    train_ds.preload()
    log = JsonlLog(os.path.join(args.out, "log.jsonl"), resume_step=start if resume else None)
    if not resume:
        log.write({"event": "start", "stage": "decoder", "config": config_to_metadata(cfg), "args": vars(args),
                   "trainable": sum(p.numel() for p in params), **val()})
    else:
        log.write({"event": "resume", "step": start, "args": vars(args)})
    gen = torch.Generator().manual_seed(args.seed + start)
    K = len(cfg.patch_nums)

    def checkpoint(step):
        save_checkpoint(ckpt_path, {"cfg": config_to_metadata(cfg), "vqvae": vae.state_dict(), "opt": opt.state_dict(),
                                    "step": step, "rng": rng_state(), "args": vars(args)})

    t0 = time.time()
    step = start
    for batch in StepBatches(train_ds, args.batch, start, args.steps, workers=args.workers):
        hr = batch["hr"].to(device)
        lr_m11, up01, lr01 = (t.to(device) for t in preprocess_lr(batch["lr_u8"].numpy(), cfg.hr_size))
        full = torch.rand((), generator=gen).item() < args.full_prob
        k = K if full else int(torch.randint(0, K, (), generator=gen).item())
        with torch.no_grad():
            if var is not None and torch.rand((), generator=gen).item() < args.model_prob:
                k = -1  # logged as k = -1: the transformer's f_hat
                f_hat = model_f_hat(var, vae, lr_m11, lr01)
            else:
                idx, _ = vae.f_to_idx(vae.img_to_f(vae.encoder_input(hr, up01)).float())
                f_hat = partial_f_hat(vae, idx, k)
        factor = lin0_factor(step, args.steps, warmup)
        for g in opt.param_groups:
            g["lr"] = args.lr * factor
        out = compose_residual(cfg, vae.decode(f_hat, up01).float(), up01)
        l1 = (out - hr).abs().mean()
        loss = l1 + args.grad_l1 * grad_l1(out, hr) + args.fft_l1 * fft_l1(out, hr)
        loss = loss / cfg.residual_scale
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == 1:
            log.write({"step": step, "lr": args.lr * factor, "loss": loss, "l1": l1, "k": k, "grad_norm": gn,
                       "sec": time.time() - t0})
        if step % args.val_every == 0 or step == args.steps:
            log.write({"step": step, **val()})
        if step % args.ckpt_every == 0 or step == args.steps:
            checkpoint(step)
    log.close()


if __name__ == "__main__":
    main()
