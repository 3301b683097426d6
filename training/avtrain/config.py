"""Model configuration (spec 1.1, 8.4, 9.3) and the sequence layout derived from it (spec 1.3).

Every size is a config value: the d24 reference (512 px, K=10, 32x32 latent grid), a tiny
config for golden tensors and tests, and small CPU-sized models. Both the 512-px schedule
(1,2,3,4,6,9,13,18,24,32) and the 256-px schedule (1,2,3,4,5,6,8,10,13,16) work; the latent
grid is G = patch_nums[-1], the HR image is d*G, where d = 2^(len(vq_ch_mult) - 1) is the factor
by which both the VQVAE and the conditioning net downsample (16 in the spec; the shipped CPU model
uses 8), and the LR input is d*G/4.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Tuple

PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

LATENTS = ("image", "residual")
RESIDUAL_SCALE_RANGE = (1.0 / 64, 64.0)  # what the engine accepts in __metadata__ residual_scale
# Fields written to __metadata__ only when they differ from these defaults.
TOKEN_MODES = ("sample", "mean")
OPTIONAL_METADATA = {"latent": "image", "residual_scale": 1.0, "decoder_lr": False, "token_mode": "sample"}

# Mask-generator sizes are fixed by spec 11.2 / 11.7 (not config values).
SCA_LEVEL_EMBED_DIM = 8
SCA_HIDDEN = 32


@dataclass
class ModelConfig:
    depth: int = 24
    width: int = 1536
    heads: int = 24
    mlp_ratio: float = 4.0
    vocab: int = 4096
    cvae: int = 32
    vq_ch: int = 160
    vq_ch_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)
    vq_num_res: int = 2
    vq_attn_at_lowest: bool = True
    cond_ch: Tuple[int, ...] = (32, 128, 256, 512, 1536)
    patch_nums: Tuple[int, ...] = PATCH_NUMS_512
    num_classes: int = 2
    share_quant_resi: int = 4
    quant_resi: float = 0.5
    sca: bool = True
    rope_base: float = 10000.0
    # Residual latent (issue 11; a project option, not in the spec). latent "image": the VQVAE
    # tokenizes the HR image and the output is clamp(decoder(f_hat)) (spec 2.2). latent "residual":
    # it tokenizes (HR - base) / residual_scale, where base = 2 * up01 - 1 in fp32 is the model's own
    # upsampled LR input (up01 = resample.preprocess_lr's fp32 PIL-bicubic LR), and the output is
    # clamp(base + residual_scale * decoder(f_hat), -1, 1) in fp32 (decoder output not clamped
    # before the sum). Written to __metadata__ only when not the defaults, so older files and the
    # golden fixtures are unchanged.
    latent: str = "image"
    residual_scale: float = 1.0
    # LR-conditioned decoder (issue 11; a project option, not in the spec). With decoder_lr the
    # decoder also reads base = 2 * up01 - 1: at the start of each up level l, at that level's
    # resolution r_l = S / 2^l, h += Conv(3, 3 -> c_l, p1)(area_down(base, r_l)) (weights
    # decoder.lr_in.<l>.*; c_l = the channels entering level l). Tokens then carry detail only;
    # the structure and the denoising can come from the LR. Off by default (spec 7).
    decoder_lr: bool = False
    # Token mode (issue 11; a project option, not in the spec). "sample": each scale's map is the
    # codebook vectors of the sampled tokens (spec 5.1). "mean": it is the expected codebook vector
    # under the scale's CFG-mixed distribution, h = softmax(G) E (fp32), the minimum-mean-square
    # estimate when the tokens are uncertain (the sampled tokens are still returned; top-k / top-p
    # do not change h).
    token_mode: str = "sample"

    def __post_init__(self) -> None:
        self.vq_ch_mult = tuple(int(v) for v in self.vq_ch_mult)
        self.cond_ch = tuple(int(v) for v in self.cond_ch)
        self.patch_nums = tuple(int(v) for v in self.patch_nums)
        self.validate()

    def validate(self) -> None:
        if self.width % self.heads != 0:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.head_dim % 4 != 0:
            raise ValueError(f"head dim {self.head_dim} must be a multiple of 4 for 2-D RoPE")
        if len(self.patch_nums) < 2:
            raise ValueError("patch_nums needs at least two scales")
        if list(self.patch_nums) != sorted(set(self.patch_nums)) or self.patch_nums[0] != 1:
            raise ValueError(f"patch_nums must be strictly increasing from 1, got {self.patch_nums}")
        if 2 ** (len(self.vq_ch_mult) - 1) != 2 ** (len(self.cond_ch) - 1):
            raise ValueError("VQVAE and conditioning net must downsample by the same factor")
        for c in (self.vq_ch * m for m in self.vq_ch_mult):
            if c % 32 != 0:
                raise ValueError(f"VQVAE channel count {c} is not divisible by the 32 GroupNorm groups")
        if self.num_classes < 2:
            raise ValueError("num_classes must be >= 2 (label num_classes-1 is the CFG negative)")
        if self.share_quant_resi < 1:
            raise ValueError("share_quant_resi must be >= 1 (the number of Phi convs)")
        if self.token_mode not in TOKEN_MODES:
            raise ValueError(f"token_mode must be one of {TOKEN_MODES}, got {self.token_mode!r}")
        if self.latent not in LATENTS:
            raise ValueError(f"latent must be one of {LATENTS}, got {self.latent!r}")
        if not (RESIDUAL_SCALE_RANGE[0] <= self.residual_scale <= RESIDUAL_SCALE_RANGE[1]):
            raise ValueError(f"residual_scale must be in [{RESIDUAL_SCALE_RANGE[0]}, {RESIDUAL_SCALE_RANGE[1]}], "
                             f"got {self.residual_scale!r}")

    # ----- derived sizes -----
    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def grid(self) -> int:
        """Latent grid side G = patch_nums[-1] (32 for d24)."""
        return self.patch_nums[-1]

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vq_ch_mult) - 1)

    @property
    def residual(self) -> bool:
        return self.latent == "residual"

    @property
    def hr_size(self) -> int:
        return self.downsample * self.grid

    @property
    def lr_size(self) -> int:
        return self.hr_size // 4

    @property
    def n_lr_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def first_l(self) -> int:
        """Prefix length: G*G LR tokens + 1 class token (1025 for d24)."""
        return self.n_lr_tokens + 1

    @property
    def L(self) -> int:
        """Total output tokens over all scales (2240 for d24)."""
        return sum(pn * pn for pn in self.patch_nums)

    @property
    def T(self) -> int:
        """Transformer sequence length: prefix + (L - 1) scale inputs (3264 for d24)."""
        return self.first_l + self.L - 1

    @property
    def token_offsets(self) -> List[int]:
        """Output offset o_si of each scale in the L output tokens (spec 1.3)."""
        offs, cur = [], 0
        for pn in self.patch_nums:
            offs.append(cur)
            cur += pn * pn
        return offs

    @property
    def begin_ends(self) -> List[Tuple[int, int]]:
        """Sequence block [begin, end) of each step: the prefix for si=0, scale si after."""
        out = [(0, self.first_l)]
        cur = self.first_l
        for pn in self.patch_nums[1:]:
            out.append((cur, cur + pn * pn))
            cur += pn * pn
        return out

    @property
    def level_of_position(self) -> List[int]:
        """lvl[p] of spec 4.3: 0 for the prefix, si for scale si's block."""
        lvl = [0] * self.first_l
        for si, pn in enumerate(self.patch_nums[1:], start=1):
            lvl += [si] * (pn * pn)
        return lvl

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)


