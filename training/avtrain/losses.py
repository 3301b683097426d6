"""Training losses: per-position cross-entropy (spec 10.2 T7) and HCC (spec 11.6).

HCC, exactly as spec 11.6:
  P = softmax(logits) (fp32), rhat = P @ E, rhat_k = rhat[:, o_k : o_k + pn_k^2] as [B, Cv, pn_k, pn_k]
  Fh += Phi_sel(k)(bicubic_up(rhat_k, G)) for k < K-1;  Fh += rhat_{K-1} at the last scale
  uhat_k = area_down(Fh, pn_k);  ugt_k = E[argmin_v ||area_down(f, pn_k)_p - E_v||^2] (no grad)
  L_HCC = sum_k mean_{b,p} ||uhat_k[b,:,p] - ugt_k[b,:,p]||^2
The VQVAE (E, Phi) is frozen: gradients reach only the logits.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from .resample import area_down


def ce_loss(logits: torch.Tensor, gt: torch.Tensor, patch_nums, label_smoothing: float = 0.0):
    """logits [B, L, V], gt [B, L] -> (mean CE over positions and batch, per-scale CE list)."""
    B, L, V = logits.shape
    per_pos = F.cross_entropy(
        logits.float().reshape(-1, V), gt.reshape(-1), reduction="none", label_smoothing=label_smoothing
    ).view(B, L)
    per_scale, o = [], 0
    for pn in patch_nums:
        per_scale.append(per_pos[:, o:o + pn * pn].mean())
        o += pn * pn
    return per_pos.mean(), per_scale


@torch.no_grad()
def hcc_targets(f: torch.Tensor, vqvae, patch_nums) -> List[torch.Tensor]:
    """ugt_k [B, Cv, pn_k, pn_k]: nearest codeword to area_down(f, pn_k), k = 0..K-1."""
    q = vqvae.quantize
    E = q.embedding.weight.detach().float()
    out = []
    B, C = f.shape[:2]
    for pn in patch_nums:
        z = area_down(f.float(), pn)
        idx = q.nearest(z.permute(0, 2, 3, 1).reshape(-1, C))
        out.append(E[idx].view(B, pn, pn, C).permute(0, 3, 1, 2))
    return out


def hcc_loss(logits: torch.Tensor, f: torch.Tensor, vqvae, patch_nums, targets=None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """(L_HCC, per-scale terms). logits [B, L, V] (teacher-forced), f [B, Cv, G, G] latent."""
    q = vqvae.quantize
    E = q.embedding.weight.detach().float()
    B = logits.shape[0]
    K = len(patch_nums)
    G = patch_nums[-1]
    Cv = E.shape[1]
    if targets is None:
        targets = hcc_targets(f, vqvae, patch_nums)
    P = torch.softmax(logits.float(), dim=-1)
    rhat = P @ E  # [B, L, Cv]
    Fh = torch.zeros(B, Cv, G, G, dtype=torch.float32, device=logits.device)
    terms = []
    o = 0
    for k, pn in enumerate(patch_nums):
        r = rhat[:, o:o + pn * pn].transpose(1, 2).reshape(B, Cv, pn, pn)
        o += pn * pn
        Fh = q.accumulate(k, Fh, r)
        uhat = area_down(Fh, pn)
        terms.append((uhat - targets[k]).square().sum(dim=1).mean())
    return torch.stack(terms).sum(), terms


def total_loss(logits, gt, f, vqvae, patch_nums, hcc_lambda: float = 1.0,
               label_smoothing: float = 0.0) -> Tuple[torch.Tensor, Dict]:
    """L = CE + lambda * L_HCC (spec 11.6). With lambda == 0, HCC is still measured (no grad)."""
    ce, ce_scales = ce_loss(logits, gt, patch_nums, label_smoothing=label_smoothing)
    if hcc_lambda != 0.0:
        hcc, hcc_terms = hcc_loss(logits, f, vqvae, patch_nums)
        loss = ce + hcc_lambda * hcc
    else:
        with torch.no_grad():
            hcc, hcc_terms = hcc_loss(logits.detach(), f, vqvae, patch_nums)
        loss = ce
    stats = {
        "ce": ce.detach(), "ce_scales": [c.detach() for c in ce_scales],
        "hcc": hcc.detach(), "hcc_scales": [t.detach() for t in hcc_terms],
    }
    return loss, stats
