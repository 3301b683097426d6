"""Seeded LR synthesis for x4 SR training: Real-ESRGAN two-stage degradation and clean bicubic.

Reference: Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic
Data" (ICCVW 2021). The defaults follow xinntao/Real-ESRGAN options/train_realesrgan_x4plus.yml. The
kernel sampling follows RealESRGANDataset and basicsr/data/degradations.py. The pipeline order follows
RealESRGANModel.feed_data.

Differences from the reference, all deliberate:
- Runs on one image in numpy (float64) on the CPU. No OpenCV and no GPU. Blur is an FFT
  correlation with reflect padding, the same result as basicsr filter2D but independent of thread
  count. Resizes use torch.nn.functional.interpolate (area / bilinear / bicubic, no antialias) as
  the reference does.
- JPEG goes through PIL (libjpeg, 4:2:0 chroma) with an integer quality drawn uniformly from
  [30, 95]. The reference uses DiffJPEG with a float quality.
- Every random draw comes from one numpy Generator built from the caller's seed, in a fixed
  order. So the same (image, seed) gives the same LR bytes on any machine with the same
  numpy / torch / libjpeg.
- The ground-truth USM sharpening of Real-ESRGAN is not applied; the HR is left as it is.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SeedLike = Union[int, Sequence[int], np.random.SeedSequence, np.random.Generator]

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")

try:  # Pillow >= 9.1
    _BICUBIC = Image.Resampling.BICUBIC
except AttributeError:  # pragma: no cover - older Pillow
    _BICUBIC = Image.BICUBIC


@dataclass(frozen=True)
class DegradeOptions:
    """Real-ESRGAN x4plus degradation settings (ranges are inclusive [lo, hi])."""

    # kernels (RealESRGANDataset)
    blur_kernel_size: int = 21  # every kernel is zero-padded to this size
    kernel_range: Tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    kernel_prob: Tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # order of KERNEL_TYPES
    sinc_prob: float = 0.1
    blur_sigma: Tuple[float, float] = (0.2, 3.0)
    betag_range: Tuple[float, float] = (0.5, 4.0)
    betap_range: Tuple[float, float] = (1.0, 2.0)
    kernel_prob2: Tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: Tuple[float, float] = (0.2, 1.5)
    betag_range2: Tuple[float, float] = (0.5, 4.0)
    betap_range2: Tuple[float, float] = (1.0, 2.0)
    final_sinc_prob: float = 0.8
    # first stage (RealESRGANModel)
    resize_prob: Tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: Tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: Tuple[float, float] = (1.0, 30.0)  # sigma in 8-bit levels
    poisson_scale_range: Tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: Tuple[int, int] = (30, 95)
    # second stage: smaller ranges, blur only with probability second_blur_prob
    second_blur_prob: float = 0.8
    resize_prob2: Tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: Tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: Tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: Tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: Tuple[int, int] = (30, 95)


DEFAULT_OPTIONS = DegradeOptions()


def make_rng(seed: SeedLike) -> np.random.Generator:
    """A Generator from an int, a sequence of ints, a SeedSequence, or an existing Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------
# Kernels. All are float64, square, odd-sized, centrally symmetric and sum to 1.