def d24() -> ModelConfig:
    """The VARSR 512 reference (spec 1.1): 1.065 G transformer params without refiner."""
    return ModelConfig()


def tiny() -> ModelConfig:
    """Golden/test config: 256-px schedule, 64x64 LR -> 256x256 HR.

    The VQVAE keeps the 32 GroupNorm groups of the reference, so its narrowest level has 32
    channels. ch_mult (1,1,1,2,1) puts one 64-channel level at 2G x 2G: the decoder then has
    nin_shortcuts in both directions and 2-channel GroupNorm groups, while the lowest level
    (mid block and attention) stays at 32 channels to keep the fixture files small.
    """
    return ModelConfig(
        depth=2, width=64, heads=2, mlp_ratio=4.0, vocab=64, cvae=16,
        vq_ch=32, vq_ch_mult=(1, 1, 1, 2, 1), vq_num_res=1, vq_attn_at_lowest=True,
        cond_ch=(8, 8, 16, 16, 32), patch_nums=PATCH_NUMS_256,
    )


def small() -> ModelConfig:
    """CPU-sized candidate for the shipped model: 256-px schedule (64x64 LR -> 256x256)."""
    return ModelConfig(
        depth=6, width=384, heads=6, mlp_ratio=4.0, vocab=4096, cvae=32,
        vq_ch=64, vq_ch_mult=(1, 1, 2, 2, 4), vq_num_res=2, vq_attn_at_lowest=True,
        cond_ch=(32, 64, 128, 256, 512), patch_nums=PATCH_NUMS_256,
    )


