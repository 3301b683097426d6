"""AlignVAR transformer: VARSR (spec 3, 4, 5) without the diffusion refiner, plus SCA (spec 11).

State-dict keys equal spec 8.2 (VARSR) and 11.7 (SCA):
  con_embedding.{conv_in, blocks.0..2n-1, conv_out}, word_embed, class_emb, pos_start, lvl_embed,
  blocks.{i}.attn.{mat_qkv.weight, q_bias, v_bias, scale_mul_1H11, proj, mask_lambda},
  blocks.{i}.ffn.{fc1, fc2}, blocks.{i}.ada_lin.1, head_nm.ada_lin.1, head,
  sca.{mask.0, mask.2, mask.4, level_embed.weight, gamma}.
Recomputable buffers (zero_k_bias, lvl_1L, the RoPE tables, the block-causal mask) are not
persistent; a VARSR checkpoint's copies of them and its refiner keys are ignored on load.

SCA is on iff every SCA key is present (cfg.sca). Without SCA the model is VARSR minus the
refiner: m = 1, gamma = 0, beta = 0, i.e. no token reweighting and no key bias.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import sampling
from .config import ModelConfig, rope_coordinates, rope_frequencies
from .postprocess import adain_fix, to_uint8
from .vqvae import compose_residual
from .resample import area_down
from .sca import MaskGenerator, beta_from_lambda, key_bias, structural_guidance, token_weights

LN_EPS = 1e-6


def _ln(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=LN_EPS)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Per-sample stochastic depth (spec 10.3)."""
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D]; cos/sin [L, D/2]; pair p = (x[2p], x[2p+1]) rotated by angle[p], in fp32."""
    xf = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = xf[..., 0], xf[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    return out.type_as(x)


class ConEmbedding(nn.Module):
    """LR conditioning net (spec 3): conv_in, then per level a stride-1 and a stride-2 conv."""

    def __init__(self, ch: Sequence[int], out_dim: int, device=None):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch[0], 3, 1, 1, device=device)
        self.blocks = nn.ModuleList()
        for i in range(len(ch) - 1):
            self.blocks.append(nn.Conv2d(ch[i], ch[i], 3, 1, 1, device=device))
            self.blocks.append(nn.Conv2d(ch[i], ch[i + 1], 3, 2, 1, device=device))
        self.conv_out = nn.Conv2d(ch[-1], out_dim, 3, 1, 1, device=device)

    @torch.no_grad()
    def init_variance_preserving(self, out_std: float = 3.0) -> None:
        """He-normal init (std sqrt(2 / fan_in)) for the SiLU convs and std out_std / sqrt(fan_in) for
        conv_out, biases 0. The spec's trunc-normal 0.02 (10.3) suits the d24 channel widths; in a
        narrow net it shrinks the signal by ~1e-4 over the 8 convs, so the LR tokens start (and, in
        a short run, stay) nearly independent of the image."""
        convs = [self.conv_in, *self.blocks]
        for m in convs:
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_in))
            nn.init.zeros_(m.bias)
        fan_in = self.conv_out.in_channels * 9
        nn.init.normal_(self.conv_out.weight, std=out_std / math.sqrt(fan_in))
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x):
        h = F.silu(self.conv_in(x))
        for blk in self.blocks:
            h = F.silu(blk(h))
        return self.conv_out(h)


class FFN(nn.Module):
    def __init__(self, c: int, hidden: int, device=None):
        super().__init__()
        self.fc1 = nn.Linear(c, hidden, device=device)
        self.fc2 = nn.Linear(hidden, c, device=device)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SelfAttention(nn.Module):
    """L2-normalised attention with per-head temperature, 2-D RoPE, KV cache and SCA key bias."""

    def __init__(self, c: int, heads: int, sca: bool, device=None):
        super().__init__()
        self.C, self.H, self.hd = c, heads, c // heads
        self.mat_qkv = nn.Linear(c, 3 * c, bias=False, device=device)
        self.q_bias = nn.Parameter(torch.zeros(c, device=device))
        self.v_bias = nn.Parameter(torch.zeros(c, device=device))
        self.register_buffer("zero_k_bias", torch.zeros(c, device=device), persistent=False)
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), math.log(4.0), device=device))
        self.max_scale_mul = math.log(100.0)
        self.proj = nn.Linear(c, c, device=device)
        self.sca = sca
        if sca:
            self.mask_lambda = nn.Parameter(torch.full((heads,), -3.0, device=device))
        self.caching = False
        self.cached_k: Optional[torch.Tensor] = None
        self.cached_v: Optional[torch.Tensor] = None

    def kv_caching(self, enable: bool) -> None:
        self.caching, self.cached_k, self.cached_v = enable, None, None

    def forward(self, x, cos, sin, attn_bias=None, kbias=None):
        """x [R, Lq, C]; cos/sin [Lq, hd/2]; attn_bias [Lq, Lk] additive or None;
        kbias [R, Lk] per-key bias b_j (SCA) or None."""
        R, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(R, L, 3, self.H, self.hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [R, H, L, hd] each
        s = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
        q = F.normalize(q.float(), dim=-1).mul(s)
        k = F.normalize(k.float(), dim=-1)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        v = v.float()
        if self.caching:
            if self.cached_k is not None:
                k = torch.cat((self.cached_k, k), dim=2)
                v = torch.cat((self.cached_v, v), dim=2)
            self.cached_k, self.cached_v = k, v
        logits = torch.matmul(q, k.transpose(-2, -1))  # [R, H, Lq, Lk], softmax scale 1
        if self.sca and kbias is not None:
            beta = beta_from_lambda(self.mask_lambda).view(1, self.H, 1, 1)
            logits = logits + beta * kbias[:, None, None, :].float()
        if attn_bias is not None:
            logits = logits + attn_bias
        a = torch.softmax(logits.float(), dim=-1)
        o = torch.matmul(a, v).transpose(1, 2).reshape(R, L, C)  # heads concatenated head-major
        return self.proj(o.type_as(x))


class AdaLNSelfAttn(nn.Module):
    def __init__(self, c: int, heads: int, mlp_ratio: float, sca: bool, drop_path_p: float = 0.0, device=None):
        super().__init__()
        self.C = c
        self.attn = SelfAttention(c, heads, sca, device)
        self.ffn = FFN(c, round(c * mlp_ratio), device)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c, device=device))
        self.drop_path_p = drop_path_p

    def forward(self, x, cond, cos, sin, attn_bias=None, kbias=None):
        g1, g2, s1, s2, sh1, sh2 = self.ada_lin(cond).view(-1, 1, 6, self.C).unbind(2)
        h = _ln(x) * (1 + s1) + sh1
        x = x + drop_path(self.attn(h, cos, sin, attn_bias, kbias) * g1, self.drop_path_p, self.training)
        h2 = _ln(x) * (1 + s2) + sh2
        x = x + drop_path(self.ffn(h2) * g2, self.drop_path_p, self.training)
        return x


class AdaLNBeforeHead(nn.Module):
    def __init__(self, c: int, device=None):
        super().__init__()
        self.C = c
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c, 2 * c, device=device))

    def forward(self, x, cond):
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, self.C).unbind(2)
        return _ln(x) * (1 + scale) + shift


def sca_keys(depth: int) -> List[str]:
    keys = [
        "sca.mask.0.weight", "sca.mask.0.bias", "sca.mask.2.weight", "sca.mask.2.bias",
        "sca.mask.4.weight", "sca.mask.4.bias", "sca.level_embed.weight", "sca.gamma",
    ]
    return keys + [f"blocks.{i}.attn.mask_lambda" for i in range(depth)]


def count_blocks(keys: Iterable[str]) -> int:
    ids = {int(k.split(".")[1]) for k in keys if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    return max(ids) + 1 if ids else 0


def detect_sca(keys: Iterable[str]) -> bool:
    """True iff all SCA keys are present, False iff none is; a partial set raises (spec 11.7)."""
    keys = set(keys)
    depth = count_blocks(keys)
    wanted = sca_keys(depth)
    present = [k for k in wanted if k in keys]
    stray = [k for k in keys if (k.startswith("sca.") or k.endswith(".attn.mask_lambda")) and k not in wanted]
    if stray:
        raise ValueError(f"unexpected SCA keys: {sorted(stray)[:5]}")
    if not present:
        return False
    if len(present) != len(wanted):
        missing = [k for k in wanted if k not in keys]
        raise ValueError(f"partial SCA key set: {len(present)} of {len(wanted)} present, missing {missing[:5]}")
    return True


IGNORED_SUFFIXES = (".zero_k_bias",)
IGNORED_KEYS = ("attn_bias_for_masking", "lvl_1L")
IGNORED_PREFIXES = ("diffloss.", "decoder_norm.")


def strip_ignored(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Drop recomputable buffers and the VARSR refiner (spec 8.1, 11.5)."""
    return {
        k: v for k, v in sd.items()
        if k not in IGNORED_KEYS and not k.endswith(IGNORED_SUFFIXES) and not k.startswith(IGNORED_PREFIXES)
    }


