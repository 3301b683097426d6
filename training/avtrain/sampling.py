"""The project's sampler: exactly the semantics of av_sample_params (native/core/ops.h), spec 5.2/5.3.

Per image b and output position l of scale `scale`, over the V logits (all fp32):

1. CFG mix (cfg on): G = (1 + t) * Z[b] - t * Z[B + b], with t an fp32 scalar and (1 + t)
   evaluated in fp32. Without CFG, G = Z.
2. top_k == 1: idx = argmax G, lowest index among ties, no random number drawn. Done.
3. top-k (k > 0): thr = k-th largest value (counting ties); entries < thr become -inf, so
   ties at thr survive.
4. top-p (0 < p < 1): sort the survivors ascending by (value, index) (a stable sort), softmax
   them (fp32, max-subtracted), running sum in that order (fp32, sequential); every entry whose
   running sum is <= 1 - p (fp32) becomes -inf. The largest entry is always kept.
5. probs = softmax(G) over the natural index order: m = max, e_v = exp(G_v - m) (0 for -inf),
   s = sequential fp32 sum of e, p_v = e_v / s. Prefix sums c_v are sequential fp32 sums of p.
6. u: Philox4x32-10 with key = (seed & 0xffffffff, seed >> 32) and counter
   = (image_key[b], scale, l, 0); x = first output word; u = (x >> 8) * 2^-24 in [0, 1).
   idx = the smallest v with c_v > u; if there is none (rounding), the last v with p_v > 0.

Philox4x32-10 is implemented in numpy uint64 arithmetic and checked against the Random123
known-answer vectors in tests/test_sampling.py.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint64(0x9E3779B9)
PHILOX_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox4x32 with 10 rounds. counter [..., 4] and key [..., 2] uint32 -> [..., 4] uint32."""
    ctr = np.asarray(counter, dtype=np.uint64) & _MASK32
    k = np.asarray(key, dtype=np.uint64) & _MASK32
    shape = np.broadcast_shapes(ctr.shape[:-1], k.shape[:-1])
    ctr = np.broadcast_to(ctr, shape + (4,))
    k = np.broadcast_to(k, shape + (2,))
    c0, c1, c2, c3 = (ctr[..., i].copy() for i in range(4))
    k0, k1 = k[..., 0].copy(), k[..., 1].copy()
    for r in range(10):
        if r > 0:
            k0 = (k0 + PHILOX_W0) & _MASK32
            k1 = (k1 + PHILOX_W1) & _MASK32
        p0 = PHILOX_M0 * c0  # < 2^64, exact in uint64
        p1 = PHILOX_M1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def philox_uniform(seed: int, image_key: np.ndarray, scale: int, position: np.ndarray) -> np.ndarray:
    """u in [0, 1) as float64 (exactly representable in fp32) per (image_key, position)."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint64)
    ik, pos = np.broadcast_arrays(np.asarray(image_key, dtype=np.int64), np.asarray(position, dtype=np.int64))
    ctr = np.stack(
        [ik.astype(np.uint64) & _MASK32, np.full(ik.shape, scale, dtype=np.uint64),
         pos.astype(np.uint64) & _MASK32, np.zeros(ik.shape, dtype=np.uint64)],
        axis=-1,
    )
    x = philox4x32_10(ctr, key)[..., 0].astype(np.uint64)
    return (x >> np.uint64(8)).astype(np.float64) * (2.0 ** -24)


def cfg_mix(Z: torch.Tensor, B: int, t: float) -> torch.Tensor:
    """G = (1 + t) Z[:B] - t Z[B:], fp32 with t rounded to fp32 first."""
    Zf = Z.float()
    t32 = torch.tensor(np.float32(t), dtype=torch.float32)
    one_t = torch.tensor(np.float32(1.0) + np.float32(t), dtype=torch.float32)
    return one_t * Zf[:B] - t32 * Zf[B:]


def _seq_sum(x: np.ndarray) -> np.float32:
    return np.cumsum(x, dtype=np.float32)[-1]


def _filter_row(g: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    g = g.astype(np.float32, copy=True)
    V = g.shape[0]
    if 0 < top_k < V:
        thr = np.sort(g)[V - top_k]  # k-th largest, ties counted
        g[g < thr] = -np.inf
    if 0.0 < top_p < 1.0:
        order = np.lexsort((np.arange(V), g))  # ascending value, ties by ascending index
        sv = g[order]
        m = sv[-1]
        e = np.exp((sv - m).astype(np.float32)).astype(np.float32)
        e[np.isneginf(sv)] = np.float32(0.0)
        probs = (e / _seq_sum(e)).astype(np.float32)
        cum = np.cumsum(probs, dtype=np.float32)
        remove = cum <= (np.float32(1.0) - np.float32(top_p))
        remove[-1] = False
        g[order[remove]] = -np.inf
    return g


def _pick(g: np.ndarray, u: float) -> int:
    m = np.max(g)
    e = np.exp((g - m).astype(np.float32)).astype(np.float32)
    e[np.isneginf(g)] = np.float32(0.0)
    p = (e / _seq_sum(e)).astype(np.float32)
    c = np.cumsum(p, dtype=np.float32)
    hit = np.nonzero(c > np.float32(u))[0]
    if hit.size:
        return int(hit[0])
    return int(np.nonzero(p > 0)[0][-1])


def sample(
    G: Union[torch.Tensor, np.ndarray],
    top_k: int = 1,
    top_p: float = 0.0,
    seed: int = 0,
    image_keys: Optional[Sequence[int]] = None,
    scale: int = 0,
) -> torch.Tensor:
    """G [B, L, V] fp32 (already CFG-mixed) -> idx [B, L] int64 (module docstring)."""
    g = G.detach().float().cpu().numpy() if isinstance(G, torch.Tensor) else np.asarray(G, np.float32)
    B, L, V = g.shape
    if top_k == 1:
        return torch.from_numpy(np.argmax(g, axis=-1).astype(np.int64))  # argmax returns the first max
    keys = np.arange(B) if image_keys is None else np.asarray(image_keys, dtype=np.int64)
    if keys.shape != (B,):
        raise ValueError(f"image_keys must have shape [{B}], got {keys.shape}")
    u = philox_uniform(seed, keys[:, None], scale, np.arange(L)[None, :])  # [B, L]
    out = np.empty((B, L), dtype=np.int64)
    for b in range(B):
        for pos in range(L):
            out[b, pos] = _pick(_filter_row(g[b, pos], top_k, top_p), u[b, pos])
    return torch.from_numpy(out)


def sample_reference_torch(G: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """The reference's filtering (VAR sample_with_top_k_top_p_) returning the filtered logits.

    Used by tests to check that _filter_row keeps exactly the reference's candidate set when
    there are no exact ties.
    """
    logits = G.float().clone()
    V = logits.shape[-1]
    if 0 < top_k < V:
        thr = logits.topk(top_k, dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits = logits.masked_fill(logits < thr, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        remove_sorted = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(sorted_idx.ndim - 1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, -torch.inf)
    return logits