def _kernel_grid(kernel_size: int) -> np.ndarray:
    """[k, k, 2] of (x, y) offsets from the centre, x along columns."""
    ax = np.arange(-(kernel_size // 2), kernel_size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def _inverse_sigma(sigma_x: float, sigma_y: float, rotation: float) -> np.ndarray:
    """Inverse of U diag(sx^2, sy^2) U^T, with U the rotation by `rotation` radians."""
    d = np.diag([sigma_x**2, sigma_y**2])
    u = np.array([[math.cos(rotation), -math.sin(rotation)], [math.sin(rotation), math.cos(rotation)]])
    return np.linalg.inv(u @ d @ u.T)


def _quadratic_form(kernel_size: int, sigma_x: float, sigma_y: float, rotation: float) -> np.ndarray:
    grid = _kernel_grid(kernel_size)
    return np.sum((grid @ _inverse_sigma(sigma_x, sigma_y, rotation)) * grid, axis=-1)


def bivariate_gaussian(kernel_size: int, sigma_x: float, sigma_y: float, rotation: float) -> np.ndarray:
    """exp(-q/2) with q = x^T Sigma^-1 x; isotropic when sigma_x == sigma_y and rotation == 0."""
    k = np.exp(-0.5 * _quadratic_form(kernel_size, sigma_x, sigma_y, rotation))
    return k / k.sum()


def bivariate_generalized_gaussian(
    kernel_size: int, sigma_x: float, sigma_y: float, rotation: float, beta: float
) -> np.ndarray:
    """exp(-0.5 * q^beta), as basicsr writes it (beta=1 is the Gaussian); q = x^T Sigma^-1 x."""
    k = np.exp(-0.5 * np.power(_quadratic_form(kernel_size, sigma_x, sigma_y, rotation), beta))
    return k / k.sum()


def bivariate_plateau(kernel_size: int, sigma_x: float, sigma_y: float, rotation: float, beta: float) -> np.ndarray:
    """1 / (1 + q^beta): flat top, heavy tails."""
    k = 1.0 / (np.power(_quadratic_form(kernel_size, sigma_x, sigma_y, rotation), beta) + 1.0)
    return k / k.sum()


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """Bessel J1 from J1(x) = 1/(2 pi) * int_0^{2 pi} cos(t - x sin t) dt.

    The integrand is smooth and periodic, so the trapezoid rule on N points converges geometrically.
    N = 256 gives about 1e-15 absolute error for |x| < 100. That covers every sinc kernel here:
    cutoff <= pi and radius <= 15.
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.arange(256, dtype=np.float64) * (2.0 * math.pi / 256)
    return np.cos(t - x[..., None] * np.sin(t)).mean(axis=-1)


def circular_lowpass_kernel(cutoff: float, kernel_size: int, pad_to: int = 0) -> np.ndarray:
    """2-D sinc (ideal circular low-pass, radius `cutoff` rad/pixel) on a kernel_size grid.

    Value cutoff * J1(cutoff r) / (2 pi r), with the r -> 0 limit cutoff^2 / (4 pi) at the centre.
    The kernel is normalised to sum 1 and zero-padded to pad_to when that is larger.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"Expected an odd kernel_size but received {kernel_size}")
    grid = _kernel_grid(kernel_size)
    r = np.sqrt(np.sum(grid**2, axis=-1))
    safe = np.where(r == 0, 1.0, r)
    k = cutoff * bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    k[r == 0] = cutoff**2 / (4 * math.pi)
    k = k / k.sum()
    if pad_to > kernel_size:
        p = (pad_to - kernel_size) // 2
        k = np.pad(k, ((p, p), (p, p)))
    return k


def _beta(rng: np.random.Generator, beta_range: Tuple[float, float]) -> float:
    # As basicsr: half the time below 1, half above, so both shapes are sampled equally.
    if rng.uniform() < 0.5:
        return float(rng.uniform(beta_range[0], 1.0))
    return float(rng.uniform(1.0, beta_range[1]))


def random_mixed_kernel(
    rng: np.random.Generator,
    kernel_size: int,
    kernel_prob: Sequence[float],
    sigma_range: Tuple[float, float],
    betag_range: Tuple[float, float],
    betap_range: Tuple[float, float],
) -> Tuple[np.ndarray, dict]:
    """One kernel of a random type (KERNEL_TYPES, probabilities kernel_prob). Rotation is U(-pi, pi)."""
    p = np.asarray(kernel_prob, dtype=np.float64)
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=p / p.sum()))]
    sigma_x = float(rng.uniform(*sigma_range))
    if "aniso" not in kind:
        sigma_y, rotation = sigma_x, 0.0
    else:
        sigma_y = float(rng.uniform(*sigma_range))
        rotation = float(rng.uniform(-math.pi, math.pi))
    info = {"type": kind, "size": kernel_size, "sigma_x": sigma_x, "sigma_y": sigma_y, "rotation": rotation}
    if kind.startswith("generalized"):
        info["beta"] = _beta(rng, betag_range)
        k = bivariate_generalized_gaussian(kernel_size, sigma_x, sigma_y, rotation, info["beta"])
    elif kind.startswith("plateau"):
        info["beta"] = _beta(rng, betap_range)
        k = bivariate_plateau(kernel_size, sigma_x, sigma_y, rotation, info["beta"])
    else:
        k = bivariate_gaussian(kernel_size, sigma_x, sigma_y, rotation)
    return k, info


