"""MoNuSeg's 17 binary-mask images as a detection-only points dataset (issue 27 item 2); with
``--masks instance``, its 13 instance-mask images (the zero-shot evaluation set, all ``validation``).

Writes OUT/images/NAME.png (links to the originals), OUT/points.csv (``image,split,x,y,label``, every
nucleus ``unlabeled``) and OUT/dataset.json (``{"mpp": 0.25}``: MoNuSeg is 40x). The 13 instance-mask
images are left out: they are the zero-shot evaluation set (``bench few-shot`` builds its points from them).

Centres are the connected components of the 0/255 foreground, in pixels at 0.25 µm/px:

- a component of one nucleus' size (``--min-um2`` to ``--max-um2`` µm²) gives its centroid;
- a larger one (touching nuclei merged by the binary mask) is split at the maxima of its distance
  transform at least ``--min-dist-um`` µm apart, each maximum a centre;
- a smaller one (debris, a mask fragment) is dropped.

Every ``--folds``-th image (sorted by name, offset ``--fold``) is written with split ``validation``, the
rest ``train``: the validation images are held out of training, for choosing the decoding threshold.

    python scripts/monuseg_points.py --data ../shared/data/monuseg --out runs/monuseg-points
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

MONUSEG_MPP = 0.25


def centres(mask: np.ndarray, mpp: float = MONUSEG_MPP, min_um2=5.0, max_um2=110.0, min_dist_um=3.0) -> np.ndarray:
    """(N, 2) nucleus centres (row, col) in pixels of a binary mask (H, W), see the module docstring."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.measure import label, regionprops

    lab = label(mask > 0, connectivity=1)
    px2 = mpp * mpp
    out = []
    for r in regionprops(lab):
        area = r.area * px2
        if area < min_um2:
            continue
        if area <= max_um2:
            out.append(r.centroid)
            continue
        y0, x0, y1, x1 = r.bbox
        comp = np.pad(r.image, 1)
        dist = ndimage.gaussian_filter(ndimage.distance_transform_edt(comp), 1.0)
        peaks = peak_local_max(dist, min_distance=max(1, round(min_dist_um / mpp)), labels=comp.astype(int))
        out.extend((p[0] - 1 + y0, p[1] - 1 + x0) for p in peaks)
    return np.asarray(out, np.float64).reshape(-1, 2)


def instance_centres(labels: np.ndarray) -> np.ndarray:
    """(N, 2) centroids (row, col) in pixels of an instance label image (0 background)."""
    from skimage.measure import regionprops

    return np.array([p.centroid for p in regionprops(labels)], np.float64).reshape(-1, 2)


def write_points(data: Path, out: Path, folds: int = 4, fold: int = 0, masks: str = "binary", **kw) -> dict:
    """Write the points dataset of ``data``'s ``masks`` images (``binary``: split ``folds`` ways as the
    module docstring says; ``instance``: their centroids, every image ``validation``);
    -> {image name: (split, number of centres)}."""
    from skimage.io import imread

    with open(data / "splits.csv", newline="") as fh:
        names = sorted(r["image"] for r in csv.DictReader(fh) if r.get("mask") == masks)
    if not names:
        raise SystemExit(f"{data}: splits.csv lists no image with mask={masks}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    summary = {}
    with open(out / "points.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "split", "x", "y", "label"])
        for i, name in enumerate(names):
            held_out = masks == "instance" or (folds and i % folds == fold)
            split = "validation" if held_out else "train"
            link = out / "images" / f"{name}.png"
            if not link.exists():
                link.symlink_to((data / "images" / f"{name}.png").resolve())
            mask = imread(data / "masks" / f"{name}.png")
            yx = instance_centres(mask) if masks == "instance" else centres(mask, **kw)
            for y, x in yx:
                w.writerow([name, split, f"{x:.2f}", f"{y:.2f}", "unlabeled"])
            summary[name] = (split, len(yx))
    (out / "dataset.json").write_text(json.dumps({"mpp": MONUSEG_MPP}))
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="MoNuSeg folder (images/, masks/, splits.csv)")
    ap.add_argument("--out", type=Path, required=True, help="points dataset folder to write")
    ap.add_argument("--masks", choices=("binary", "instance"), default="binary", help="which images to write")
    ap.add_argument("--folds", type=int, default=4, help="every N-th image is held out as validation (0: none)")
    ap.add_argument("--fold", type=int, default=0, help="which of the N (offset)")
    ap.add_argument("--min-um2", type=float, default=5.0, help="smaller components are dropped (µm²)")
    ap.add_argument("--max-um2", type=float, default=110.0, help="larger components are split (µm²)")
    ap.add_argument("--min-dist-um", type=float, default=3.0, help="distance between split centres (µm)")
    a = ap.parse_args(argv)
    kw = {"min_um2": a.min_um2, "max_um2": a.max_um2, "min_dist_um": a.min_dist_um}
    s = write_points(a.data, a.out, a.folds, a.fold, a.masks, **kw)
    for name, (split, n) in s.items():
        print(f"{name} {split} {n}")
    print(f"{sum(n for _, n in s.values())} centres in {len(s)} images -> {a.out}")


if __name__ == "__main__":
    main()
