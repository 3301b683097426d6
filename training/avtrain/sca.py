"""SCA: structural guidance (spec 11.1), the mask generator M_phi (11.2), the per-position
sequence mask and the attention key bias (11.4). Token reweighting (11.3) and the biased
attention itself live in model.py.

Level convention: level 0 is the LR prefix grid (G x G, G = patch_nums[-1]), level k >= 1 is
scale k (pn_k x pn_k). Scale 0 has no input tokens, so there is no SG map for it.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import SCA_HIDDEN, SCA_LEVEL_EMBED_DIM, ModelConfig
from .resample import area_down

_BINOMIAL5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def _reflect101(i: torch.Tensor, n: int) -> torch.Tensor:
    """Reflect-101 index map (-1 -> 1, n -> n-2), valid for any offset and n >= 1."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i > n - 1, period - i, i)


def _blur_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    base = torch.arange(n)
    out = torch.zeros_like(x)
    for t, w in enumerate(_BINOMIAL5):
        idx = _reflect101(base + (t - 2), n)
        out = out + (w / 16.0) * torch.index_select(x, dim, idx)
    return out


def binomial_blur(x: torch.Tensor) -> torch.Tensor:
    """Separable [1,4,6,4,1]/16 blur, reflect-101 borders, over the last two axes."""
    return _blur_axis(_blur_axis(x, -1), -2)


def reduce2(g: torch.Tensor) -> torch.Tensor:
    """REDUCE(G) = blur(G)[0::2, 0::2] (size ceil(n/2))."""
    return binomial_blur(g)[..., 0::2, 0::2]


def expand2(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """EXPAND(X, h x w): X at the even coordinates of a zero h x w image, then 4 * blur."""
    z = torch.zeros(x.shape[:-2] + (h, w), dtype=x.dtype)
    z[..., 0::2, 0::2] = x
    return 4.0 * binomial_blur(z)


def structural_map(lr01: torch.Tensor) -> torch.Tensor:
    """Native LR [B, 3, h, w] in [0,1] -> normalised structure map Sn [B, h, w] (float64)."""
    x = lr01.detach().to(torch.float64).cpu()
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # [B, h, w]
    h, w = y.shape[-2:]
    g0 = y
    g1 = reduce2(g0)
    g2 = reduce2(g1)
    l0 = g0 - expand2(g1, h, w)
    l1 = g1 - expand2(g2, g1.shape[-2], g1.shape[-1])
    s = l0.abs() + expand2(l1.abs(), h, w)
    smin = s.amin(dim=(-2, -1), keepdim=True)
    smax = s.amax(dim=(-2, -1), keepdim=True)
    return (s - smin) / torch.clamp(smax - smin, min=1e-6)


def structural_guidance(lr01: torch.Tensor, patch_nums) -> List[torch.Tensor]:
    """SG maps per level (spec 11.1): [SG_pre (G x G), SG_1, ..., SG_{K-1}], each fp32 [B, pn, pn].

    Computed in float64 and rounded to fp32 once at the end; lr01 is the native LR (uint8/255).
    """
    sn = structural_map(lr01).unsqueeze(1)  # [B, 1, h, w]
    grids = [patch_nums[-1]] + list(patch_nums[1:])
    out = [area_down(sn, pn)[:, 0].float() for pn in grids]
    return [t.to(lr01.device) for t in out]


class MaskGenerator(nn.Module):
    """M_phi (spec 11.2) plus the SCA parameters; state-dict keys sca.mask.{0,2,4}.*,
    sca.level_embed.weight, sca.gamma."""

    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        K = cfg.num_scales
        e, hdim = SCA_LEVEL_EMBED_DIM, SCA_HIDDEN
        self.mask = nn.ModuleList([
            nn.Conv2d(1 + e, hdim, 3, 1, 1, device=device),
            nn.GELU(approximate="tanh"),
            nn.Conv2d(hdim, hdim, 3, 1, 2, dilation=2, device=device),
            nn.GELU(approximate="tanh"),
            nn.Conv2d(hdim + 1, 1, 1, 1, 0, device=device),
        ])
        self.level_embed = nn.Embedding(K, e, device=device)
        self.gamma = nn.Parameter(torch.empty(K, device=device))

    @torch.no_grad()
    def init_weights(self, sg_gain: float = 4.0, gamma0: float = 0.01) -> None:
        nn.init.trunc_normal_(self.mask[0].weight, std=0.02)
        nn.init.zeros_(self.mask[0].bias)
        nn.init.trunc_normal_(self.mask[2].weight, std=0.02)
        nn.init.zeros_(self.mask[2].bias)
        nn.init.trunc_normal_(self.level_embed.weight, std=0.02)
        self.mask[4].weight.zero_()
        self.mask[4].weight[0, SCA_HIDDEN, 0, 0] = sg_gain
        self.mask[4].bias.zero_()
        self.gamma.fill_(gamma0)

    def level_mask(self, sg: torch.Tensor, level: int) -> torch.Tensor:
        """SG_l [B, n, n] -> m_l [B, n, n] in (0, 1)."""
        B, n, m = sg.shape
        s = sg.unsqueeze(1).float()
        e = self.level_embed.weight[level].view(1, -1, 1, 1).expand(B, -1, n, m)
        h = self.mask[1](self.mask[0](torch.cat([s, e], dim=1)))
        h = self.mask[3](self.mask[2](h))
        return torch.sigmoid(self.mask[4](torch.cat([h, s], dim=1)))[:, 0]

    def level_masks(self, sg_levels: List[torch.Tensor]) -> List[torch.Tensor]:
        return [self.level_mask(sg, lvl) for lvl, sg in enumerate(sg_levels)]


def mask_sequence(masks: List[torch.Tensor]) -> torch.Tensor:
    """Per-position mask m_seq [B, T]: m_0 (row-major), 1 for the class token, then m_1..m_{K-1}."""
    B = masks[0].shape[0]
    parts = [masks[0].reshape(B, -1), masks[0].new_ones(B, 1)] + [m.reshape(B, -1) for m in masks[1:]]
    return torch.cat(parts, dim=1)


def key_bias(masks: List[torch.Tensor]) -> torch.Tensor:
    """b [B, T] = ln(m_seq + 1e-6), exactly 0 at the class token (spec 11.4)."""
    B = masks[0].shape[0]
    lr = torch.log(masks[0].reshape(B, -1) + 1e-6)
    scales = [torch.log(m.reshape(B, -1) + 1e-6) for m in masks[1:]]
    return torch.cat([lr, lr.new_zeros(B, 1)] + scales, dim=1)


def token_weights(masks: List[torch.Tensor], gamma: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """w [B, T] = 1 + gamma_lvl * m_seq, exactly 1 at the class token (spec 11.3)."""
    B = masks[0].shape[0]
    parts = [1.0 + gamma[0] * masks[0].reshape(B, -1), masks[0].new_ones(B, 1)]
    for k, m in enumerate(masks[1:], start=1):
        parts.append(1.0 + gamma[k] * m.reshape(B, -1))
    return torch.cat(parts, dim=1)


def beta_from_lambda(mask_lambda: torch.Tensor) -> torch.Tensor:
    """beta = softplus(rho) >= 0 (spec 11.4)."""
    return F.softplus(mask_lambda)