def _blur_kernel(
    rng: np.random.Generator,
    opt: DegradeOptions,
    kernel_prob: Sequence[float],
    sinc_prob: float,
    sigma: Tuple[float, float],
    betag: Tuple[float, float],
    betap: Tuple[float, float],
) -> Tuple[np.ndarray, dict]:
    ks = int(rng.choice(opt.kernel_range))
    if rng.uniform() < sinc_prob:
        # Small sinc kernels use a higher minimum cutoff, as in RealESRGANDataset.
        cutoff = float(rng.uniform(math.pi / 3, math.pi) if ks < 13 else rng.uniform(math.pi / 5, math.pi))
        k, info = circular_lowpass_kernel(cutoff, ks), {"type": "sinc", "size": ks, "cutoff": cutoff}
    else:
        k, info = random_mixed_kernel(rng, ks, kernel_prob, sigma, betag, betap)
    p = (opt.blur_kernel_size - ks) // 2
    return np.pad(k, ((p, p), (p, p))), info


def sample_kernels(rng: np.random.Generator, opt: DegradeOptions = DEFAULT_OPTIONS):
    """(kernel1, kernel2, sinc_kernel or None, info), drawn in RealESRGANDataset order."""
    k1, i1 = _blur_kernel(rng, opt, opt.kernel_prob, opt.sinc_prob, opt.blur_sigma, opt.betag_range, opt.betap_range)
    k2, i2 = _blur_kernel(
        rng, opt, opt.kernel_prob2, opt.sinc_prob2, opt.blur_sigma2, opt.betag_range2, opt.betap_range2
    )
    if rng.uniform() < opt.final_sinc_prob:
        ks = int(rng.choice(opt.kernel_range))
        cutoff = float(rng.uniform(math.pi / 3, math.pi))
        sinc = circular_lowpass_kernel(cutoff, ks, pad_to=opt.blur_kernel_size)
        i3 = {"type": "sinc", "size": ks, "cutoff": cutoff}
    else:
        sinc, i3 = None, {"type": "pulse"}  # identity: the reference's pulse kernel
    return k1, k2, sinc, {"kernel1": i1, "kernel2": i2, "final_sinc": i3}


# ----------------------------------------------------------------------------------------------
# Image operations on float64 HxWx3 arrays in [0, 1] (values may leave [0, 1] between clamps).


def _reflect_index(n: int, pad: int) -> np.ndarray:
    """Indices of a reflect-padded axis (edge not repeated, like torch 'reflect').

    Pads wider than the axis keep reflecting, so tiny images still work.
    """
    idx = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m >= n, period - m, m)


