"""Tests for avtrain.metrics, avtrain.degrade and avtrain.data.

Everything except the last section runs on synthetic images. The last section checks the data
fetched by training/scripts/fetch_data.sh and is skipped, with the reason, when it is absent.
"""

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

TRAINING = Path(__file__).resolve().parents[1]
if str(TRAINING) not in sys.path:
    sys.path.insert(0, str(TRAINING))

from avtrain import degrade as dg  # noqa: E402
from avtrain import metrics as mt  # noqa: E402
from avtrain.data import DEFAULT_SPLIT_FILE, PairDataset, load_manifest, split_entries  # noqa: E402


def smooth_image(h, w, seed):
    """A natural-ish test image: low-frequency colour field plus mild texture, uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(max(2, h // 16), max(2, w // 16), 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float64)
    tex = rng.normal(0, 12, size=(h, w, 1))
    return np.clip(base + tex, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# metrics


def test_y_channel_extremes():
    black = np.zeros((2, 2, 3), np.uint8)
    white = np.full((2, 2, 3), 255, np.uint8)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert np.allclose(mt.rgb_to_y(black), 16.0)
    assert np.allclose(mt.rgb_to_y(white), 235.0)
    assert mt.rgb_to_y(red)[0, 0] == pytest.approx(16.0 + 65.481)


def test_psnr_identical_is_inf():
    a = smooth_image(32, 40, 0)
    assert mt.psnr_y(a, a) == float("inf")
    assert mt.psnr_y(a, a.copy(), border=0) == float("inf")


def test_psnr_known_offset():
    a = np.full((24, 24, 3), 100, np.uint8)
    b = a + np.uint8(10)
    dy = 10 * (65.481 + 128.553 + 24.966) / 255.0  # = 10 * 219 / 255
    expected = 10 * math.log10(255.0**2 / dy**2)
    assert mt.psnr_y(a, b) == pytest.approx(expected, abs=1e-9)
    # an offset on one channel only: Y moves by 65.481 * 20 / 255
    c = a.copy()
    c[..., 0] += 20
    assert mt.psnr_y(a, c) == pytest.approx(20 * math.log10(255.0 / (65.481 * 20 / 255.0)), abs=1e-9)


def test_psnr_border_crop():
    a = smooth_image(32, 32, 1)
    b = a.copy()
    b[:4] = 255 - b[:4]  # differences only in the 4-pixel top border
    assert mt.psnr_y(a, b, border=4) == float("inf")
    assert math.isfinite(mt.psnr_y(a, b, border=0))
    with pytest.raises(ValueError, match="for b"):
        mt.psnr_y(a, b[:, :-1])
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        mt.psnr_y(a.astype(np.float32), b)


def test_ssim_identical_is_one():
    a = smooth_image(48, 48, 2)
    assert mt.ssim_y(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_decreases_with_noise():
    a = smooth_image(64, 64, 3)
    rng = np.random.default_rng(0)
    values = []
    for sigma in (2, 8, 20, 50):
        noisy = np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)
        values.append(mt.ssim_y(a, noisy))
    assert all(x > y for x, y in zip(values, values[1:])), values
    assert values[0] < 1.0 and values[-1] > 0.0


def test_ssim_hand_computed_single_window():
    # 11x11 image, border 0: the valid map is one pixel, the Gaussian-weighted stats of the whole image.
    # a is flat gray 100; b has its centre pixel at 200. With d = 100*219/255 the Y step,
    # w = g5^2 the centre weight: mu_x = Y, mu_y = Y + d w, var_x = 0, var_y = d^2 w (1 - w), cov = 0.
    a = np.full((11, 11, 3), 100, np.uint8)
    b = a.copy()
    b[5, 5] = 200
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = (g[5] / g.sum()) ** 2
    y = 16 + 100 * 219 / 255.0
    d = 100 * 219 / 255.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y, var_y = y, y + d * w, d * d * w * (1 - w)
    expected = (2 * mu_x * mu_y + c1) * c2 / ((mu_x**2 + mu_y**2 + c1) * (var_y + c2))
    assert mt.ssim_y(a, b, border=0) == pytest.approx(expected, rel=1e-10)
    assert expected < 0.9  # the case is not trivially 1


def test_ssim_matches_bruteforce_window():
    a, b = smooth_image(20, 23, 4), smooth_image(20, 23, 5)
    ya, yb = mt.rgb_to_y(a), mt.rgb_to_y(b)
    g = mt.gaussian_window_1d()
    win = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(20 - 10):
        for j in range(23 - 10):
            pa, pb = ya[i : i + 11, j : j + 11], yb[i : i + 11, j : j + 11]
            ma, mb = (win * pa).sum(), (win * pb).sum()
            va, vb = (win * pa * pa).sum() - ma**2, (win * pb * pb).sum() - mb**2
            cov = (win * pa * pb).sum() - ma * mb
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    assert mt.ssim_y(a, b, border=0) == pytest.approx(np.mean(vals), rel=1e-10)


def test_sharpness():
    a = smooth_image(64, 64, 6)
    blurred = np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(2)))
    assert mt.sharpness(a, a) == pytest.approx(1.0)
    assert mt.sharpness(blurred, a) < 0.7
    assert mt.sharpness(a, blurred) > 1.4
    with pytest.raises(ValueError, match="flat"):
        mt.sharpness(a, np.full_like(a, 7))


def test_upscale_baselines():
    lr = smooth_image(16, 20, 7)
    for fn in (mt.bicubic_upscale, mt.lanczos_upscale):
        up = fn(lr)
        assert up.shape == (64, 80, 3) and up.dtype == np.uint8
        flat = fn(np.full((8, 8, 3), 77, np.uint8), scale=2)
        assert flat.shape == (16, 16, 3) and (flat == 77).all()
    assert not np.array_equal(mt.bicubic_upscale(lr), mt.lanczos_upscale(lr))


# ---------------------------------------------------------------------------------------------
# degrade


def test_bessel_j1_reference_values():
    x = np.array([0.0, 1.0, 5.0, 10.0, 30.0])
    ref = np.array([0.0, 0.44005058574493355, -0.3275791375914652, 0.04347274616886144, -0.11875106261662294])
    assert np.allclose(dg.bessel_j1(x), ref, atol=1e-12)


def test_kernels_normalised_and_symmetric():
    ks = [
        dg.bivariate_gaussian(21, 2.0, 2.0, 0.0),
        dg.bivariate_gaussian(15, 3.0, 0.5, 0.7),
        dg.bivariate_generalized_gaussian(13, 1.5, 2.5, -1.0, 0.6),
        dg.bivariate_plateau(21, 2.0, 1.0, 2.0, 1.5),
        dg.circular_lowpass_kernel(math.pi / 3, 13, pad_to=21),
    ]
    for k in ks:
        assert k.sum() == pytest.approx(1.0)
        assert np.allclose(k, k[::-1, ::-1])  # central symmetry: correlation == convolution
    assert ks[4].shape == (21, 21) and (ks[4][:4] == 0).all()
    iso = ks[0]
    assert np.allclose(iso, iso.T)
    # anisotropic, rotated kernel: not symmetric under transpose
    assert not np.allclose(ks[1], ks[1].T)
    # sinc: centre value is cutoff^2 / (4 pi) before normalisation
    raw = dg.circular_lowpass_kernel(math.pi / 2, 7)
    c = math.pi / 2
    r1 = c * dg.bessel_j1(np.array([c * 1.0]))[0] / (2 * math.pi)
    assert raw[3, 4] / raw[3, 3] == pytest.approx(r1 / (c * c / (4 * math.pi)))


def test_sample_kernels_covers_every_type():
    seen, pulses = set(), 0
    for s in range(400):
        _, _, sinc, info = dg.sample_kernels(np.random.default_rng(s))
        seen.add(info["kernel1"]["type"])
        seen.add(info["kernel2"]["type"])
        pulses += sinc is None
    assert seen == set(dg.KERNEL_TYPES) | {"sinc"}
    assert 40 <= pulses <= 120  # final sinc with p = 0.8


def test_filter2d_matches_direct_reflect_correlation():
    rng = np.random.default_rng(0)
    img = rng.random((13, 17, 3))
    k = rng.random((5, 5))
    pad = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="reflect")
    ref = sum(pad[i : i + 13, j : j + 17] * k[i, j] for i in range(5) for j in range(5))
    assert np.allclose(dg.filter2d(img, k), ref, atol=1e-12)
    # a 21x21 kernel on a 6x6 image (pad wider than the image) still works and keeps a constant
    flat = np.full((6, 6, 3), 0.25)
    assert np.allclose(dg.filter2d(flat, dg.bivariate_gaussian(21, 3.0, 3.0, 0.0)), 0.25)


def test_realesrgan_deterministic_and_sized():
    hr = smooth_image(96, 128, 8)
    for seed in (0, 1, 123456789):
        a = dg.degrade_realesrgan(hr, seed)
        b = dg.degrade_realesrgan(hr.copy(), seed)
        assert a.dtype == np.uint8 and a.shape == (24, 32, 3)
        assert a.tobytes() == b.tobytes()
    outs = [dg.degrade_realesrgan(hr, s).tobytes() for s in range(6)]
    assert len(set(outs)) == 6
    # a Generator or a seed sequence is accepted too; a fresh Generator of the same seed matches
    assert dg.degrade_realesrgan(hr, np.random.default_rng(5)).tobytes() == dg.degrade_realesrgan(hr, 5).tobytes()
    assert dg.degrade_realesrgan(hr, [1, 2, 3]).shape == (24, 32, 3)


def test_realesrgan_info_and_degrades():
    hr = smooth_image(128, 128, 9)
    lr, info = dg.degrade_realesrgan(hr, 3, return_info=True)
    assert 30 <= info["jpeg1"] <= 95 and 30 <= info["jpeg2"] <= 95
    assert info["resize1"]["mode"] in dg.RESIZE_MODES
    assert info["final_order"] in ("resize_sinc,jpeg", "jpeg,resize_sinc")
    # The degraded LR is farther from the clean LR than the clean LR is from itself, but close in mean.
    clean = dg.degrade_bicubic(hr)
    assert not np.array_equal(lr, clean)
    assert abs(lr.astype(float).mean() - clean.astype(float).mean()) < 20


def test_realesrgan_scale_2_and_bad_input():
    hr = smooth_image(40, 40, 10)
    assert dg.degrade_realesrgan(hr, 0, scale=2).shape == (20, 20, 3)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        dg.degrade_realesrgan(hr.astype(np.float32), 0)
    with pytest.raises(ValueError, match="for mode"):
        dg.degrade(hr, "nearest", 0)


def test_bicubic_is_pil_bicubic():
    hr = smooth_image(64, 48, 11)
    lr = dg.degrade_bicubic(hr)
    ref = np.asarray(Image.fromarray(hr).resize((12, 16), Image.BICUBIC))
    assert lr.shape == (16, 12, 3) and np.array_equal(lr, ref)
    assert np.array_equal(dg.degrade(hr, "bicubic", 0), dg.degrade(hr, "bicubic", 99))


# ---------------------------------------------------------------------------------------------
# data, on a synthetic root


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    """A data root shaped like fetch_data.sh output: 7 images in 2 sources, one 2-image group."""
    root = tmp_path_factory.mktemp("data")
    specs = [  # (source, name, w, h, group)
        ("srcA", "a0.png", 300, 200, None),
        ("srcA", "a1.png", 200, 260, None),
        ("srcA", "a2.png", 180, 150, None),  # short side 150 < 192: upscaled at hr_size 192
        ("srcB", "b0.png", 256, 256, None),
        ("srcB", "b1.png", 320, 240, "pair"),
        ("srcB", "b2.png", 320, 240, "pair"),
        ("srcB", "b3.jpg", 400, 300, None),
    ]
    images = []
    for i, (src, name, w, h, group) in enumerate(specs):
        path = root / "raw" / src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = smooth_image(h, w, 100 + i)
        im = Image.fromarray(arr)
        if name == "a1.png":
            im = im.convert("L")  # gray photo: loaded as 3 equal channels
        im.save(path, **({"quality": 95} if name.endswith(".jpg") else {}))
        raw = path.read_bytes()
        images.append({
            "file": f"raw/{src}/{name}", "source": src, "width": w, "height": h, "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(), "group": f"{src}/{group or Path(name).stem}",
        })
    (root / "manifest.json").write_text(json.dumps({"images": images}))
    by_name = {Path(e["file"]).name: e for e in images}
    val = [by_name["a0.png"], by_name["b1.png"]]  # b1's partner b2 must leave train too
    split = root / "split.json"
    split.write_text(json.dumps({"val": [{"file": e["file"], "sha256": e["sha256"]} for e in val]}))
    return root, split


def _ds(synth_root, **kw):
    root, split = synth_root
    kw.setdefault("hr_size", 64)
    return PairDataset(root=root, split_file=split, **kw)


def test_split_disjoint_and_groups(synth_root):
    root, split = synth_root
    train = split_entries(root, "train", split)
    val = split_entries(root, "val", split)
    assert [Path(e["file"]).name for e in val] == ["a0.png", "b1.png"]
    assert [Path(e["file"]).name for e in train] == ["a1.png", "a2.png", "b0.png", "b3.jpg"]
    assert not {e["sha256"] for e in train} & {e["sha256"] for e in val}
    assert split_entries(root, "val", split) == val  # stable


def test_item_shapes_and_ranges(synth_root):
    for degrade in ("realesrgan", "bicubic", "mixed"):
        for split in ("train", "val"):
            ds = _ds(synth_root, split=split, degrade=degrade)
            item = ds[0]
            assert item["hr"].shape == (3, 64, 64) and str(item["hr"].dtype) == "torch.float32"
            assert item["lr"].shape == (3, 16, 16) and str(item["lr"].dtype) == "torch.float32"
            assert item["lr_u8"].shape == (16, 16, 3) and str(item["lr_u8"].dtype) == "torch.uint8"
            assert item["label"] == 0
            assert -1.0 <= float(item["hr"].min()) and float(item["hr"].max()) <= 1.0
            hr_u8 = (item["hr"].numpy() + 1.0) * 127.5
            assert np.allclose(hr_u8, np.round(hr_u8), atol=1e-4)  # exactly uint8 / 127.5 - 1
            assert np.array_equal(item["lr"].numpy(), item["lr_u8"].numpy().transpose(2, 0, 1) / np.float32(255))


def test_gray_source_gives_three_equal_channels(synth_root):
    ds = _ds(synth_root, split="train", degrade="bicubic", scale_jitter=None)
    i = [Path(e["file"]).name for e in ds.entries].index("a1.png")
    hr = ds.hr_u8(i)
    assert np.array_equal(hr[..., 0], hr[..., 1]) and np.array_equal(hr[..., 1], hr[..., 2])


def test_train_crops_reproducible(synth_root):
    a = _ds(synth_root, split="train", seed=3, length=8)
    b = _ds(synth_root, split="train", seed=3, length=8)
    for i in (0, 5):
        x, y = a[i], b[i]
        assert np.array_equal(x["hr"].numpy(), y["hr"].numpy())
        assert np.array_equal(x["lr_u8"].numpy(), y["lr_u8"].numpy())
    # order of access does not matter
    assert np.array_equal(b[7]["lr_u8"].numpy(), a[7]["lr_u8"].numpy())
    # another epoch or another seed gives other crops
    p0 = [a.sample_params(i) for i in range(8)]
    a.set_epoch(1)
    assert [a.sample_params(i) for i in range(8)] != p0
    c = _ds(synth_root, split="train", seed=4, length=8)
    assert [c.sample_params(i) for i in range(8)] != p0
    # length cycles over the 4 train images
    assert [a.sample_params(i)["entry"] for i in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    with pytest.raises(IndexError):
        a[8]


def test_train_flips_and_scales_vary(synth_root):
    ds = _ds(synth_root, split="train", length=64)
    ps = [ds.sample_params(i) for i in range(64)]
    assert 10 < sum(p["flip"] for p in ps) < 54
    assert len({round(p["scale"], 6) for p in ps}) > 30
    assert all(p["scale"] >= 64 / min(ds.entries[p["entry"]]["width"], ds.entries[p["entry"]]["height"]) - 1e-12
               for p in ps)
    no_flip = _ds(synth_root, split="train", length=64, hflip=False)
    assert not any(no_flip.sample_params(i)["flip"] for i in range(64))


def test_small_image_is_upscaled_to_fit(synth_root):
    # a2 is 180x150: with hr_size 192 it must be upscaled (f = 192/150)
    ds = _ds(synth_root, split="train", hr_size=192, degrade="bicubic")
    i = [Path(e["file"]).name for e in ds.entries].index("a2.png")
    p = ds.sample_params(i)
    assert p["scale"] == pytest.approx(192 / 150)
    item = ds[i]
    assert item["hr"].shape == (3, 192, 192) and item["lr_u8"].shape == (48, 48, 3)


def test_val_deterministic_center_crop(synth_root):
    a = _ds(synth_root, split="val", degrade="realesrgan")
    b = _ds(synth_root, split="val", degrade="realesrgan")
    b.set_epoch(5)  # val ignores the epoch
    assert len(a) == 2
    for i in range(2):
        pa, pb = a.sample_params(i), b.sample_params(i)
        assert pa == pb and not pa["flip"]
        assert np.array_equal(a[i]["lr_u8"].numpy(), b[i]["lr_u8"].numpy())
    # centre: the crop window is centred in the scaled image
    p = a.sample_params(0)
    e = a.entries[0]
    side = 64 / p["scale"]
    assert p["x0"] + side / 2 == pytest.approx(e["width"] / 2)
    assert p["y0"] + side / 2 == pytest.approx(e["height"] / 2)
    # the degradation seed depends on the image content, not the dataset seed alone
    assert a.sample_params(0)["degrade_seed"] != a.sample_params(1)["degrade_seed"]
    c = _ds(synth_root, split="val", degrade="realesrgan", seed=1)
    assert c.sample_params(0)["degrade_seed"] != p["degrade_seed"]


def test_bicubic_dataset_lr_matches_degrade(synth_root):
    ds = _ds(synth_root, split="val", degrade="bicubic")
    item = ds[1]
    hr = np.round((item["hr"].numpy().transpose(1, 2, 0) + 1.0) * 127.5).astype(np.uint8)
    assert np.array_equal(dg.degrade_bicubic(hr), item["lr_u8"].numpy())


def test_mixed_uses_both(synth_root):
    ds = _ds(synth_root, split="train", degrade="mixed", length=40)
    modes = [ds.sample_params(i)["degrade"] for i in range(40)]
    assert {"bicubic", "realesrgan"} == set(modes)


def test_bad_arguments(synth_root, tmp_path):
    root, split = synth_root
    with pytest.raises(ValueError, match="for degrade"):
        PairDataset(root=root, split_file=split, degrade="jpeg")
    with pytest.raises(ValueError, match="for hr_size"):
        PairDataset(root=root, split_file=split, hr_size=66)
    with pytest.raises(ValueError, match="for split"):
        PairDataset(root=root, split_file=split, split="test")
    with pytest.raises(FileNotFoundError, match="fetch_data.sh"):
        PairDataset(root=tmp_path, split_file=split)


def test_corrupted_file_is_detected(synth_root, tmp_path):
    root, split = synth_root
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["images"][1]["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "raw").symlink_to(root / "raw")
    ds = PairDataset(root=tmp_path, split_file=split, hr_size=64)
    with pytest.raises(ValueError, match="sha256"):
        ds[0]


# ---------------------------------------------------------------------------------------------
# the fetched data (training/scripts/fetch_data.sh)

DATA = TRAINING / "data"
HAVE_DATA = (DATA / "manifest.json").exists()
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"{DATA}/manifest.json absent: run training/scripts/fetch_data.sh to fetch the photos"
)


def test_committed_split_file_shape():
    split = json.loads(DEFAULT_SPLIT_FILE.read_text())
    val = split["val"]
    assert len({v["group"] for v in val}) >= 8
    assert len({v["sha256"] for v in val}) == len(val)
    assert {v["source"] for v in val} == {"mate-backgrounds", "python3-skimage", "ukui-wallpapers", "python3-sklearn"}
    # issue 11 widened the split without moving the first nine validation images
    assert [v["group"].split("/")[1] for v in val[:9]] == [
        "Wood", "YellowFlower", "RainDrops", "retina", "hubble_deep_field", "chelsea", "motorcycle", "motorcycle",
        "2004default"]
    assert "lomiri-wallpapers-20.04" in split["sources"]


@needs_data
def test_fetched_split_rule_and_disjoint():
    entries = load_manifest(DATA)
    val = split_entries(DATA, "val")
    train = split_entries(DATA, "train")
    assert len(train) + len(val) == len(entries)
    assert not {e["group"] for e in train} & {e["group"] for e in val}
    # per source, the val groups are the ones with the smallest member sha256
    keys = {}
    for e in entries:
        keys.setdefault(e["source"], {}).setdefault(e["group"], []).append(e["sha256"])
    for src, groups in keys.items():
        order = sorted(groups, key=lambda g: min(groups[g]))
        k = len({e["group"] for e in val if e["source"] == src})
        # the first split gave every source >= 1 group; sources added later give floor(g / 2)
        assert k >= 1 if src in ("mate-backgrounds", "python3-skimage", "ukui-wallpapers") else k == len(groups) // 2
        assert {e["group"] for e in val if e["source"] == src} == set(order[:k])
    for e in entries:
        assert min(e["width"], e["height"]) >= 256


@needs_data
def test_fetched_items():
    tr = PairDataset(split="train", hr_size=128)
    va = PairDataset(split="val", hr_size=128)
    assert not {e["file"] for e in tr.entries} & {e["file"] for e in va.entries}
    for ds in (tr, va):
        item = ds[len(ds) - 1]
        assert item["hr"].shape == (3, 128, 128) and item["lr_u8"].shape == (32, 32, 3)
    again = PairDataset(split="val", hr_size=128)
    assert np.array_equal(again[0]["lr_u8"].numpy(), va[0]["lr_u8"].numpy())