class AlignVAR(nn.Module):
    def __init__(self, cfg: ModelConfig, drop_path_rate: float = 0.0, device=None):
        super().__init__()
        self.cfg = cfg
        C, K = cfg.width, cfg.num_scales
        self.C, self.V, self.Cv, self.K = C, cfg.vocab, cfg.cvae, K
        self.con_embedding = ConEmbedding(cfg.cond_ch, C, device)
        self.word_embed = nn.Linear(cfg.cvae, C, device=device)
        self.class_emb = nn.Embedding(cfg.num_classes, C, device=device)
        self.pos_start = nn.Parameter(torch.empty(1, cfg.first_l, C, device=device))
        self.lvl_embed = nn.Embedding(K, C, device=device)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, cfg.depth)]
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(C, cfg.heads, cfg.mlp_ratio, cfg.sca, dpr[i], device) for i in range(cfg.depth)
        ])
        self.head_nm = AdaLNBeforeHead(C, device)
        self.head = nn.Linear(C, cfg.vocab, device=device)
        if cfg.sca:
            self.sca = MaskGenerator(cfg, device)

        lvl = torch.tensor(cfg.level_of_position, dtype=torch.int64)
        pos = rope_coordinates(cfg)  # [T, 2]
        freqs = rope_frequencies(cfg.head_dim, cfg.rope_base)  # [hd/4]
        ang = torch.cat([torch.outer(pos[:, 0], freqs), torch.outer(pos[:, 1], freqs)], dim=1).float()
        self.register_buffer("lvl_1L", lvl.view(1, -1).to(device or "cpu"), persistent=False)
        self.register_buffer("rope_pos", pos.to(device or "cpu"), persistent=False)
        self.register_buffer("rope_cos", torch.cos(ang).to(device or "cpu"), persistent=False)
        self.register_buffer("rope_sin", torch.sin(ang).to(device or "cpu"), persistent=False)
        if str(device) != "meta":
            self.init_weights()

    # ----- init (spec 10.3, 11.2) -----
    @torch.no_grad()
    def init_weights(self, init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, conv_std=0.02):
        init_std = math.sqrt(1.0 / self.C / 3.0)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=init_std)
            elif isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=conv_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_start, std=init_std)
        self.head.weight.mul_(init_head)
        self.head.bias.zero_()
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        self.head_nm.ada_lin[-1].bias.zero_()
        depth = len(self.blocks)
        for blk in self.blocks:
            blk.attn.proj.weight.div_(math.sqrt(2 * depth))
            blk.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            blk.ada_lin[-1].weight[2 * self.C:].mul_(init_adaln)
            blk.ada_lin[-1].weight[: 2 * self.C].mul_(init_adaln_gamma)
            blk.ada_lin[-1].bias.zero_()
            blk.attn.q_bias.zero_()
            blk.attn.v_bias.zero_()
            blk.attn.scale_mul_1H11.fill_(math.log(4.0))
            if self.cfg.sca:
                blk.attn.mask_lambda.fill_(-3.0)
        if self.cfg.sca:
            self.sca.init_weights()

    # ----- loading -----
    def load_checked(self, sd: Dict[str, torch.Tensor]) -> None:
        """Strict load after dropping ignored keys; the SCA key set must match cfg.sca."""
        sd = strip_ignored(sd)
        has_sca = detect_sca(sd.keys())
        if has_sca != self.cfg.sca:
            raise ValueError(
                f"state dict {'has' if has_sca else 'lacks'} the SCA keys but the model was built with sca={self.cfg.sca}"
            )
        self.load_state_dict(sd, strict=True)

    @classmethod
    def from_state_dict(cls, sd: Dict[str, torch.Tensor], cfg: ModelConfig) -> "AlignVAR":
        sd = strip_ignored(sd)
        model = cls(cfg.replace(sca=detect_sca(sd.keys())))
        model.load_checked(sd)
        return model

    # ----- shared pieces -----
    def get_logits(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(h.float(), cond).float()).float()

    def lr_tokens(self, lr_m11: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, G*G, C] (row-major)."""
        return self.con_embedding(lr_m11).flatten(2).transpose(1, 2)

    def sca_state(self, lr01: torch.Tensor):
        """(SG maps, masks, token weights w [B,T], key bias b [B,T]) or Nones without SCA."""
        if not self.cfg.sca:
            return None, None, None, None
        sg = structural_guidance(lr01, self.cfg.patch_nums)
        masks = self.sca.level_masks(sg)
        return sg, masks, token_weights(masks, self.sca.gamma, self.cfg), key_bias(masks)

    def block_causal_bias(self, device) -> torch.Tensor:
        lvl = self.lvl_1L[0].to(device)
        zero = torch.zeros((), device=device)
        return torch.where(lvl[:, None] >= lvl[None, :], zero, torch.full((), -math.inf, device=device))

    # ----- training (teacher forcing, spec 10.2 T3-T6) -----
    def forward_train(self, lr_m11, lr01_native, label, gt_idx_list, vqvae, x_in=None):
        """Teacher-forced logits [B, L, V] (fp32) with the block-causal mask.

        x_in: precomputed teacher-forcing inputs [B, L-1, Cv]; derived from gt_idx_list with the
        (frozen) VQVAE when None.
        """
        cfg = self.cfg
        if x_in is None:
            x_in = vqvae.idx_to_var_input(gt_idx_list)
        cond = self.class_emb(label)
        _, _, w, kb = self.sca_state(lr01_native)
        content = torch.cat([self.lr_tokens(lr_m11), cond[:, None], self.word_embed(x_in.float())], dim=1)
        if w is not None:
            content = content * w[..., None]
        x = torch.cat([content[:, : cfg.first_l] + self.pos_start, content[:, cfg.first_l:]], dim=1)
        x = x + self.lvl_embed(self.lvl_1L)
        attn_bias = self.block_causal_bias(x.device)
        cos, sin = self.rope_cos, self.rope_sin
        for blk in self.blocks:
            x = blk(x, cond, cos, sin, attn_bias, kb)
        return self.get_logits(x[:, cfg.n_lr_tokens:], cond)

    # ----- inference (spec 5) -----
    @torch.no_grad()
    def generate(
        self,
        vqvae,
        lr_m11: torch.Tensor,
        lr01_native: torch.Tensor,
        cfg_scale: float = 6.0,
        top_k: int = 1,
        top_p: float = 0.75,
        seed: int = 0,
        image_keys: Optional[Sequence[int]] = None,
        label: int = 0,
        return_intermediates: bool = False,
        adain_src: Optional[torch.Tensor] = None,
        force_idx: Optional[Sequence[torch.Tensor]] = None,
    ):
        """Returns (f_hat [B, Cv, G, G], [idx_si [B, pn^2]], intermediates dict or None).

        intermediates: sg, mask (lists per level), key_bias [B,T], lr_tokens [B,G*G,C],
        prefix_x [2B, first_l, C], and per scale si: G (CFG-mixed logits; si=0 class row only),
        Z (raw logits of both halves, same rows), idx, f_hat (after the scale), t; then dec
        (decoder output before the clamp), img_u8 [B, H, W, 3] and, when adain_src (the upsampled
        LR in [0,1], resample.preprocess_lr's up01) is given, img_adain_u8.
        force_idx: tokens [B, pn^2] for the first len(force_idx) scales, used instead of the
        sampled ones (the teacher-forced rows of avtrain.diagnose).
        """
        cfg = self.cfg
        B = lr_m11.shape[0]
        K, G = cfg.num_scales, cfg.grid
        device = lr_m11.device
        labels = torch.tensor([label] * B + [cfg.num_classes - 1] * B, device=device)
        cond = self.class_emb(labels)  # [2B, C]
        sg, masks, w, kb = self.sca_state(lr01_native)
        lrtok = self.lr_tokens(lr_m11)  # [B, G*G, C]
        n = cfg.n_lr_tokens
        lr_part = lrtok * w[:, :n, None] if w is not None else lrtok
        lr_part = lr_part.repeat(2, 1, 1)
        cls_part = cond[:, None]
        x = torch.cat([lr_part, cls_part], dim=1) + self.pos_start
        x = x + self.lvl_embed.weight[0]
        kb2 = kb.repeat(2, 1) if kb is not None else None
        inter: Dict[str, object] = {}
        if return_intermediates:
            inter.update(sg=sg, mask=masks, key_bias=kb, lr_tokens=lrtok, prefix_x=x.clone(), scales=[])
        for blk in self.blocks:
            blk.attn.kv_caching(True)
        f_hat = torch.zeros(B, cfg.cvae, G, G, device=device)
        idx_all: List[torch.Tensor] = []
        try:
            for si, (b0, b1) in enumerate(cfg.begin_ends):
                pn = cfg.patch_nums[si]
                cos, sin = self.rope_cos[b0:b1], self.rope_sin[b0:b1]
                kbs = kb2[:, :b1] if kb2 is not None else None
                for blk in self.blocks:
                    x = blk(x, cond, cos, sin, None, kbs)
                h_out = x[:, -1:] if si == 0 else x
                Z = self.get_logits(h_out, cond)  # [2B, Lq', V]
                t = cfg_scale * si / (K - 1)
                Gm = sampling.cfg_mix(Z, B, t)
                idx = sampling.sample(Gm, top_k=top_k, top_p=top_p, seed=seed, image_keys=image_keys, scale=si)
                idx = idx.to(device)
                if force_idx is not None and si < len(force_idx):  # teacher-forced prefix (diagnosis)
                    idx = force_idx[si].to(device)
                idx_all.append(idx)
                if cfg.token_mode == "mean" and not (force_idx is not None and si < len(force_idx)):
                    # ModelConfig.token_mode "mean": the expected code under softmax(G)
                    p = torch.softmax(Gm.float(), dim=-1)  # [B, pn^2, V]
                    h = (p @ vqvae.quantize.embedding.weight.float()).transpose(1, 2).reshape(B, cfg.cvae, pn, pn)
                else:
                    h = vqvae.quantize.idx_to_h(idx, pn)
                f_hat = vqvae.quantize.accumulate(si, f_hat, h)
                if return_intermediates:
                    inter["scales"].append(dict(G=Gm, Z=Z.float(), idx=idx, f_hat=f_hat.clone(), t=t))
                if si != K - 1:
                    pn_next = cfg.patch_nums[si + 1]
                    u = area_down(f_hat, pn_next).reshape(B, cfg.cvae, -1).transpose(1, 2)
                    e = self.word_embed(u)
                    if w is not None:
                        nb0, nb1 = cfg.begin_ends[si + 1]
                        e = e * w[:, nb0:nb1, None]
                    x = (e + self.lvl_embed.weight[si + 1]).repeat(2, 1, 1)
        finally:
            for blk in self.blocks:
                blk.attn.kv_caching(False)
        if return_intermediates:
            inter["dec"] = vqvae.decode(f_hat, adain_src)
            # residual latent: the image is base + residual_scale * decoder (adain_src is up01)
            inter["img_u8"] = to_uint8(compose_residual(cfg, inter["dec"], adain_src))
            if adain_src is not None:
                inter["img_adain_u8"] = adain_fix(inter["img_u8"].cpu(), adain_src.cpu())
            return f_hat, idx_all, inter
        return f_hat, idx_all, None
