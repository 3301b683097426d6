"""HR/LR pair dataset for x4 SR training on the photos fetched by training/scripts/fetch_data.sh.

Layout: <root>/manifest.json lists the images (file relative to root, sha256, group). The committed
training/avtrain/split.json names the validation images by sha256. Training uses every other
manifest image whose group has no validation member.

Items (label 0 is the "high quality" class of spec 10.1):
    hr     float32 [3, hr_size, hr_size] in [-1, 1]   (uint8 / 127.5 - 1)
    lr     float32 [3, h, w] in [0, 1]                 (lr_u8 / 255), h = w = hr_size // lr_scale
    lr_u8  uint8   [h, w, 3]
    label  0
    name   manifest path of the source image
Bringing the LR back up to the model's input size (spec 10.1: random area / bilinear / bicubic)
is left to the training step.

Train items: image = index % n_images. Each item draws from its own Generator seeded by
(seed, epoch, index), so a run is reproducible whatever the worker count or order. It draws a
scale f, log-uniform in scale_jitter (raised to hr_size / short side if that is larger, so the
crop always fits; f > 1 upsamples a small image), a crop window, an h-flip (p = 0.5), the
degradation type for 'mixed', and the degradation seed. The crop comes from PIL Lanczos resize
of the window box, or a plain crop when f == 1. Call set_epoch() before each epoch. With
DataLoader persistent_workers=True the workers keep their own copy and miss the change.

Val items: one center crop per validation image at f = geometric mean of scale_jitter (same
clamp), no flip. The degradation seed depends only on (seed, image sha256), so val LR images never
change. 'mixed' picks the type from that same seed.

Decoded images are cached per dataset instance (PIL, RGB). Call preload() before creating
DataLoader workers so the forked workers share the decoded pixels.
"""

from __future__ import annotations

import hashlib
import json
from io import BytesIO
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from .degrade import DEFAULT_OPTIONS, DegradeOptions, degrade_bicubic, degrade_realesrgan

try:  # Pillow >= 9.1
    _LANCZOS = Image.Resampling.LANCZOS
except AttributeError:  # pragma: no cover - older Pillow
    _LANCZOS = Image.LANCZOS

TRAINING_DIR = Path(__file__).resolve().parents[1]  # training/
REPO_DIR = TRAINING_DIR.parent
DEFAULT_SPLIT_FILE = Path(__file__).resolve().parent / "split.json"
DEGRADE_MODES = ("realesrgan", "bicubic", "mixed")


def resolve_root(root) -> Path:
    """An absolute root, or one relative to the working directory, or else relative to the repository."""
    p = Path(root)
    if p.is_absolute() or p.exists():
        return p
    return REPO_DIR / p


def load_manifest(root) -> List[dict]:
    """The image entries of <root>/manifest.json; FileNotFoundError says how to fetch the data."""
    path = resolve_root(root) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run training/scripts/fetch_data.sh to fetch the training data")
    return json.loads(path.read_text())["images"]


def split_entries(root, split: str, split_file=None) -> List[dict]:
    """Manifest entries of one split.

    'val' entries come in split.json order. 'train' entries are the rest in manifest order, minus
    every group that has a validation member.
    """
    if split not in ("train", "val"):
        raise ValueError(f"Expected 'train' or 'val' for split but received {split!r}")
    entries = load_manifest(root)
    val = json.loads(Path(split_file or DEFAULT_SPLIT_FILE).read_text())["val"]
    by_sha = {e["sha256"]: e for e in entries}
    missing = [v["file"] for v in val if v["sha256"] not in by_sha]
    if missing:
        raise ValueError(
            f"Expected the validation images of split.json in the manifest but these are missing: {missing}"
        )
    if split == "val":
        return [by_sha[v["sha256"]] for v in val]
    val_sha = {v["sha256"] for v in val}
    val_groups = {by_sha[s]["group"] for s in val_sha}
    return [e for e in entries if e["sha256"] not in val_sha and e["group"] not in val_groups]


