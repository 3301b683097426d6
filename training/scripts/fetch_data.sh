#!/usr/bin/env bash
# Fetch the training photos for AlignVAR x4 SR from Debian packages.
#
# These are the only allowed data sources:
#   mate-backgrounds   usr/share/backgrounds/mate/nature/*.jpg    (12 photos, GPL-2+)
#   python3-skimage    usr/lib/python3/dist-packages/skimage/data (allowlisted natural photos)
#   ukui-wallpapers    usr/share/backgrounds/*                    (allowlisted continuous-tone renders)
#   lomiri-wallpapers-20.04  usr/share/backgrounds/*.jpg          (allowlisted photos: 1 of 4)
#   python3-sklearn    usr/lib/python3/dist-packages/sklearn/datasets/images/*.jpg (2 photos)
# Looked at and not used (issue 11, each image viewed):
#   gnome-backgrounds 43.1-1: 16 .webp wallpapers, all renders or patterns (wood stripes, licorice,
#     adwaita, pixels, truchet, grid, symbolic, vnc): no photograph.
#   python3-matplotlib 3.6.3-1: ships no sample images (its sample_data lives in
#     python-matplotlib-data, which is not an allowed source); only plot baselines and icons.
#
# Each package is fetched with `apt-get download` (never installed) and unpacked with `dpkg -x`.
# The chosen files are copied to training/data/raw/<package>/ with the package's copyright file.
# The script writes training/data/manifest.json (file, source, package version, pixel size, bytes,
# sha256, group, kind). If training/avtrain/split.json is missing it also writes it (or with --resplit).
# That file is committed and fixes the validation images. When it exists, the script checks that
# every validation sha256 is in the manifest and fails otherwise.
#
# The script is idempotent. .deb files are cached in training/data/.debs. Files in raw/ that are not
# on the lists are removed. A second run rewrites the same manifest byte for byte.
#
# Needs: apt-get, dpkg, and /usr/bin/python3 with PIL (Debian python3-pil).
#
# Usage: training/scripts/fetch_data.sh [--resplit]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
training="$(dirname "$here")"
data="$training/data"
split_json="$training/avtrain/split.json"
py=/usr/bin/python3

resplit=0
for arg in "$@"; do
  case "$arg" in
    --resplit) resplit=1 ;;
    *) echo "Expected no argument or --resplit but received $arg" >&2; exit 2 ;;
  esac
done

packages=(mate-backgrounds python3-skimage ukui-wallpapers lomiri-wallpapers-20.04 python3-sklearn)

# skimage data: the natural photographs only. Left out, with the reason:
#   text.png bw_text.png page.png          text / document scans
#   checker_bilevel chessboard_* block     synthetic patterns, most < 256 px
#   color.png phantom.png horse.png        synthetic colour wheel, Shepp-Logan phantom, binary silhouette
#   logo.png                               graphic
#   cell.png ihc.png                       microscopy (greyscale cell, IHC stain)
#   clock_motion.png                       deliberately motion-blurred, 400x300: a poor HR target
#   microaneurysms.png palette_* foo3x5x4indexed.png green_palette.png   tiny or palette tests
#   truncated.jpg                          deliberately corrupt; *.tif: multipage/16-bit test files
# motorcycle_left/right are a stereo pair of one scene: one group, so they never straddle the split.
skimage_keep=(
  astronaut.png brick.png camera.png chelsea.png coffee.png coins.png grass.png gravel.png
  hubble_deep_field.jpg moon.png motorcycle_left.png motorcycle_right.png retina.jpg rocket.jpg
)
# ukui-wallpapers holds no photographs. Kept: the four continuous-tone 3-D renders (smooth shading,
# soft gradients, fine striations). Left out: flat vector illustrations with large uniform areas
# and hard edges (calla, city, desert, firstgeneration, focal-ubuntukylin, goldfish, rollpaper,
# the-mouse).
ukui_keep=(2004default.jpg fluent-color.png rhythm.jpg string.jpg)
# lomiri-wallpapers-20.04: Kleiber (a nuthatch on a tree trunk, bokeh) is a photograph. Left out:
# Fossa (3-D render), Infinite-Sea (a star-field composite over a synthetic gradient), Painting-Colors
# (flat colour bands).
lomiri_keep=(Kleiber_by_Lukas_Baubkus.jpg)
# python3-sklearn: both sample images are photographs.
sklearn_keep=(china.jpg flower.jpg)