def small512() -> ModelConfig:
    """small() on the 512-px schedule (128x128 LR -> 512x512)."""
    return small().replace(patch_nums=PATCH_NUMS_512)


PRESETS = {"d24": d24, "tiny": tiny, "small": small, "small512": small512}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown config preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]()


# ----- safetensors metadata (every value a string) -----

def _fmt(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (tuple, list)):
        return ",".join(str(int(x)) for x in v)
    if isinstance(v, float):
        return repr(float(v))
    return str(v)


def config_to_metadata(cfg: ModelConfig) -> Dict[str, str]:
    """All config fields as strings: tuples "1,2,3", bools "1"/"0", floats repr()."""
    meta = {f.name: _fmt(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
            if not (f.name in OPTIONAL_METADATA and getattr(cfg, f.name) == OPTIONAL_METADATA[f.name])}
    if cfg.latent != "image" and "residual_scale" not in meta:
        meta["residual_scale"] = _fmt(cfg.residual_scale)
    meta["format"] = "alignvar"
    return meta


def config_from_metadata(meta: Dict[str, str]) -> ModelConfig:
    """Inverse of config_to_metadata; unknown keys are ignored, missing ones take d24 defaults."""
    kw = {}
    for f in dataclasses.fields(ModelConfig):
        if f.name not in meta:
            continue
        s = meta[f.name]
        default = f.default
        if isinstance(default, bool):
            if s not in ("0", "1"):
                raise ValueError(f"metadata {f.name}={s!r}: expected '0' or '1'")
            kw[f.name] = s == "1"
        elif isinstance(default, tuple):
            kw[f.name] = tuple(int(x) for x in s.split(",") if x.strip() != "")
        elif isinstance(default, float):
            kw[f.name] = float(s)
        elif isinstance(default, int):
            kw[f.name] = int(s)
        else:
            kw[f.name] = s
    return ModelConfig(**kw)


def phi_ticks(n: int):
    """VAR's PhiPartiallyShared ticks for n Phi convs (float64)."""
    import numpy as np

    if n == 4:
        return np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n)
    return np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)


def phi_index(si: int, num_scales: int, n_phi: int) -> int:
    """Phi conv used at scale si: the first tick nearest to si/(K-1), in float64 (spec 5.4)."""
    import numpy as np

    if n_phi == 1:
        return 0
    at = si / (num_scales - 1)
    return int(np.argmin(np.abs(phi_ticks(n_phi) - at)))


def rope_coordinates(cfg: ModelConfig):
    """[T, 2] fp32 (tx, ty) per sequence position (spec 4.2 generalised to the G grid).

    Grid list (G, 1, pn_1, ..., pn_{K-1}); token (r, c) of a pn grid gets tx = (r / pn) * G,
    ty = (c / pn) * G, evaluated in fp32 in that order (int/int division then multiply).
    """
    import torch

    grids = (cfg.grid, 1) + tuple(cfg.patch_nums[1:])
    tx, ty = [], []
    for pn in grids:
        r, c = torch.meshgrid(torch.arange(pn), torch.arange(pn), indexing="ij")
        tx.append(r.flatten() / pn * cfg.grid)
        ty.append(c.flatten() / pn * cfg.grid)
    return torch.stack([torch.cat(tx), torch.cat(ty)], dim=1).float()


def rope_frequencies(head_dim: int, base: float):
    """theta_i = 1 / base^(4i/D), i < D/4, fp32 as in the reference's precompute_freqs_cis."""
    import torch

    return 1.0 / (base ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