def _load_rgb(path: Path, sha256: Optional[str]) -> Image.Image:
    raw = path.read_bytes()
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise ValueError(f"{path}: sha256 differs from the manifest; re-run training/scripts/fetch_data.sh")
    with Image.open(BytesIO(raw)) as im:
        im.load()
        # RGBA wallpapers here are fully opaque; gray (L) photos become three equal channels.
        return im.convert("RGB")


def _scale_bounds(short: int, hr_size: int, jitter: Optional[Tuple[float, float]]) -> Tuple[float, float]:
    fmin = hr_size / short
    if jitter is None:
        return max(1.0, fmin), max(1.0, fmin)
    lo, hi = jitter
    return max(lo, fmin), max(hi, fmin)


def crop_resized(im: Image.Image, hr_size: int, f: float, x0: float, y0: float) -> np.ndarray:
    """The hr_size x hr_size patch whose top-left is (x0, y0) in an image scaled by f (uint8 HxWx3).

    Only the source box of side hr_size / f is resampled (Lanczos), never the whole image.
    """
    if f == 1.0:
        x, y = int(x0), int(y0)
        return np.array(im.crop((x, y, x + hr_size, y + hr_size)), dtype=np.uint8)
    # Clamp away float round-off: PIL rejects a box that leaves the image.
    side = min(hr_size / f, im.width, im.height)
    x0, y0 = min(max(x0, 0.0), im.width - side), min(max(y0, 0.0), im.height - side)
    box = (x0, y0, x0 + side, y0 + side)
    return np.array(im.resize((hr_size, hr_size), _LANCZOS, box=box), dtype=np.uint8)


