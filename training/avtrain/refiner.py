"""VARSR's diffusion refiner network (spec 6.1): `DiffLoss.net` = SimpleMLPAdaLN, per token.

Parameter names equal VARSR's state-dict keys under `diffloss.` (spec 8.2). Widths are
arguments so that tiny fixtures can use a small W; VARSR uses W = 1024 and 6 blocks.
The schedule and the iDDPM sampler of spec 6.2 follow the network (`RefinerSchedule`,
`refine`), with the project's departure: noise from Philox keyed by the seed (`refiner_noise`),
not from a global RNG. `refine_f_hat` is the whole stage as the engine runs it (native/model/
refiner.cc): z from the last scale, the sampler, f_hat + 0.6 x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch
import torch.nn as nn

from .sampling import philox4x32_10

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


# ----- schedule and sampler (spec 6.2) -----

BASE_STEPS = 1000
STEPS = 10
GUIDANCE = 6.0
VAE_SCALE = 0.6
# Second Philox counter word of the refiner's draws: 0x100 + n (n = 10 for the initial noise,
# n = 9..1 for the step noise); the token sampler uses 0..K-1, so the streams never meet.
NOISE_STREAM = 0x100


@dataclass
class RefinerSchedule:
    """Respaced cosine schedule, float64 (spec 6.2). Index n = 0..STEPS-1."""

    timesteps: List[int]          # S_n: the original timestep the network receives
    betas: np.ndarray             # beta'_n
    abar: np.ndarray              # abar'_n
    abar_prev: np.ndarray         # abar'_{n-1}, 1 for n = 0
    post_log_var: np.ndarray      # plv_n (clipped: log pv_1 at n = 0)
    coef1: np.ndarray
    coef2: np.ndarray


def refiner_schedule(base_steps: int = BASE_STEPS, steps: int = STEPS) -> RefinerSchedule:
    def abar_fn(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = np.array([min(1 - abar_fn((i + 1) / base_steps) / abar_fn(i / base_steps), 0.999) for i in range(base_steps)])
    abar_full = np.cumprod(1.0 - betas)
    stride = (base_steps - 1) / (steps - 1)
    keep = [int(round(i * stride)) for i in range(steps)]
    new_betas, last = [], 1.0
    for t in keep:
        new_betas.append(1 - abar_full[t] / last)
        last = abar_full[t]
    b = np.array(new_betas, dtype=np.float64)
    abar = np.cumprod(1.0 - b)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    pv = b * (1.0 - abar_prev) / (1.0 - abar)
    plv = np.log(np.concatenate([[pv[1]], pv[1:]]))
    coef1 = b * np.sqrt(abar_prev) / (1.0 - abar)
    coef2 = (1.0 - abar_prev) * np.sqrt(1.0 - b) / (1.0 - abar)
    return RefinerSchedule(keep, b, abar, abar_prev, plv, coef1, coef2)


def refiner_noise(seed: int, image_keys: Sequence[int], n: int, tokens: int, channels: int) -> torch.Tensor:
    """N(0, 1) [B * tokens, channels] fp32 from Philox4x32-10 (the project's departure, spec 6.2).

    key = (seed & 0xffffffff, seed >> 32); counter = (image_key, 0x100 + n, token, q) for
    q = 0 .. channels/2 - 1; words x0, x1 give u1 = ((x0 >> 8) + 1) 2^-24 in (0, 1] and
    u2 = (x1 >> 8) 2^-24; channel 2q = sqrt(-2 ln u1) cos(2 pi u2), 2q + 1 = ... sin(2 pi u2),
    in float64, rounded to fp32.
    """
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint64)
    B, Q = len(image_keys), channels // 2
    ik = np.asarray(image_keys, dtype=np.uint64)[:, None, None]
    tok = np.arange(tokens, dtype=np.uint64)[None, :, None]
    q = np.arange(Q, dtype=np.uint64)[None, None, :]
    ik, tok, q = np.broadcast_arrays(ik, tok, q)
    ctr = np.stack([ik, np.full(ik.shape, NOISE_STREAM + n, dtype=np.uint64), tok, q], axis=-1)
    x = philox4x32_10(ctr, key).astype(np.uint64)
    u1 = ((x[..., 0] >> np.uint64(8)).astype(np.float64) + 1.0) * 2.0 ** -24
    u2 = (x[..., 1] >> np.uint64(8)).astype(np.float64) * 2.0 ** -24
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.stack([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=-1)  # [B, L, Q, 2]
    return torch.from_numpy(z.reshape(B * tokens, channels).astype(np.float32))


@torch.no_grad()
def refine(net: SimpleMLPAdaLN, z: torch.Tensor, seed: int, image_keys: Sequence[int], tokens: int,
           guidance: float = GUIDANCE, return_steps: bool = False):
    """Spec 6.2's sampler. z [2 * B * tokens, C]: conditional rows, then the negative half; or
    [B * tokens, C], the conditional rows alone (a run without guidance: eps = eps_cond).

    Returns the refined residual VAE_SCALE * x [B * tokens, Cv] (and per step x, eps when asked).
    Float64 schedule constants enter the fp32 arithmetic rounded to fp32.
    """
    sch = refiner_schedule()
    rows = len(image_keys) * tokens
    halves = z.shape[0] // rows
    assert halves in (1, 2) and z.shape[0] == halves * rows, "z must hold 1 or 2 halves of B * tokens rows"
    cv = net.input_proj.in_features
    x = refiner_noise(seed, image_keys, STEPS, tokens, cv)
    steps = []
    for n in range(STEPS - 1, -1, -1):
        t = torch.full((halves * rows,), sch.timesteps[n], dtype=torch.long)
        o = net(torch.cat([x] * halves), t, z)
        eps_c, v = o[:rows, :cv], o[:rows, cv:]
        eps = (1 + guidance) * eps_c - guidance * o[rows:, :cv] if halves == 2 else eps_c
        x0 = (math.sqrt(1 / sch.abar[n]) * x - math.sqrt(1 / sch.abar[n] - 1) * eps).clamp(-1, 1)
        mean = sch.coef1[n] * x0 + sch.coef2[n] * x
        frac = (v + 1) / 2
        logvar = frac * math.log(sch.betas[n]) + (1 - frac) * sch.post_log_var[n]
        x = mean + torch.exp(0.5 * logvar) * refiner_noise(seed, image_keys, n, tokens, cv) if n > 0 else mean
        steps.append({"n": n, "eps": eps.clone(), "x": x.clone()})
    out = VAE_SCALE * x
    return (out, steps) if return_steps else out


@torch.no_grad()
def refine_f_hat(net: SimpleMLPAdaLN, decoder_norm: nn.LayerNorm, word_embed: nn.Module, codebook: torch.Tensor,
                 h_last: torch.Tensor, idx_last: torch.Tensor, f_hat: torch.Tensor, seed: int,
                 image_keys: Sequence[int], cfg_scale: float, return_steps: bool = False):
    """The refiner stage (spec 6.2) on a finished generation.

    h_last [H * B, L, C]: the residual stream after the last scale (the head_nm input), H = 2
    halves under guidance, else 1; idx_last [B, L] the conditional half's last-scale tokens;
    f_hat [B, Cv, G, G]. z = decoder_norm(h_last + word_embed(E[idx_last])) for every half;
    guidance w = the last scale's t = cfg_scale (0: the conditional half alone).
    Returns (f_hat + 0.6 x, z, refined [B * L, Cv], steps).
    """
    B, L = idx_last.shape
    halves = h_last.shape[0] // B
    if cfg_scale == 0 and halves == 2:
        h_last, halves = h_last[:B], 1
    emb = word_embed(codebook[idx_last])                                   # [B, L, C]
    z = decoder_norm(h_last + emb.repeat(halves, 1, 1)).reshape(halves * B * L, -1)
    refined, steps = refine(net, z, seed=seed, image_keys=image_keys, tokens=L, guidance=cfg_scale,
                            return_steps=True)
    G = f_hat.shape[-1]
    out = f_hat + refined.view(B, G, G, -1).permute(0, 3, 1, 2)
    return (out, z, refined, steps) if return_steps else out
