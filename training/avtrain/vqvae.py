"""Multi-scale VQVAE (spec 7, key names spec 8.3): VAR's Encoder/Decoder/VectorQuantizer2 with
VARSR's tokenizer variant (no Phi at the last scale).

Module tree (state-dict keys):
  encoder.*, decoder.*            conv_in, down/up.{l}.block.{b}.{norm1,conv1,norm2,conv2,nin_shortcut},
                                  .attn.{b}.{norm,qkv,proj_out}, .downsample.conv / .upsample.conv,
                                  mid.{block_1,attn_1,block_2}, norm_out, conv_out
  quantize.embedding.weight       codebook E [V, Cv]
  quantize.quant_resi.qresi_ls.j  Phi_j convs [Cv, Cv, 3, 3]
  quantize.ema_vocab_hit_SV       [K, V] usage statistics (VQVAE training only)
  quant_conv, post_quant_conv     Conv(3, Cv -> Cv)

Everything is generic in the config: channels vq_ch * vq_ch_mult, vq_num_res blocks per level
(num_res + 1 in the decoder), the latent grid G = patch_nums[-1] and K = len(patch_nums).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig, phi_index, phi_ticks
from .resample import area_down, bicubic_up


def _gn(c: int, device=None) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True, device=device)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, device=None):
        super().__init__()
        self.norm1 = _gn(cin, device)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, device=device)
        self.norm2 = _gn(cout, device)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, device=device)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0, device=device) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head full-width self-attention over H*W positions (spec 7)."""

    def __init__(self, c: int, device=None):
        super().__init__()
        self.C = c
        self.norm = _gn(c, device)
        self.qkv = nn.Conv2d(c, 3 * c, 1, 1, 0, device=device)
        self.proj_out = nn.Conv2d(c, c, 1, 1, 0, device=device)

    def forward(self, x):
        B, _, H, W = x.shape
        C = self.C
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)  # [B, C, N] each
        w = torch.bmm(q.transpose(1, 2), k).mul_(C ** -0.5)  # [B, N(q), N(k)]
        w = F.softmax(w, dim=2)
        h = torch.bmm(v, w.transpose(1, 2)).reshape(B, C, H, W)  # h[:, :, i] = sum_j w[i, j] v[:, j]
        return x + self.proj_out(h)


class Upsample2x(nn.Module):
    def __init__(self, c: int, device=None):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1, device=device)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample2x(nn.Module):
    def __init__(self, c: int, device=None):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0, device=device)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        ch, mult, nres = cfg.vq_ch, cfg.vq_ch_mult, cfg.vq_num_res
        self.num_resolutions = len(mult)
        self.num_res_blocks = nres
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1, device=device)
        in_mult = (1,) + tuple(mult)
        self.down = nn.ModuleList()
        block_in = ch
        for lvl in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in = ch * in_mult[lvl]
            block_out = ch * mult[lvl]
            for _ in range(nres):
                block.append(ResnetBlock(block_in, block_out, device))
                block_in = block_out
                if lvl == self.num_resolutions - 1 and cfg.vq_attn_at_lowest:
                    attn.append(AttnBlock(block_in, device))
            down = nn.Module()
            down.block = block
            down.attn = attn
            if lvl != self.num_resolutions - 1:
                down.downsample = Downsample2x(block_in, device)
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, device)
        self.mid.attn_1 = AttnBlock(block_in, device)
        self.mid.block_2 = ResnetBlock(block_in, block_in, device)
        self.norm_out = _gn(block_in, device)
        self.conv_out = nn.Conv2d(block_in, cfg.cvae, 3, 1, 1, device=device)

    def forward(self, x):
        h = self.conv_in(x)
        for lvl in range(self.num_resolutions):
            for b in range(self.num_res_blocks):
                h = self.down[lvl].block[b](h)
                if len(self.down[lvl].attn) > 0:
                    h = self.down[lvl].attn[b](h)
            if lvl != self.num_resolutions - 1:
                h = self.down[lvl].downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        ch, mult, nres = cfg.vq_ch, cfg.vq_ch_mult, cfg.vq_num_res
        self.num_resolutions = len(mult)
        self.num_res_blocks = nres
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.cvae, block_in, 3, 1, 1, device=device)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, device)
        self.mid.attn_1 = AttnBlock(block_in, device)
        self.mid.block_2 = ResnetBlock(block_in, block_in, device)
        ups = []
        for lvl in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * mult[lvl]
            for _ in range(nres + 1):
                block.append(ResnetBlock(block_in, block_out, device))
                block_in = block_out
                if lvl == self.num_resolutions - 1 and cfg.vq_attn_at_lowest:
                    attn.append(AttnBlock(block_in, device))
            up = nn.Module()
            up.block = block
            up.attn = attn
            if lvl != 0:
                up.upsample = Upsample2x(block_in, device)
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = _gn(block_in, device)
        self.conv_out = nn.Conv2d(block_in, 3, 3, 1, 1, device=device)
        self.lr_in = None
        if cfg.decoder_lr:  # ModelConfig.decoder_lr: channels entering each up level
            cin = [ch * mult[lvl + 1] if lvl + 1 < len(mult) else ch * mult[-1] for lvl in range(len(mult))]
            self.lr_in = nn.ModuleList([nn.Conv2d(3, c, 3, 1, 1, device=device) for c in cin])
            for conv in self.lr_in:  # zero init: starts as the plain decoder
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, z, base=None):
        if self.lr_in is not None and base is None:
            raise ValueError("an LR-conditioned decoder (decoder_lr) needs the base image")
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        S = base.shape[-1] if base is not None else 0
        for lvl in reversed(range(self.num_resolutions)):
            if self.lr_in is not None:
                r = h.shape[-1]
                b = base if r == S else F.adaptive_avg_pool2d(base, (r, r))
                h = h + self.lr_in[lvl](b.to(h.dtype))
            for b in range(self.num_res_blocks + 1):
                h = self.up[lvl].block[b](h)
                if len(self.up[lvl].attn) > 0:
                    h = self.up[lvl].attn[b](h)
            if lvl != 0:
                h = self.up[lvl].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Phi(nn.Conv2d):
    """Phi(h) = (1 - r) h + r Conv(3, Cv -> Cv)(h), r = quant_resi (0.5)."""

    def __init__(self, cv: int, ratio: float, device=None):
        super().__init__(cv, cv, 3, 1, 1, device=device)
        self.resi_ratio = abs(ratio)

    def forward(self, h):
        return h.mul(1 - self.resi_ratio) + super().forward(h).mul(self.resi_ratio)