def filter2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate each channel with an odd square kernel under reflect padding (basicsr filter2D).

    Computed as a linear (not circular) FFT convolution of the padded image with the flipped kernel,
    keeping the 'valid' part. The output has the input's size.
    """
    k = kernel.shape[0]
    p = k // 2
    h, w = img.shape[:2]
    padded = img[_reflect_index(h, p)][:, _reflect_index(w, p)]  # [h+2p, w+2p, C]
    s = (h + 2 * p + k - 1, w + 2 * p + k - 1)
    fi = np.fft.rfft2(padded, s=s, axes=(0, 1))
    fk = np.fft.rfft2(kernel[::-1, ::-1], s=s)
    full = np.fft.irfft2(fi * fk[:, :, None], s=s, axes=(0, 1))
    return full[k - 1 : k - 1 + h, k - 1 : k - 1 + w]


def resize(img: np.ndarray, mode: str, size: Tuple[int, int] = None, scale_factor: float = None) -> np.ndarray:
    """torch F.interpolate (align_corners=False, no antialias) on an HxWxC float64 array.

    Give exactly one of size=(h, w) or scale_factor. As in the reference, stage 1 passes a
    scale factor and later stages pass a size.
    """
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]  # [1, C, H, W] float64
    kw = {} if mode == "area" else {"align_corners": False}
    if size is not None:
        out = F.interpolate(t, size=(max(1, size[0]), max(1, size[1])), mode=mode, **kw)
    else:
        out = F.interpolate(t, scale_factor=scale_factor, mode=mode, **kw)
    return out[0].numpy().transpose(1, 2, 0)


def _to_gray(img: np.ndarray) -> np.ndarray:
    """BT.601 luma (the weights of torchvision rgb_to_grayscale / cv2 BGR2GRAY), [H, W, 1]."""
    return (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2])[..., None]


def add_gaussian_noise(img: np.ndarray, rng: np.random.Generator, sigma_range, gray_prob: float):
    """Additive N(0, sigma/255), sigma ~ U(sigma_range) in 8-bit levels; one plane for all channels if gray."""
    sigma = float(rng.uniform(*sigma_range))
    gray = bool(rng.uniform() < gray_prob)
    shape = img.shape[:2] + ((1,) if gray else (img.shape[2],))
    noise = rng.standard_normal(shape) * (sigma / 255.0)
    return np.clip(img + noise, 0.0, 1.0), {"type": "gaussian", "sigma": sigma, "gray": gray}


def add_poisson_noise(img: np.ndarray, rng: np.random.Generator, scale_range, gray_prob: float):
    """Shot noise as in basicsr generate_poisson_noise: Poisson(img * vals) / vals - img, times scale.

    vals = 2^ceil(log2(number of distinct 8-bit levels)), computed on the gray image if gray.
    """
    scale = float(rng.uniform(*scale_range))
    gray = bool(rng.uniform() < gray_prob)
    src = _to_gray(img) if gray else img
    q = np.clip(np.round(src * 255.0), 0, 255) / 255.0
    vals = 2 ** math.ceil(math.log2(len(np.unique(q))))
    noise = rng.poisson(q * vals) / float(vals) - q
    return np.clip(img + noise * scale, 0.0, 1.0), {"type": "poisson", "scale": scale, "gray": gray}


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1], round half to even at *255, uint8 (the reference's final clamp-and-round)."""
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode to JPEG with PIL at `quality` (4:2:0) and decode again. Input is clamped to [0, 1]."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img), "RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def _noise(img, rng, gaussian_prob, noise_range, poisson_range, gray_prob):
    if rng.uniform() < gaussian_prob:
        return add_gaussian_noise(img, rng, noise_range, gray_prob)
    return add_poisson_noise(img, rng, poisson_range, gray_prob)


def _resize_scale(rng: np.random.Generator, prob, rng_range) -> Tuple[str, float]:
    kind = ("up", "down", "keep")[int(rng.choice(3, p=np.asarray(prob) / np.sum(prob)))]
    if kind == "up":
        return kind, float(rng.uniform(1.0, rng_range[1]))
    if kind == "down":
        return kind, float(rng.uniform(rng_range[0], 1.0))
    return kind, 1.0


def _check_hr(hr: np.ndarray, scale: int) -> None:
    if not (isinstance(hr, np.ndarray) and hr.dtype == np.uint8 and hr.ndim == 3 and hr.shape[2] == 3):
        raise ValueError(f"Expected a uint8 HxWx3 array for hr but received {getattr(hr, 'dtype', type(hr))} "
                         f"{getattr(hr, 'shape', '')}")
    if hr.shape[0] < scale or hr.shape[1] < scale:
        raise ValueError(f"Expected hr of at least {scale}x{scale} for hr but received {hr.shape[:2]}")


