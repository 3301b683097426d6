"""VARSR's diffusion refiner network (spec 6.1): `DiffLoss.net` = SimpleMLPAdaLN, per token.

Parameter names equal VARSR's state-dict keys under `diffloss.` (spec 8.2). Widths are
arguments so that tiny fixtures can use a small W; VARSR uses W = 1024 and 6 blocks.
Only the network is here (the converter's fixtures need its keys and shapes); the sampler of
spec 6.2 is not in the engine yet (docs/decisions.md, "VARSR refiner").
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

FREQ_DIM = 256


def timestep_embedding(t: torch.Tensor, dim: int = FREQ_DIM) -> torch.Tensor:
    """[N] integer timesteps -> [N, dim]: [cos(t f), sin(t f)], f_i = exp(-ln(10000) i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t):
        return self.mlp(timestep_embedding(t))


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, a, y):
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        h = self.in_ln(a) * (1 + scale) + shift
        return a + gate * self.mlp(h)


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_ch: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_ch)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, a, y):
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(self.norm_final(a) * (1 + scale) + shift)


class SimpleMLPAdaLN(nn.Module):
    """o = net(x_t [N, Cv], t [N], z [N, C]) -> [N, 2 Cv]: eps then the variance interpolation v."""

    def __init__(self, cvae: int, cond: int, width: int = 1024, blocks: int = 6):
        super().__init__()
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond, width)
        self.input_proj = nn.Linear(cvae, width)
        self.res_blocks = nn.ModuleList([ResBlock(width) for _ in range(blocks)])
        self.final_layer = FinalLayer(width, 2 * cvae)

    def forward(self, x, t, z):
        y = self.time_embed(t) + self.cond_embed(z)
        a = self.input_proj(x)
        for blk in self.res_blocks:
            a = blk(a, y)
        return self.final_layer(a, y)


class DiffLoss(nn.Module):
    def __init__(self, cvae: int, cond: int, width: int = 1024, blocks: int = 6):
        super().__init__()
        self.net = SimpleMLPAdaLN(cvae, cond, width, blocks)
