"""Evaluate an exported AlignVAR model on the fixed validation split, through the ENGINE.

    cd training && /usr/bin/python3 -m avtrain.evaluate --model ../models/alignvar-default.safetensors \
        --out-json ../models/eval.json --out-md ../models/eval.md --crops ../models/crops

For every validation image of avtrain/split.json (never used in training) it takes the val crop
of avtrain.data.PairDataset (center crop, fixed scale, --hr-size px) and makes two LR inputs:

- clean:    PIL bicubic x1/4 (degrade.degrade_bicubic, deterministic);
- degraded: the Real-ESRGAN two-stage degradation (degrade.degrade_realesrgan) seeded by the val
            item's own seed (a function of --seed and the image's sha256), so the inputs never change.

The LR PNGs go to a temp dir. The engine CLI (`node --import tsx src/cli/main.ts upscale ... --model`)
upscales all of them in one process, with its defaults (the model's default guidance from its
metadata, greedy top-k 1, AdaIN colour fix). Metrics (avtrain.metrics: PSNR-Y and SSIM-Y on
BT.601 Y with a 4-px border; sharpness = mean Sobel magnitude relative to the HR) are computed for
PIL bicubic, PIL lanczos3, the engine output and, unless --no-torch, the PyTorch reference
(avtrain.export.load_model, the same greedy generation + AdaIN fix as train_var's validation).
Writes the JSON, a markdown table and side-by-side crops (LR-bicubic | lanczos3 | ours | HR).
The engine's CPU seconds (user + sys of the node process) and wall seconds are reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from . import metrics
from .data import REPO_DIR, PairDataset
from .degrade import degrade_bicubic, degrade_realesrgan

METHODS = ("bicubic", "lanczos3", "engine", "torch")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="exported .safetensors file")
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--split-file", default=None)
    ap.add_argument("--hr-size", type=int, default=256, help="HR crop side (a multiple of the model's HR tile)")
    ap.add_argument("--seed", type=int, default=0, help="val degradation seed base (PairDataset seed)")
    ap.add_argument("--out-json", default=None)
    ap.add_argument("--out-md", default=None)
    ap.add_argument("--crops", default=None, help="folder for side-by-side crops")
    ap.add_argument("--n-crops", type=int, default=4)
    ap.add_argument("--crop-size", type=int, default=128)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine (torch reference only)")
    ap.add_argument("--engine-args", default="", help="extra CLI flags, e.g. '--cfg 0'")
    ap.add_argument("--color-fix", default=None, choices=("adain", "wavelet", "none"),
                    help="colour fix for the engine and the reference (default: the model's metadata color_fix, else adain)")
    ap.add_argument("--keep", default=None, help="keep LR/SR PNGs in this folder instead of a temp dir")
    return ap.parse_args(argv)


def load_pairs(args) -> List[Dict]:
    ds = PairDataset(args.data, "val", hr_size=args.hr_size, degrade="realesrgan", seed=args.seed,
                     split_file=args.split_file)
    out = []
    for i in range(len(ds)):
        p = ds.sample_params(i)
        hr = ds.hr_u8(i)
        out.append({
            "name": Path(ds.entries[p["entry"]]["file"]).stem,
            "hr": hr,
            "clean": degrade_bicubic(hr, 4),
            "degraded": degrade_realesrgan(hr, p["degrade_seed"], 4),
        })
    return out


def run_engine(model: str, inputs: List[str], outdir: str, extra: str) -> Dict:
    cmd = ["node", "--import", "tsx", "src/cli/main.ts", "upscale", *inputs, "-o", outdir, "--model", model, "-q"]
    cmd += extra.split()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    r = subprocess.run(cmd, cwd=str(REPO_DIR), capture_output=True, text=True)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"engine failed (rc {r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cmd": " ".join(cmd), "wall_s": wall, "cpu_s": cpu, "n": len(inputs)}


def model_color_fix(model: str) -> str:
    from .safetensors_io import load_file

    meta = load_file(model)[1]
    # a residual-latent file takes its colour from the LR base: no colour fix unless it names one
    fix = meta.get("color_fix", "none" if meta.get("latent", "image").strip() == "residual" else "adain").strip()
    return fix if fix in ("adain", "wavelet", "none") else "adain"


def run_torch(model: str, lrs: List[np.ndarray], color_fix: str = "adain") -> List[np.ndarray]:
    import torch

    from .export import load_model
    from .postprocess import adain_fix, to_uint8, wavelet_fix
    from .resample import preprocess_lr

    var, vae, cfg = load_model(model)
    g = cfg.lr_size
    outs = []
    with torch.no_grad():
        for lr in lrs:
            h, w = lr.shape[:2]
            if h % g or w % g:
                raise ValueError(f"torch reference needs LR sides that are multiples of {g}, got {h}x{w}")
            sr = np.zeros((h * 4, w * 4, 3), np.uint8)
            for y in range(0, h, g):  # non-overlapping tiles (the engine blends overlapping ones)
                for x in range(0, w, g):
                    tile = lr[None, y:y + g, x:x + g]
                    lr_m11, up01, lr01 = preprocess_lr(tile, cfg.hr_size)
                    f_hat, _, _ = var.generate(vae, lr_m11, lr01, cfg_scale=0.0, top_k=1)
                    dec = to_uint8(vae.output(f_hat, up01).float())
                    if color_fix == "adain":
                        dec = adain_fix(dec, up01)
                    elif color_fix == "wavelet":
                        dec = wavelet_fix(dec, up01)
                    sr[y * 4:(y + g) * 4, x * 4:(x + g) * 4] = dec.numpy()[0]
            outs.append(sr)
    return outs


def score(sr: np.ndarray, hr: np.ndarray) -> Dict[str, float]:
    return {"psnr_y": metrics.psnr_y(sr, hr), "ssim_y": metrics.ssim_y(sr, hr), "sharpness": metrics.sharpness(sr, hr)}


def save_crop(path: Path, panels: List[np.ndarray], size: int) -> None:
    h, w = panels[0].shape[:2]
    s = min(size, h, w)
    y, x = (h - s) // 2, (w - s) // 2
    gap = np.full((s, 4, 3), 255, np.uint8)
    row = []
    for p in panels:
        row += [p[y:y + s, x:x + s], gap]
    Image.fromarray(np.concatenate(row[:-1], axis=1)).save(path, optimize=True)
    if path.stat().st_size > 300_000:  # keep crops small: shrink until under the limit
        im = Image.open(path)
        while path.stat().st_size > 300_000:
            im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
            im.save(path, optimize=True)


def main(argv=None) -> Dict:
    args = parse_args(argv)
    model = str(Path(args.model).resolve())
    color_fix = args.color_fix or model_color_fix(model)
    engine_args = f"{args.engine_args} --color-fix {color_fix}".strip()
    pairs = load_pairs(args)
    kinds = ("clean", "degraded")
    methods = ["bicubic", "lanczos3"] + ([] if args.no_engine else ["engine"]) + ([] if args.no_torch else ["torch"])
    sr: Dict[str, Dict[str, List[np.ndarray]]] = {m: {k: [] for k in kinds} for m in methods}
    for k in kinds:
        for p in pairs:
            sr["bicubic"][k].append(metrics.bicubic_upscale(p[k], 4))
            sr["lanczos3"][k].append(metrics.lanczos_upscale(p[k], 4))
    timing = {}
    tmp_ctx = tempfile.TemporaryDirectory(prefix="alignvar-eval-") if args.keep is None else None
    work = Path(tmp_ctx.name if tmp_ctx else args.keep)
    (work / "lr").mkdir(parents=True, exist_ok=True)
    (work / "sr").mkdir(parents=True, exist_ok=True)
    inputs = []
    for k in kinds:
        for p in pairs:
            f = work / "lr" / f"{p['name']}_{k}.png"
            Image.fromarray(p[k]).save(f)
            inputs.append(str(f))
    if "engine" in methods:
        # one single-image call first: the time a user sees for one output, model load included
        one = run_engine(model, inputs[:1], str(work / "sr"), engine_args)
        allr = run_engine(model, inputs, str(work / "sr"), engine_args)
        timing["engine_single_call"] = one
        timing["engine_all"] = allr
        timing["engine_cpu_s_per_output"] = allr["cpu_s"] / allr["n"]
        timing["engine_wall_s_per_output"] = allr["wall_s"] / allr["n"]
        for k in kinds:
            for p in pairs:
                sr["engine"][k].append(np.array(Image.open(work / "sr" / f"{p['name']}_{k}.png").convert("RGB")))
    if "torch" in methods:
        t0 = time.time()
        for k in kinds:
            sr["torch"][k] = run_torch(model, [p[k] for p in pairs], color_fix)
        timing["torch_wall_s_per_output"] = (time.time() - t0) / (2 * len(pairs))

    per_image = []
    table: Dict[str, Dict[str, Dict[str, float]]] = {}
    for k in kinds:
        table[k] = {}
        for m in methods:
            sc = [score(s, p["hr"]) for s, p in zip(sr[m][k], pairs)]
            for p, s in zip(pairs, sc):
                per_image.append({"image": p["name"], "lr": k, "method": m, **s})
            table[k][m] = {key: float(np.mean([s[key] for s in sc])) for key in ("psnr_y", "ssim_y", "sharpness")}

    result = {
        "model": os.path.relpath(model, str(REPO_DIR)),
        "model_bytes": os.path.getsize(model),
        "hr_size": args.hr_size, "seed": args.seed, "n_images": len(pairs), "color_fix": color_fix,
        "images": [p["name"] for p in pairs],
        "metric_notes": "PSNR-Y / SSIM-Y: BT.601 Y, 4-px border (avtrain.metrics); sharpness: mean Sobel "
                        "magnitude of Y relative to the HR (1 = as sharp as HR)",
        "means": table, "timing": timing, "per_image": per_image,
    }
    md = [f"Validation split: {len(pairs)} images (avtrain/split.json), {args.hr_size}x{args.hr_size} HR "
          f"centre crops, x4, colour fix {color_fix}. PSNR-Y/SSIM-Y: BT.601, 4-px border; sharpness: "
          f"Sobel energy / HR's.", "",
          "| LR input | method | PSNR-Y (dB) | SSIM-Y | sharpness |", "|---|---|---|---|---|"]
    names = {"bicubic": "bicubic (PIL)", "lanczos3": "lanczos3 (PIL)", "engine": "AlignVAR (engine)",
             "torch": "AlignVAR (PyTorch ref.)"}
    for k in kinds:
        for m in methods:
            t = table[k][m]
            md.append(f"| {k} | {names[m]} | {t['psnr_y']:.2f} | {t['ssim_y']:.4f} | {t['sharpness']:.3f} |")
    if "engine" in methods:
        md += ["", f"Engine: {timing['engine_all']['n']} outputs in one CLI call, "
                   f"{timing['engine_cpu_s_per_output']:.2f} CPU s and {timing['engine_wall_s_per_output']:.2f} wall s "
                   f"per {args.hr_size}x{args.hr_size} output; a single-image call (model load included) took "
                   f"{timing['engine_single_call']['wall_s']:.2f} s wall, {timing['engine_single_call']['cpu_s']:.2f} CPU s."]
    result["markdown"] = "\n".join(md)
    print(result["markdown"])

    if args.crops and "engine" in methods:
        cd = Path(args.crops)
        cd.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(pairs[:args.n_crops]):
            for k in kinds:
                save_crop(cd / f"{p['name']}_{k}.png",
                          [sr["bicubic"][k][i], sr["lanczos3"][k][i], sr["engine"][k][i], p["hr"]], args.crop_size)
        result["crops"] = sorted(os.path.relpath(str(f), str(REPO_DIR)) for f in cd.glob("*.png"))
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(result, indent=1) + "\n")
    if args.out_md:
        Path(args.out_md).write_text(result["markdown"] + "\n")
    if tmp_ctx:
        tmp_ctx.cleanup()
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
