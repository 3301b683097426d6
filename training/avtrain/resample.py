"""Resampling kernels (spec 2.1, 5.5) and the project's LR preprocessing.

- bicubic_up: PyTorch bicubic, A = -0.75, align_corners=False, clamped taps (spec 5.5).
- area_down: PyTorch 'area' = adaptive average pooling windows (spec 5.5).
- nearest: out[i] = in[floor(i*in/out)].
- pil_bicubic_resize_float: Pillow's bicubic (a = -0.5, antialiased support, out-of-image taps
  dropped and the rest renormalised; spec 2.1) evaluated in float64, horizontal pass first,
  with NO uint8 rounding or clipping between or after the passes.

Project decision (LR preprocessing): the LR image u8 [h, w] is divided by 255, resized to
hr_size x hr_size with pil_bicubic_resize_float (float64), then mapped to 2x-1 and cast to
fp32. Pillow itself rounds and clips to uint8 after each pass; the spec allows +-1 LSB and
the float version is what the engine (AV_RESAMPLE_PIL_BICUBIC) and the golden tensors use.
The same float result (in [0,1], unclipped) is the AdaIN colour-fix source (spec 2.2.3).
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

Size = Union[int, Tuple[int, int]]


def _hw(size: Size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def bicubic_up(x: torch.Tensor, size: Size) -> torch.Tensor:
    """[B, C, h, w] -> [B, C, H, W], PyTorch bicubic (align_corners=False)."""
    H, W = _hw(size)
    if x.shape[-2:] == (H, W):
        return x
    return F.interpolate(x, size=(H, W), mode="bicubic", align_corners=False)


def area_down(x: torch.Tensor, size: Size) -> torch.Tensor:
    """[B, C, h, w] -> [B, C, H, W], adaptive average pooling windows."""
    H, W = _hw(size)
    if x.shape[-2:] == (H, W):
        return x
    return F.interpolate(x, size=(H, W), mode="area")


def nearest(x: torch.Tensor, size: Size) -> torch.Tensor:
    H, W = _hw(size)
    return F.interpolate(x, size=(H, W), mode="nearest")


def _pil_cubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    out = np.zeros_like(x)
    m1 = x < 1.0
    m2 = (x >= 1.0) & (x < 2.0)
    out[m1] = ((a + 2.0) * x[m1] - (a + 3.0)) * x[m1] * x[m1] + 1.0
    out[m2] = (((x[m2] - 5.0) * x[m2] + 8.0) * x[m2] - 4.0) * a
    return out


def pil_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] float64 weights of one Pillow bicubic pass (rows sum to 1)."""
    scale = in_size / out_size
    fs = max(scale, 1.0)
    support = 2.0 * fs
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(0, int(center - support + 0.5))
        hi = min(in_size, int(center + support + 0.5))
        j = np.arange(lo, hi)
        w = _pil_cubic((j + 0.5 - center) / fs)
        s = w.sum()
        if s != 0.0:
            w = w / s
        mat[i, lo:hi] = w
    return mat


def pil_bicubic_resize_float(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Pillow bicubic on float planes [..., h, w] -> [..., out_h, out_w] in float64.

    Horizontal pass first, then vertical, exactly Pillow's taps and renormalisation, with no
    rounding or clipping. Returns float64; callers cast.
    """
    h, w = x.shape[-2:]
    xd = x.to(torch.float64)
    mw = torch.from_numpy(pil_bicubic_matrix(w, out_w))
    mh = torch.from_numpy(pil_bicubic_matrix(h, out_h))
    tmp = torch.matmul(xd, mw.t())  # [..., h, out_w]
    return torch.matmul(mh, tmp)  # [..., out_h, out_w]


def lr_u8_to_unit(lr_u8: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """uint8 [B, h, w, 3] -> float64 [B, 3, h, w] in [0, 1]."""
    t = torch.as_tensor(np.asarray(lr_u8))
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 [B, h, w, 3], got {t.dtype} {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).to(torch.float64) / 255.0


def preprocess_lr(lr_u8: Union[np.ndarray, torch.Tensor], hr_size: int):
    """The project's LR preprocessing (module docstring).

    Returns (lr_m11 fp32 [B,3,H,W] model input, up01 fp32 [B,3,H,W] AdaIN source,
    lr01 fp32 [B,3,h,w] native LR in [0,1] for structural guidance).
    """
    lr01 = lr_u8_to_unit(lr_u8)
    up01 = pil_bicubic_resize_float(lr01, hr_size, hr_size)
    lr_m11 = (up01 * 2.0 - 1.0).float()
    return lr_m11, up01.float(), lr01.float()