mkdir -p "$data/.debs" "$data/raw"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for pkg in "${packages[@]}"; do
  if ! ls "$data/.debs/${pkg}"_*.deb >/dev/null 2>&1; then
    # apt-get download writes into the current directory. As root it also warns that _apt cannot
    # read the directory; that is harmless.
    if ! (cd "$data/.debs" && apt-get download "$pkg"); then
      echo "apt-get download $pkg failed; run 'apt-get update' once and retry" >&2
      exit 1
    fi
  fi
  deb="$(ls "$data/.debs/${pkg}"_*.deb | sort | tail -n 1)"
  mkdir -p "$work/$pkg"
  dpkg -x "$deb" "$work/$pkg"
  dpkg-deb -f "$deb" Version >"$work/$pkg.version"
done

# copy_set <package> <source dir> <names...>: make raw/<package>/ hold exactly these files.
copy_set() {
  local pkg="$1" src="$2"
  shift 2
  local dst="$data/raw/$pkg"
  mkdir -p "$dst"
  local name
  for name in "$@"; do
    if [[ ! -f "$src/$name" ]]; then
      echo "$pkg: expected $name in $src but it is missing" >&2
      exit 1
    fi
    cmp -s "$src/$name" "$dst/$name" || cp "$src/$name" "$dst/$name"
  done
  local f keep
  for f in "$dst"/*; do
    [[ -e "$f" ]] || continue
    keep=0
    for name in "$@" COPYRIGHT; do [[ "$(basename "$f")" == "$name" ]] && keep=1; done
    if [[ $keep == 0 ]]; then rm -f "$f"; fi
  done
  cp "$work/$pkg/usr/share/doc/$pkg/copyright" "$dst/COPYRIGHT"
}

mate_dir="$work/mate-backgrounds/usr/share/backgrounds/mate/nature"
mapfile -t mate_keep < <(cd "$mate_dir" && ls | grep -iE '\.(jpe?g|png)$' | LC_ALL=C sort)
copy_set mate-backgrounds "$mate_dir" "${mate_keep[@]}"
copy_set python3-skimage "$work/python3-skimage/usr/lib/python3/dist-packages/skimage/data" "${skimage_keep[@]}"
copy_set ukui-wallpapers "$work/ukui-wallpapers/usr/share/backgrounds" "${ukui_keep[@]}"
copy_set lomiri-wallpapers-20.04 "$work/lomiri-wallpapers-20.04/usr/share/backgrounds" "${lomiri_keep[@]}"
copy_set python3-sklearn "$work/python3-sklearn/usr/lib/python3/dist-packages/sklearn/datasets/images" "${sklearn_keep[@]}"

"$py" - "$data" "$split_json" "$resplit" "$work" <<'EOF'
import hashlib, json, sys
from pathlib import Path
from PIL import Image

data, split_json, resplit, work = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", Path(sys.argv[4])
MIN_SHORT = 256
# Images of one scene share a group, so a group is wholly train or wholly val.
GROUPS = {"motorcycle_left.png": "motorcycle", "motorcycle_right.png": "motorcycle"}
KIND = {"ukui-wallpapers": "render"}

entries = []
for src_dir in sorted(p for p in (data / "raw").iterdir() if p.is_dir()):
    pkg = src_dir.name
    version = (work / f"{pkg}.version").read_text().strip()
    for f in sorted(src_dir.iterdir()):
        if f.name == "COPYRIGHT":
            continue
        with Image.open(f) as im:
            im.load()  # full decode: a corrupt file fails here, not in training
            w, h = im.size
            mode = im.mode
        if min(w, h) < MIN_SHORT:
            sys.exit(f"{f}: short side {min(w, h)} < {MIN_SHORT}; remove it from the keep list")
        raw = f.read_bytes()
        entries.append({
            "file": f.relative_to(data).as_posix(),
            "source": pkg,
            "version": version,
            "width": w,
            "height": h,
            "mode": mode,
            "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "group": f"{pkg}/{GROUPS.get(f.name, f.stem)}",
            "kind": KIND.get(pkg, "photo"),
        })

manifest = {"root": "training/data", "min_short_side": MIN_SHORT, "images": entries}
(data / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")

by_sha = {e["sha256"]: e for e in entries}
if split_json.exists() and not resplit:
    split = json.loads(split_json.read_text())
    missing = [v["file"] for v in split["val"] if v["sha256"] not in by_sha]
    if missing:
        sys.exit(f"split.json lists validation images that are not in the fetched data: {missing}; "
                 "the packages changed. Re-run with --resplit and commit the new split.json")
    # Widening without reshuffling: the existing validation entries stay. A source that split.json
    # does not know yet (not in its "sources", or, for a file without that list, with no val entry)
    # adds its first floor(g / 2) groups, sorted by min member sha256, to val; then it is recorded.
    known = set(split.get("sources", [v["source"] for v in split["val"]]))
    new_sources = sorted({e["source"] for e in entries} - known)
    if new_sources:
        for s in new_sources:
            groups = {}
            for e in entries:
                if e["source"] == s:
                    groups.setdefault(e["group"], []).append(e)
            ordered = sorted(groups.values(), key=lambda m: min(x["sha256"] for x in m))
            for members in ordered[: len(ordered) // 2]:
                split["val"].extend({"file": m["file"], "source": s, "group": m["group"], "sha256": m["sha256"]}
                                    for m in sorted(members, key=lambda m: m["file"]))
        split["sources"] = sorted(known | set(new_sources))
        split["widen_rule"] = ("existing val entries are never moved; a source new to this file adds its first "
                               "floor(g / 2) of g groups sorted by min member sha256, then joins 'sources'")
        split_json.write_text(json.dumps(split, indent=1) + "\n")
else:
    # Groups per source, each keyed by the smallest sha256 of its members, sorted by that key.
    groups = {}
    for e in entries:
        groups.setdefault(e["source"], {}).setdefault(e["group"], []).append(e)
    keyed = {s: sorted(g.values(), key=lambda m: min(x["sha256"] for x in m)) for s, g in groups.items()}
    n_groups = sum(len(g) for g in keyed.values())
    n_val = max(8, round(0.1 * n_groups))
    # Largest-remainder allocation proportional to the group count of each source, >= 1 each.
    quota = {s: n_val * len(g) / n_groups for s, g in keyed.items()}
    alloc = {s: max(1, int(q)) for s, q in quota.items()}
    for s in sorted(quota, key=lambda s: (-(quota[s] - int(quota[s])), s)):
        if sum(alloc.values()) >= n_val:
            break
        alloc[s] += 1
    val = []
    for s in sorted(keyed):
        for members in keyed[s][: alloc[s]]:
            val.extend({"file": m["file"], "source": s, "group": m["group"], "sha256": m["sha256"]}
                       for m in sorted(members, key=lambda m: m["file"]))
    split = {
        "rule": ("validation = the first k groups of each source sorted by min member sha256; "
                 "k by largest remainder of n_val * groups_in_source / groups_total, >= 1 per source; "
                 "n_val = max(8, round(0.1 * groups_total)); whole images, never used in training"),
        "val": val,
        "sources": sorted(groups),
    }
    split_json.write_text(json.dumps(split, indent=1) + "\n")

val_sha = {v["sha256"] for v in split["val"]}
print(f"{'source':18s} {'images':>6s} {'train':>6s} {'val':>4s}")
for s in sorted({e["source"] for e in entries}):
    es = [e for e in entries if e["source"] == s]
    nv = sum(e["sha256"] in val_sha for e in es)
    print(f"{s:18s} {len(es):6d} {len(es) - nv:6d} {nv:4d}")
print(f"{'total':18s} {len(entries):6d} {len(entries) - len(val_sha):6d} {len(val_sha):4d}")
EOF