def degrade_realesrgan(
    hr: np.ndarray, seed: SeedLike, scale: int = 4, opt: DegradeOptions = DEFAULT_OPTIONS, return_info: bool = False
):
    """Real-ESRGAN two-stage degradation of a uint8 HxWx3 image to uint8 (H//scale)x(W//scale)x3.

    Stage 1: blur (kernel1) -> random resize (up/down/keep; area/bilinear/bicubic) -> Gaussian or
    Poisson noise (colour or gray) -> JPEG. Stage 2: blur (kernel2, p=second_blur_prob) -> random
    resize relative to the LR size -> noise -> in random order either [resize to LR + final sinc]
    then JPEG, or JPEG then [resize to LR + final sinc]. The final sinc is a pulse with
    probability 1 - final_sinc_prob. With return_info=True it returns (lr, info), where info
    records every drawn parameter.
    """
    _check_hr(hr, scale)
    rng = make_rng(seed)
    ori_h, ori_w = hr.shape[:2]
    out_h, out_w = ori_h // scale, ori_w // scale
    k1, k2, sinc, info = sample_kernels(rng, opt)
    img = hr.astype(np.float64) / 255.0

    # ---- first degradation
    img = filter2d(img, k1)
    kind, s = _resize_scale(rng, opt.resize_prob, opt.resize_range)
    mode = RESIZE_MODES[int(rng.integers(3))]
    img = resize(img, mode, scale_factor=s)
    info["resize1"] = {"kind": kind, "scale": s, "mode": mode, "size": img.shape[:2]}
    img, info["noise1"] = _noise(img, rng, opt.gaussian_noise_prob, opt.noise_range, opt.poisson_scale_range,
                                 opt.gray_noise_prob)
    q = int(rng.integers(opt.jpeg_range[0], opt.jpeg_range[1] + 1))
    img = jpeg(img, q)
    info["jpeg1"] = q

    # ---- second degradation
    info["blur2"] = bool(rng.uniform() < opt.second_blur_prob)
    if info["blur2"]:
        img = filter2d(img, k2)
    kind, s = _resize_scale(rng, opt.resize_prob2, opt.resize_range2)
    mode = RESIZE_MODES[int(rng.integers(3))]
    img = resize(img, mode, size=(int(ori_h / scale * s), int(ori_w / scale * s)))
    info["resize2"] = {"kind": kind, "scale": s, "mode": mode, "size": img.shape[:2]}
    img, info["noise2"] = _noise(img, rng, opt.gaussian_noise_prob2, opt.noise_range2, opt.poisson_scale_range2,
                                 opt.gray_noise_prob2)

    # ---- final resize + sinc and JPEG, in random order
    sinc_first = bool(rng.uniform() < 0.5)
    mode = RESIZE_MODES[int(rng.integers(3))]
    q = int(rng.integers(opt.jpeg_range2[0], opt.jpeg_range2[1] + 1))
    info.update(final_order="resize_sinc,jpeg" if sinc_first else "jpeg,resize_sinc", final_mode=mode, jpeg2=q)
    if not sinc_first:
        img = jpeg(img, q)
    img = resize(img, mode, size=(out_h, out_w))
    if sinc is not None:
        img = filter2d(img, sinc)
    if sinc_first:
        img = jpeg(img, q)
    lr = to_uint8(img)
    return (lr, info) if return_info else lr


def degrade_bicubic(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    """Clean LR: PIL bicubic (a = -0.5, antialiased) downscale to (H//scale, W//scale). Deterministic."""
    _check_hr(hr, scale)
    h, w = hr.shape[:2]
    return np.array(Image.fromarray(hr, "RGB").resize((w // scale, h // scale), _BICUBIC), dtype=np.uint8)


def degrade(hr: np.ndarray, mode: str, seed: SeedLike, scale: int = 4, opt: DegradeOptions = DEFAULT_OPTIONS):
    """Dispatch: mode 'realesrgan' (seeded) or 'bicubic' (seed unused). Returns uint8 LR."""
    if mode == "realesrgan":
        return degrade_realesrgan(hr, seed, scale, opt)
    if mode == "bicubic":
        return degrade_bicubic(hr, scale)
    raise ValueError(f"Expected 'realesrgan' or 'bicubic' for mode but received {mode!r}")
