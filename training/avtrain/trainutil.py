"""Shared pieces of the two training stages: devices and autocast, the AdamW parameter groups
(spec 10.3), the lin0 schedule, deterministic batches, LR upsampling, JSONL logs, and atomic,
resumable checkpoints."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .resample import pil_bicubic_resize_float

# Names (substrings) exempt from weight decay (spec 10.3; VAR's no-wd list plus SCA's level_embed).
NO_WD_KEYS = ("pos_start", "lvl_embed", "level_embed", "scale_mul", "gamma", "beta", "diffloss", "mask_lambda")


def add_common_args(ap: argparse.ArgumentParser, *, ckpt: str, steps: int, lr: float, wd: float,
                    val_every: int) -> None:
    """Options both training stages share; `ckpt` names the run folder's checkpoint file."""
    ap.add_argument("--config", default="tiny", help="config preset: tiny, small, small512, d24")
    ap.add_argument("--split-file", default=None, help="validation split (default: avtrain/split.json)")
    ap.add_argument("--data", default="training/data", help="folder with manifest.json (scripts/fetch_data.sh)")
    ap.add_argument("--out", required=True, help=f"run folder: {ckpt} and log.jsonl")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--wd", type=float, default=wd)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--clip", type=float, default=2.0)
    ap.add_argument("--warmup-steps", type=int, default=-1, help="default: 5%% of --steps")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--amp", default="none", choices=("none", "bf16"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--val-every", type=int, default=val_every)
    ap.add_argument("--val-images", type=int, default=9)
    ap.add_argument("--ckpt-every", type=int, default=val_every)
    ap.add_argument("--resume", action="store_true", help=f"continue from <out>/{ckpt} if it exists")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but torch.cuda.is_available() is False")
    return torch.device(name)


def autocast(device: torch.device, amp: str):
    """bf16 autocast on CPU or CUDA (amp='bf16'), or a no-op (amp='none')."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp != "bf16":
        raise ValueError(f"amp must be 'bf16' or 'none', got {amp!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict]:
    """AdamW groups: decay only >= 2-D weights whose names contain none of NO_WD_KEYS."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.endswith(".bias") or any(k in name for k in NO_WD_KEYS):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lin0_factor(step: int, total: int, warmup: int, start: float = 0.005, flat_frac: float = 0.3, end: float = 0.01) -> float:
    """Spec 10.3 'lin0': linear warm-up from start*lr over `warmup` steps, flat for flat_frac of
    the remaining steps, then linear decay to end*lr at the last step."""
    if warmup > 0 and step < warmup:
        return start + (1.0 - start) * step / warmup
    rest = max(total - warmup, 1)
    flat = int(round(flat_frac * rest))
    t = step - warmup - flat
    if t <= 0:
        return 1.0
    span = max(rest - flat - 1, 1)
    return 1.0 + (end - 1.0) * min(t / span, 1.0)


def batch_indices(step: int, batch: int) -> List[int]:
    """Dataset indices of a step: disjoint, contiguous, so a resumed run sees the same items."""
    return list(range(step * batch, (step + 1) * batch))


def collate(items: Sequence[dict]) -> Dict[str, torch.Tensor]:
    return {
        "hr": torch.stack([it["hr"] for it in items]),
        "lr": torch.stack([it["lr"] for it in items]),
        "lr_u8": torch.stack([it["lr_u8"] for it in items]),
        "label": torch.tensor([int(it["label"]) for it in items], dtype=torch.long),
    }


class StepBatches:
    """Batches for steps [start, steps) of a PairDataset-like dataset, in a DataLoader so the
    degradation runs in worker processes. Item indices follow batch_indices()."""

    def __init__(self, dataset, batch: int, start: int, steps: int, workers: int = 0, hr_only: bool = False):
        self.dataset, self.batch, self.hr_only = dataset, batch, hr_only
        self.loader = torch.utils.data.DataLoader(
            _Indexed(dataset, hr_only), batch_sampler=[batch_indices(s, batch) for s in range(start, steps)],
            num_workers=workers, collate_fn=(collate_hr if hr_only else collate),
        )

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        return iter(self.loader)


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, ds, hr_only: bool):
        self.ds, self.hr_only = ds, hr_only

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if self.hr_only:  # stage 1 needs no LR: skip the degradation
            hr = self.ds.hr_u8(i)
            return {"hr": torch.from_numpy(hr.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0)}
        return self.ds[i]


def collate_hr(items: Sequence[dict]) -> Dict[str, torch.Tensor]:
    return {"hr": torch.stack([it["hr"] for it in items])}


def upsample_lr(lr_u8: torch.Tensor, size: int, mode: str, gen: torch.Generator) -> torch.Tensor:
    """LR uint8 [B, h, w, 3] -> model input [B, 3, size, size] in [-1, 1].

    mode 'pil': the inference preprocessing (PIL bicubic in float, resample.preprocess_lr).
    mode 'random': spec 10.1 — per image a random torch area / bilinear / bicubic resize,
    rounded to 1/255 and clamped to [0, 1].
    """
    x01 = lr_u8.permute(0, 3, 1, 2).to(torch.float64) / 255.0
    if mode == "pil":
        return (pil_bicubic_resize_float(x01, size, size) * 2 - 1).float()
    if mode != "random":
        raise ValueError(f"lr upsampling mode must be 'pil' or 'random', got {mode!r}")
    outs = []
    for b in range(x01.shape[0]):
        kind = ("area", "bilinear", "bicubic")[int(torch.randint(0, 3, (1,), generator=gen))]
        xb = x01[b:b + 1].float()
        if kind == "area":
            y = F.interpolate(xb, size=(size, size), mode="area")
        else:
            y = F.interpolate(xb, size=(size, size), mode=kind, align_corners=False)
        outs.append((torch.round(y.clamp(0, 1) * 255) / 255) * 2 - 1)
    return torch.cat(outs)


class JsonlLog:
    """JSONL writer. resume_step: keep an existing log, minus the records after that step (they
    came from a run that stopped after its last checkpoint and will be redone)."""

    def __init__(self, path: str, resume_step: Optional[int] = None):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        kept: List[str] = []
        if resume_step is not None and os.path.exists(path):
            with open(path) as fh:
                kept = [ln for ln in fh if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
        self.fh = open(path, "w")
        self.fh.writelines(kept)
        self.fh.flush()

    def write(self, rec: Dict) -> None:
        rec = {k: _jsonable(v) for k, v in rec.items()}
        self.fh.write(json.dumps(rec, sort_keys=False) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return _jsonable(v.item()) if v.numel() == 1 else [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else str(v)
    if isinstance(v, (np.floating, np.integer)):
        return _jsonable(v.item())
    return v


def save_checkpoint(path: str, payload: Dict) -> None:
    """torch.save to a temp file, then an atomic rename (a crash never leaves half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def rng_state() -> Dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: Dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