class PairDataset(torch.utils.data.Dataset):
    """(HR crop, synthetic LR) pairs; see the module docstring for the sampling rules.

    Args:
        root: data folder holding manifest.json (default 'training/data', resolved by resolve_root).
        split: 'train' or 'val'.
        hr_size: HR crop side in pixels; must be a multiple of lr_scale.
        lr_scale: downscale factor (4).
        degrade: 'realesrgan', 'bicubic' (PIL bicubic) or 'mixed' (bicubic with p = bicubic_prob).
        seed: base seed of every random draw.
        length: items per epoch; default the number of images of the split.
        scale_jitter: (lo, hi) range of the HR rescale factor, or None for native resolution.
        hflip: random horizontal flips in train.
        bicubic_prob: probability of the bicubic LR in 'mixed'.
        degrade_options: Real-ESRGAN settings (degrade.DegradeOptions).
        split_file: split.json path (default: the committed training/avtrain/split.json).
    """

    def __init__(
        self,
        root="training/data",
        split: str = "train",
        hr_size: int = 256,
        lr_scale: int = 4,
        degrade: str = "realesrgan",
        seed: int = 0,
        length: Optional[int] = None,
        scale_jitter: Optional[Sequence[float]] = (0.5, 1.0),
        hflip: bool = True,
        bicubic_prob: float = 0.5,
        degrade_options: DegradeOptions = DEFAULT_OPTIONS,
        split_file=None,
    ):
        if degrade not in DEGRADE_MODES:
            raise ValueError(f"Expected one of {DEGRADE_MODES} for degrade but received {degrade!r}")
        if hr_size <= 0 or lr_scale <= 0 or hr_size % lr_scale != 0:
            raise ValueError(f"Expected hr_size a positive multiple of lr_scale={lr_scale} for hr_size "
                             f"but received {hr_size}")
        if scale_jitter is not None and not (0 < scale_jitter[0] <= scale_jitter[1]):
            raise ValueError(f"Expected 0 < lo <= hi for scale_jitter but received {scale_jitter}")
        if length is not None and length <= 0:
            raise ValueError(f"Expected a positive int or None for length but received {length}")
        self.root = resolve_root(root)
        self.split = split
        self.entries = split_entries(self.root, split, split_file)
        if not self.entries:
            raise ValueError(f"Expected at least one image in split {split!r} but received none")
        self.hr_size, self.lr_scale = hr_size, lr_scale
        self.degrade, self.seed = degrade, int(seed)
        self.length = length
        self.scale_jitter = None if scale_jitter is None else (float(scale_jitter[0]), float(scale_jitter[1]))
        self.hflip, self.bicubic_prob = hflip, float(bicubic_prob)
        self.degrade_options = degrade_options
        self.epoch = 0
        self._cache: Dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Make train items depend on the epoch (same epoch, same items)."""
        self.epoch = int(epoch)

    def preload(self) -> "PairDataset":
        """Decode every image of the split now (it is lazy otherwise)."""
        for i in range(len(self.entries)):
            self.image(i)
        return self

    def image(self, i: int) -> Image.Image:
        """Decoded RGB image of entry i (cached)."""
        if i not in self._cache:
            e = self.entries[i]
            self._cache[i] = _load_rgb(self.root / e["file"], e.get("sha256"))
        return self._cache[i]

    def sample_params(self, index: int) -> dict:
        """The crop / flip / degradation choices of item `index` (no pixels touched)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        i = index % len(self.entries)
        e = self.entries[i]
        w, h = e["width"], e["height"]
        lo, hi = _scale_bounds(min(w, h), self.hr_size, self.scale_jitter)
        if self.split == "train":
            rng = np.random.default_rng([self.seed, self.epoch, index])
            f = lo if lo == hi else math.exp(rng.uniform(math.log(lo), math.log(hi)))
            side = self.hr_size / f
            if f == 1.0:
                x0, y0 = float(rng.integers(0, w - self.hr_size + 1)), float(rng.integers(0, h - self.hr_size + 1))
            else:
                x0, y0 = float(rng.uniform(0, w - side)), float(rng.uniform(0, h - side))
            flip = bool(self.hflip and rng.uniform() < 0.5)
        else:
            # Val seed: from the image content, not its position in the list.
            rng = np.random.default_rng([self.seed, int(e["sha256"][:16], 16)])
            f = math.sqrt(lo * hi)
            side = self.hr_size / f
            if f == 1.0:
                x0, y0 = float((w - self.hr_size) // 2), float((h - self.hr_size) // 2)
            else:
                x0, y0 = (w - side) / 2.0, (h - side) / 2.0
            flip = False
        mode = self.degrade
        if mode == "mixed":
            mode = "bicubic" if rng.uniform() < self.bicubic_prob else "realesrgan"
        return {"entry": i, "scale": f, "x0": x0, "y0": y0, "flip": flip, "degrade": mode,
                "degrade_seed": int(rng.integers(0, 2**63 - 1))}

    def hr_u8(self, index: int) -> np.ndarray:
        """The uint8 HR crop of item `index` (after flip)."""
        p = self.sample_params(index)
        return self._crop(p)

    def _crop(self, p: dict) -> np.ndarray:
        hr = crop_resized(self.image(p["entry"]), self.hr_size, p["scale"], p["x0"], p["y0"])
        return np.ascontiguousarray(hr[:, ::-1]) if p["flip"] else hr

    def __getitem__(self, index: int) -> dict:
        p = self.sample_params(index)
        hr = self._crop(p)
        if p["degrade"] == "bicubic":
            lr = degrade_bicubic(hr, self.lr_scale)
        else:
            lr = degrade_realesrgan(hr, p["degrade_seed"], self.lr_scale, self.degrade_options)
        return {
            "hr": torch.from_numpy(hr.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0),
            "lr": torch.from_numpy(lr.transpose(2, 0, 1).astype(np.float32) / 255.0),
            "lr_u8": torch.from_numpy(lr),
            "label": 0,
            "name": self.entries[p["entry"]]["file"],
        }