class PhiPartiallyShared(nn.Module):
    def __init__(self, qresi_ls: nn.ModuleList):
        super().__init__()
        self.qresi_ls = qresi_ls
        self.ticks = phi_ticks(len(qresi_ls))


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: ModelConfig, beta: float = 0.25, device=None):
        super().__init__()
        self.cfg = cfg
        self.V, self.Cv = cfg.vocab, cfg.cvae
        self.patch_nums = tuple(cfg.patch_nums)
        self.beta = beta
        self.embedding = nn.Embedding(cfg.vocab, cfg.cvae, device=device)
        self.quant_resi = PhiPartiallyShared(
            nn.ModuleList([Phi(cfg.cvae, cfg.quant_resi, device) for _ in range(cfg.share_quant_resi)])
        )
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), cfg.vocab, device=device))
        self.record_hit = 0

    def phi(self, si: int) -> Phi:
        return self.quant_resi.qresi_ls[phi_index(si, len(self.patch_nums), len(self.quant_resi.qresi_ls))]

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        """argmin_v ||z - E_v||^2 computed as ||z||^2 + ||E_v||^2 - 2 z.E_v (ties -> lowest)."""
        E = self.embedding.weight.detach().float()
        d = z_NC.float().square().sum(1, keepdim=True) + E.square().sum(1)
        d = torch.addmm(d, z_NC.float(), E.t(), alpha=-2.0, beta=1.0)
        return torch.argmin(d, dim=1)

    @torch.no_grad()
    def restart_dead_codes(self, threshold: float, gen: torch.Generator) -> int:
        """Re-seeds every code hit less than `threshold` times per step (EMA over all scales) with a
        quantizer input of the last training forward (plus 1% noise), the usual cure for codebook
        collapse; returns how many codes were re-seeded. Needs a training forward first."""
        z = getattr(self, "last_z", None)
        if z is None:
            return 0
        dead = (self.ema_vocab_hit_SV.sum(0) < threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pick = torch.randint(0, z.shape[0], (dead.numel(),), generator=gen).to(z.device)
        new = z[pick] + torch.randn(dead.numel(), z.shape[1], generator=gen).to(z.device) * (z.std() * 0.01)
        self.embedding.weight[dead] = new.to(self.embedding.weight.dtype)
        # count the fresh codes as used so they get time to attract inputs before the next check
        self.ema_vocab_hit_SV[:, dead] = threshold
        return int(dead.numel())

    # ----- VQVAE training forward: Phi at all K scales (VAR's quantize.forward) -----
    def forward(self, f: torch.Tensor):
        """Returns (f_hat with straight-through grad, vq_loss, per-scale usage fractions)."""
        f = f.float()
        B, C, H, W = f.shape
        f_ng = f.detach()
        f_rest = f_ng.clone()
        f_hat = torch.zeros_like(f_rest)
        K = len(self.patch_nums)
        loss = f.new_zeros(())
        hits = []
        zs: List[torch.Tensor] = []
        for si, pn in enumerate(self.patch_nums):
            z = area_down(f_rest, pn) if si != K - 1 else f_rest
            z_NC = z.permute(0, 2, 3, 1).reshape(-1, C)
            idx = self.nearest(z_NC)
            hits.append(idx.bincount(minlength=self.V).float())
            if self.training:
                zs.append(z_NC.detach()[torch.randperm(z_NC.shape[0], device=z_NC.device)[:256]])
            h = self.embedding(idx.view(B, pn, pn)).permute(0, 3, 1, 2)
            if si != K - 1:
                h = bicubic_up(h, (H, W))
            h = self.phi(si)(h)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            loss = loss + F.mse_loss(f_hat.detach(), f).mul(self.beta) + F.mse_loss(f_hat, f_ng)
        loss = loss / K
        if self.training:
            with torch.no_grad():
                hit = torch.stack(hits)
                if self.record_hit == 0:
                    self.ema_vocab_hit_SV.copy_(hit)
                elif self.record_hit < 100:
                    self.ema_vocab_hit_SV.mul_(0.9).add_(hit.mul(0.1))
                else:
                    self.ema_vocab_hit_SV.mul_(0.99).add_(hit.mul(0.01))
                self.record_hit += 1
            self.last_z = torch.cat(zs)
        usage = [(h > 0).float().mean().item() for h in hits]
        f_hat = (f_hat.detach() - f_ng) + f  # straight-through to the encoder
        return f_hat, loss, usage

    # ----- tokenizer (spec 7.3, VARSR variant: no Phi at the last scale) -----
    @torch.no_grad()
    def f_to_idx(self, f: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """f [B, Cv, G, G] -> ([idx_si [B, pn^2]] * K, R_before_last [B, G*G, Cv])."""
        f = f.float()
        B, C, H, W = f.shape
        K = len(self.patch_nums)
        if self.patch_nums[-1] != H or H != W:
            raise ValueError(f"latent {H}x{W} does not match the last scale {self.patch_nums[-1]}")
        R = f.clone()
        idx_list = []
        r_before_last = None
        for si, pn in enumerate(self.patch_nums):
            z = area_down(R, pn) if si != K - 1 else R
            idx = self.nearest(z.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn * pn)
            h = self.embedding(idx).transpose(1, 2).reshape(B, C, pn, pn)
            if si != K - 1:
                h = self.phi(si)(bicubic_up(h, (H, W)))
            else:
                r_before_last = R.clone()
            R = R - h
            idx_list.append(idx)
        return idx_list, r_before_last.permute(0, 2, 3, 1).reshape(B, H * W, C)

    def idx_to_h(self, idx: torch.Tensor, pn: int) -> torch.Tensor:
        """[B, pn^2] -> E[idx] as a [B, Cv, pn, pn] map (row-major tokens)."""
        B = idx.shape[0]
        return self.embedding(idx).transpose(1, 2).reshape(B, self.Cv, pn, pn)

    def accumulate(self, si: int, f_hat: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """f_hat + Phi_sel(si)(bicubic_up(h)) for si < K-1; f_hat + h at the last scale (spec 5.4)."""
        K = len(self.patch_nums)
        G = self.patch_nums[-1]
        if si != K - 1:
            return f_hat + self.phi(si)(bicubic_up(h, G))
        return f_hat + h

    @torch.no_grad()
    def idx_to_var_input(self, idx_list: List[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing inputs (spec 7.4): [B, L - 1, Cv] = concat(in_1 .. in_{K-1})."""
        B = idx_list[0].shape[0]
        G = self.patch_nums[-1]
        f_hat = torch.zeros(B, self.Cv, G, G, dtype=torch.float32, device=idx_list[0].device)
        outs = []
        for si in range(len(self.patch_nums) - 1):
            h = self.idx_to_h(idx_list[si], self.patch_nums[si])
            f_hat = self.accumulate(si, f_hat, h)
            pn_next = self.patch_nums[si + 1]
            outs.append(area_down(f_hat, pn_next).reshape(B, self.Cv, -1).transpose(1, 2))
        return torch.cat(outs, dim=1)


class VQVAE(nn.Module):
    """VQVAE(cfg). with_encoder=False builds the inference part only (decoder side + quantizer)."""

    def __init__(self, cfg: ModelConfig, with_encoder: bool = True, beta: float = 0.25, device=None):
        super().__init__()
        self.cfg = cfg
        self.Cv, self.V = cfg.cvae, cfg.vocab
        self.with_encoder = with_encoder
        if with_encoder:
            self.encoder = Encoder(cfg, device)
        self.decoder = Decoder(cfg, device)
        self.quantize = VectorQuantizer(cfg, beta=beta, device=device)
        if with_encoder:
            self.quant_conv = nn.Conv2d(cfg.cvae, cfg.cvae, 3, 1, 1, device=device)
        self.post_quant_conv = nn.Conv2d(cfg.cvae, cfg.cvae, 3, 1, 1, device=device)

    # training forward (stage 1)
    def forward(self, img: torch.Tensor):
        """img [B,3,H,W] in [-1,1] -> (reconstruction pre-clamp, vq_loss, usages)."""
        f_hat, vq_loss, usage = self.quantize(self.img_to_f(img))
        return self.decode(f_hat), vq_loss, usage

    def img_to_f(self, img: torch.Tensor) -> torch.Tensor:
        if not self.with_encoder:
            raise RuntimeError("this VQVAE was built without an encoder (inference-only weights)")
        return self.quant_conv(self.encoder(img))

    @torch.no_grad()
    def img_to_idx(self, img: torch.Tensor):
        return self.quantize.f_to_idx(self.img_to_f(img))

    def f_to_idx(self, f: torch.Tensor):
        return self.quantize.f_to_idx(f)

    def idx_to_var_input(self, idx_list: List[torch.Tensor]) -> torch.Tensor:
        return self.quantize.idx_to_var_input(idx_list)

    def decode(self, f_hat: torch.Tensor, up01: torch.Tensor = None) -> torch.Tensor:
        """Decoder output before the clamp: decoder(post_quant_conv(f_hat)); an LR-conditioned
        decoder (cfg.decoder_lr) also reads base = residual_base(up01)."""
        base = residual_base(up01).to(f_hat.device) if self.cfg.decoder_lr else None
        return self.decoder(self.post_quant_conv(f_hat), base)

    # ----- residual latent (config.latent == "residual"; see ModelConfig) -----
    def encoder_input(self, hr: torch.Tensor, up01: torch.Tensor) -> torch.Tensor:
        """What stage 1 and the tokenizer encode: hr itself (latent "image"), or (hr - base) /
        residual_scale with base = residual_base(up01) (latent "residual")."""
        if not self.cfg.residual:
            return hr
        return (hr.float() - residual_base(up01).to(hr.device)) / self.cfg.residual_scale

    def output(self, f_hat: torch.Tensor, up01: torch.Tensor = None) -> torch.Tensor:
        """The output image in [-1, 1] units before the clamp: decode(f_hat) (latent "image"), or
        base + residual_scale * decode(f_hat) in fp32 (latent "residual", which needs up01)."""
        dec = self.decode(f_hat, up01)
        return compose_residual(self.cfg, dec, up01)

    def f_hat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Spec 2.2 step 1: clamp(decode(f_hat), -1, 1)."""
        return self.decode(f_hat).clamp(-1, 1)

    def idx_to_f_hat(self, idx_list: List[torch.Tensor]) -> torch.Tensor:
        """Inference recurrence (spec 5.4) on given indices, including the last scale."""
        B = idx_list[0].shape[0]
        G = self.cfg.grid
        f_hat = torch.zeros(B, self.Cv, G, G, dtype=torch.float32, device=idx_list[0].device)
        for si, pn in enumerate(self.cfg.patch_nums):
            f_hat = self.quantize.accumulate(si, f_hat, self.quantize.idx_to_h(idx_list[si], pn))
        return f_hat


def vqvae_inference_keys(keys) -> List[str]:
    """The keys inference needs: decoder, post_quant_conv, codebook and the Phi convs."""
    return [
        k for k in keys
        if k.startswith("decoder.") or k.startswith("post_quant_conv.")
        or k == "quantize.embedding.weight" or k.startswith("quantize.quant_resi.")
    ]


def residual_base(up01: torch.Tensor) -> torch.Tensor:
    """base = 2 * up01 - 1 in fp32, up01 the fp32 PIL-bicubic upsampled LR in [0, 1] (unclipped)."""
    return up01.float() * 2.0 - 1.0


def compose_residual(cfg: ModelConfig, dec: torch.Tensor, up01) -> torch.Tensor:
    """dec (decoder output, not clamped) -> output before the clamp; identity for latent "image"."""
    if not cfg.residual:
        return dec
    if up01 is None:
        raise ValueError("a residual-latent model needs the upsampled LR (up01) to form its output")
    return residual_base(up01).to(dec.device) + dec.float() * float(cfg.residual_scale)
