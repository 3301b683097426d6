"""Output post-processing (spec 2.2).

to_uint8: decoder output -> clamp [-1, 1] -> (x + 1) / 2 -> floor(255 * x + 0.5) as uint8
[B, H, W, 3] (round half up; fp32).

adain_fix (spec 2.2.3), fp32 as the reference's torch code: source S = the PIL-bicubic
upsampled LR in [0,1] (resample.preprocess_lr's up01, unrounded), target X = uint8 SR / 255.
Per image and channel over all pixels: mean, unbiased (N-1) variance, sigma = sqrt(var + 1e-5);
Y = clamp((X - mu_X) / sigma_X * sigma_S + mu_S, 0, 1); uint8 = floor(255 * Y) (truncation, as
torchvision's ToPILImage). Products at exact integers may truncate one lower in other float
orders, so engines should compare these images within 1 LSB.

wavelet_fix (spec 2.2.4, an optional engine mode): the same X and S; blur_r = depthwise 3x3
[[1,2,1],[2,4,2],[1,2,1]]/16 with dilation r and replicate padding r; 5 levels r = 1, 2, 4, 8, 16
(low = blur_r(cur), high += cur - low, cur = low); Y = clamp(high(X) + low(S), 0, 1), truncated
to uint8 like adain_fix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_unit(dec: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] decoder output -> img01 in [0, 1] (fp32)."""
    return (dec.float().clamp(-1, 1) + 1) / 2


def to_uint8(dec: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] decoder output -> uint8 [B, H, W, 3], round half up."""
    img01 = to_unit(dec)
    return torch.floor(img01 * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _stats(x: torch.Tensor):
    B, C = x.shape[:2]
    flat = x.reshape(B, C, -1)
    mean = flat.mean(dim=-1).view(B, C, 1, 1)
    var = flat.var(dim=-1, unbiased=True).view(B, C, 1, 1) + 1e-5
    return mean, var.sqrt()


def adain_fix(sr_u8: torch.Tensor, src01: torch.Tensor) -> torch.Tensor:
    """sr_u8 uint8 [B, H, W, 3], src01 fp32 [B, 3, H, W] -> uint8 [B, H, W, 3] (truncation)."""
    x = sr_u8.permute(0, 3, 1, 2).float() / 255.0
    s = src01.float()
    mx, sx = _stats(x)
    ms, ss = _stats(s)
    y = ((x - mx) / sx * ss + ms).clamp(0, 1)
    return (y * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


_WAVELET_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0


def wavelet_blur(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, C, H, W] fp32 -> the same, blurred with dilation r and replicate padding r."""
    C = x.shape[1]
    k = _WAVELET_KERNEL.to(x.dtype).view(1, 1, 3, 3).repeat(C, 1, 1, 1)
    return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), k, groups=C, dilation=r)


def wavelet_split(x: torch.Tensor, levels: int = 5):
    """Returns (sum of the high bands, lowest band) of [B, C, H, W] fp32."""
    high = torch.zeros_like(x)
    cur = x
    for i in range(levels):
        low = wavelet_blur(cur, 2 ** i)
        high = high + (cur - low)
        cur = low
    return high, cur


def wavelet_fix(sr_u8: torch.Tensor, src01: torch.Tensor) -> torch.Tensor:
    """sr_u8 uint8 [B, H, W, 3], src01 fp32 [B, 3, H, W] -> uint8 [B, H, W, 3] (truncation)."""
    x = sr_u8.permute(0, 3, 1, 2).float() / 255.0
    high, _ = wavelet_split(x)
    _, low = wavelet_split(src01.float())
    y = (high + low).clamp(0, 1)
    return (y * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
