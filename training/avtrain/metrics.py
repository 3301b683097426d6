"""Image-quality metrics on uint8 RGB images, the usual way of the SR literature (BasicSR).

- Y channel: the BT.601 luma of MATLAB rgb2ycbcr,
  Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B the 8-bit values in [0, 255].
  (That equals 16 + 65.481 r + 128.553 g + 24.966 b with r, g, b in [0, 1].) Y is in [16, 235].
  It is kept in float64 and not rounded, as BasicSR to_y_channel does. MATLAB's uint8 path rounds;
  the difference is a few hundredths of a dB.
- `border` pixels are cropped from every side before any metric, the usual SR convention
  (border = scale).
- PSNR uses peak 255 and returns float('inf') for identical images.
- SSIM is Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  L = 255, and 'valid' filtering (the map shrinks by 5 pixels per side), averaged over the map.
  This is BasicSR's calculate_ssim with test_y_channel=True.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

try:  # Pillow >= 9.1
    _BICUBIC, _LANCZOS = Image.Resampling.BICUBIC, Image.Resampling.LANCZOS
except AttributeError:  # pragma: no cover - older Pillow
    _BICUBIC, _LANCZOS = Image.BICUBIC, Image.LANCZOS


def _check_rgb_u8(name: str, a: np.ndarray) -> None:
    if not (isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3):
        raise ValueError(
            f"Expected a uint8 HxWx3 array for {name} but received "
            f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}"
        )


def rgb_to_y(a: np.ndarray) -> np.ndarray:
    """BT.601 Y in [16, 235] (float64, HxW) of a uint8 HxWx3 RGB image."""
    _check_rgb_u8("a", a)
    x = a.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _crop(y: np.ndarray, border: int) -> np.ndarray:
    if border < 0:
        raise ValueError(f"Expected border >= 0 for border but received {border}")
    if border == 0:
        return y
    if 2 * border >= min(y.shape[:2]):
        raise ValueError(f"Expected an image larger than 2*border={2 * border} for a but received {y.shape[:2]}")
    return y[border:-border, border:-border]


def _pair_y(a: np.ndarray, b: np.ndarray, border: int):
    _check_rgb_u8("a", a)
    _check_rgb_u8("b", b)
    if a.shape != b.shape:
        raise ValueError(f"Expected b of shape {a.shape} for b but received {b.shape}")
    return _crop(rgb_to_y(a), border), _crop(rgb_to_y(b), border)


def psnr_y(a: np.ndarray, b: np.ndarray, border: int = 4) -> float:
    """PSNR in dB on Y: 10 log10(255^2 / MSE) after cropping `border`; inf when MSE is 0."""
    ya, yb = _pair_y(a, b, border)
    mse = float(np.mean((ya - yb) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0**2 / mse)


def gaussian_window_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian (cv2.getGaussianKernel); the 2-D SSIM window is its outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """'valid' correlation with the separable window outer(g, g): rows, then columns."""
    win = np.lib.stride_tricks.sliding_window_view
    x = win(x, g.size, axis=0) @ g  # [H-k+1, W]
    return win(x, g.size, axis=1) @ g  # [H-k+1, W-k+1]


def ssim_y(a: np.ndarray, b: np.ndarray, border: int = 4) -> float:
    """Mean SSIM on Y (Wang et al.; 11x11 Gaussian sigma 1.5, K1 0.01, K2 0.03, L 255, valid map)."""
    ya, yb = _pair_y(a, b, border)
    if min(ya.shape) < 11:
        raise ValueError(f"Expected at least 11x11 pixels after the border crop for a but received {ya.shape}")
    return _ssim(ya, yb)


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = gaussian_window_1d(11, 1.5)
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mu_x**2
    syy = _filter_valid(y * y, g) - mu_y**2
    sxy = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def _mean_sobel_magnitude(y: np.ndarray) -> float:
    # 3x3 Sobel on the interior (no padding): gx = [1 2 1]^T [-1 0 1], gy its transpose.
    gx = (y[:-2, 2:] + 2 * y[1:-1, 2:] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[1:-1, :-2] + y[2:, :-2])
    gy = (y[2:, :-2] + 2 * y[2:, 1:-1] + y[2:, 2:]) - (y[:-2, :-2] + 2 * y[:-2, 1:-1] + y[:-2, 2:])
    return float(np.mean(np.hypot(gx, gy)))


def sharpness(a: np.ndarray, ref: np.ndarray, border: int = 4) -> float:
    """Relative sharpness: mean Sobel gradient magnitude of Y(a) over that of Y(ref).

    Both images are cropped by `border`, then a 3x3 Sobel runs on the interior (no padding), and
    the ratio of mean sqrt(gx^2 + gy^2) is returned. 1 means as much edge energy as the
    reference, < 1 blurrier, > 1 sharper or noisier. The images may differ in size. Raises
    ValueError if ref is flat (zero gradient).
    """
    num = _mean_sobel_magnitude(_crop(rgb_to_y(a), border))
    den = _mean_sobel_magnitude(_crop(rgb_to_y(ref), border))
    if den == 0.0:
        raise ValueError("Expected a reference with nonzero gradient for ref but received a flat image")
    return num / den


def _upscale(lr: np.ndarray, scale: int, resample) -> np.ndarray:
    _check_rgb_u8("lr", lr)
    h, w = lr.shape[:2]
    return np.array(Image.fromarray(lr, "RGB").resize((w * scale, h * scale), resample), dtype=np.uint8)


def bicubic_upscale(lr: np.ndarray, scale: int = 4) -> np.ndarray:
    """Baseline x`scale` upscaling with PIL bicubic (a = -0.5); uint8 HxWx3 in, uint8 out."""
    return _upscale(lr, scale, _BICUBIC)


def lanczos_upscale(lr: np.ndarray, scale: int = 4) -> np.ndarray:
    """Baseline x`scale` upscaling with PIL Lanczos-3; uint8 HxWx3 in, uint8 out."""
    return _upscale(lr, scale, _LANCZOS)
