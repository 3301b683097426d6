import numpy as np
import torch

from avtrain.postprocess import adain_fix, to_uint8, wavelet_blur, wavelet_fix, wavelet_split


def test_to_uint8_clamps_and_rounds_half_up():
    dec = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0, 2 * (0.5 / 255) - 1]).view(1, 1, 1, 6).repeat(1, 3, 1, 1)
    out = to_uint8(dec)
    assert out.dtype == torch.uint8 and out.shape == (1, 1, 6, 3)
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 1]


def test_adain_matches_formula_with_unbiased_variance_and_truncation():
    rng = np.random.default_rng(0)
    sr = torch.from_numpy(rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    src = torch.from_numpy(rng.uniform(0.2, 0.7, (2, 3, 16, 16)).astype(np.float32))
    out = adain_fix(sr, src)
    x = sr.permute(0, 3, 1, 2).double() / 255
    s = src.double()
    n = 16 * 16
    ref = torch.empty_like(x)
    for b in range(2):
        for c in range(3):
            xm, sm = x[b, c].mean(), s[b, c].mean()
            xv = ((x[b, c] - xm) ** 2).sum() / (n - 1)
            sv = ((s[b, c] - sm) ** 2).sum() / (n - 1)
            ref[b, c] = (x[b, c] - xm) / (xv + 1e-5).sqrt() * (sv + 1e-5).sqrt() + sm
    ref = torch.floor(ref.clamp(0, 1) * 255).permute(0, 2, 3, 1)
    assert (out.double() - ref).abs().max() <= 1  # float order may move exact integers by one
    assert (out.double() == ref).float().mean() > 0.99
    # statistics are transferred: output channel means follow the source
    assert torch.allclose(out.permute(0, 3, 1, 2).double().mean((2, 3)) / 255, s.mean((2, 3)), atol=0.01)


def _blur_loops(x: np.ndarray, r: int) -> np.ndarray:
    """Plain-loop dilated [1 2 1]^2/16 blur of one [H, W] plane with clamped (replicate) indices."""
    H, W = x.shape
    w = [1.0, 2.0, 1.0]
    out = np.zeros_like(x, dtype=np.float64)
    for y in range(H):
        for xx in range(W):
            acc = 0.0
            for dy in range(3):
                for dx in range(3):
                    yy = min(H - 1, max(0, y + (dy - 1) * r))
                    xc = min(W - 1, max(0, xx + (dx - 1) * r))
                    acc += w[dy] * w[dx] / 16.0 * x[yy, xc]
            out[y, xx] = acc
    return out


def test_wavelet_blur_is_dilated_binomial_with_replicate_padding():
    rng = np.random.default_rng(1)
    x = rng.random((1, 2, 13, 11)).astype(np.float32)
    for r in (1, 2, 4, 16):
        got = wavelet_blur(torch.from_numpy(x), r).numpy()
        for c in range(2):
            np.testing.assert_allclose(got[0, c], _blur_loops(x[0, c].astype(np.float64), r), atol=2e-6)


def test_wavelet_split_sums_back_and_fix_takes_low_band_from_source():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.random((1, 3, 37, 37)).astype(np.float32))
    high, low = wavelet_split(x)
    torch.testing.assert_close(high + low, x, atol=1e-5, rtol=0)
    sr = torch.from_numpy(rng.integers(0, 256, (1, 37, 37, 3), dtype=np.uint8))
    src = torch.from_numpy(rng.random((1, 3, 37, 37)).astype(np.float32))
    out = wavelet_fix(sr, src)
    assert out.dtype == torch.uint8 and out.shape == sr.shape
    # the source's own image comes back (up to truncation) when the output equals it
    same = wavelet_fix((src.permute(0, 2, 3, 1) * 255).round().to(torch.uint8), src)
    assert (same.int() - (src.permute(0, 2, 3, 1) * 255).round().int()).abs().max() <= 1
    # a constant shift of the output's colours is removed: only its high bands survive
    shifted = wavelet_fix((sr.int() // 2 + 100).to(torch.uint8), src)
    base = wavelet_fix((sr.int() // 2).to(torch.uint8), src)
    assert (shifted.int() - base.int()).abs().max() <= 1
