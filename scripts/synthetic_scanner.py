"""A synthetic "other scanner" copy of a points dataset's split (issue 27 item 2): every image resampled
to ``--mpp`` (default 0.25 µm/px, a 40x scan), its stains shifted in optical density (one lab-wide shift,
plus a small per-image one, seeded) and saved as JPEG at ``--quality`` (default 50). Points are mapped
with the pixel-centre convention ``(c + 0.5) * f - 0.5``; ``dataset.json`` records the new mpp.

    python scripts/synthetic_scanner.py --data ../shared/data/crchisto --split validation --out runs/crc-scanner
    pathreview evaluate detector --data runs/crc-scanner --split validation --json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# The lab-wide shift: hematoxylin 25 % denser, eosin 25 % paler, a bluish background (HED biases).
LAB_SCALE = np.array([1.25, 0.75, 1.0])
LAB_BIAS = np.array([0.03, -0.02, 0.0])


def shifted(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 -> the same with the lab-wide stain shift and a ±5 % per-image one (float [0, 1])."""
    from napari_pathreview.backend.augment import _HED_FROM_RGB, _RGB_FROM_HED

    od = -np.log(np.clip(img.astype(np.float64) / 255.0, 1e-6, 1.0))
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB
    hed = hed * LAB_SCALE * rng.uniform(0.95, 1.05, 3) + LAB_BIAS
    return np.clip(np.exp(-(hed @ _RGB_FROM_HED)), 0, 1).reshape(img.shape)


def make(data: Path, split: str, out: Path, mpp: float, quality: int, seed: int, data_mpp: float) -> int:
    """Write the copy; -> number of images."""
    from PIL import Image
    from skimage.io import imread
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    rows = [r for r in csv.DictReader(open(data / "points.csv", newline="")) if r["split"] == split]
    names = sorted({r["image"] for r in rows}, key=lambda s: (len(s), s))
    (out / "images").mkdir(parents=True, exist_ok=True)
    f = data_mpp / mpp
    for name in names:
        img = imread(next((data / "images").glob(f"{name}.*")))[..., :3]
        shape = (round(img.shape[0] * f), round(img.shape[1] * f))
        big = resize(img, shape, order=3, anti_aliasing=f < 1, preserve_range=True)
        rgb = shifted(np.clip(big, 0, 255), rng)
        Image.fromarray(np.rint(rgb * 255).astype(np.uint8)).save(out / "images" / f"{name}.jpg", quality=quality)
    with open(out / "points.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow(
                {**r, "x": f"{(float(r['x']) + 0.5) * f - 0.5:.3f}", "y": f"{(float(r['y']) + 0.5) * f - 0.5:.3f}"}
            )
    (out / "dataset.json").write_text(json.dumps({"mpp": mpp}))
    return len(names)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="points dataset folder (images/, points.csv)")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-mpp", type=float, default=0.55, help="µm/px of --data (CRCHisto: 0.55)")
    ap.add_argument("--mpp", type=float, default=0.25, help="µm/px of the copy")
    ap.add_argument("--quality", type=int, default=50, help="JPEG quality of the copy")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    n = make(a.data, a.split, a.out, a.mpp, a.quality, a.seed, a.data_mpp)
    print(f"{n} images -> {a.out}")


if __name__ == "__main__":
    main()
