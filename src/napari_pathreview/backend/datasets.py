"""Readers for the dataset layouts of ``../shared/data`` (users lay out their own data the same way).

- points:  ``images/NAME.png`` + ``points.csv`` (image, split, x, y, label); x = column, y = row, pixels.
- masks:   ``images/NAME.png`` + ``masks/NAME.png`` + ``splits.csv`` (image, split, mask).
- labels:  ``images/NAME.*`` + ``labels.csv`` (image, split, grade|labels).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

UNLABELED_NAME = "unlabeled"


@dataclass
class PointsSample:
    """One annotated image: ``image`` (H, W, 3) uint8, ``yx`` (N, 2) float pixels, ``labels`` (N,) int
    indices into the dataset's classes, -1 for nuclei annotated without a class."""

    name: str
    split: str
    image: np.ndarray
    yx: np.ndarray
    labels: np.ndarray


def _find_image(images: Path, name: str) -> Path:
    for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        p = images / f"{name}{ext}"
        if p.exists():
            return p
    raise InputError(f"{images}: no image file for '{name}' listed in the CSV; add images/{name}.png")


def read_points_csv(path: Path) -> list[dict]:
    """Rows of a points CSV; InputError when the file or its columns are missing."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: points CSV not found; a points dataset needs points.csv beside images/")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"image", "x", "y", "label"}
    if not rows or not need <= set(rows[0]):
        raise InputError(f"{path}: expected columns image,split,x,y,label")
    return rows


def load_points_dataset(
    root: str | Path, splits: str | list[str] | None = None, classes: list[str] | None = None
) -> tuple[list[PointsSample], list[str]]:
    """Load a points dataset.

    Returns the samples of the requested split(s) (all when None) and the class names, in the order
    given or sorted with ``others`` last; ``unlabeled`` is never a class.
    """
    from skimage.io import imread

    from .slides import to_rgb_uint8

    root = Path(root)
    if not (root / "images").is_dir():
        raise InputError(f"{root}: not a points dataset (no images/ folder); see docs/data-formats.md")
    rows = read_points_csv(root / "points.csv")
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",")]
    if classes is None:
        names = sorted({r["label"] for r in rows} - {UNLABELED_NAME})
        classes = [n for n in names if n != "others"] + (["others"] if "others" in names else [])
    index = {c: i for i, c in enumerate(classes)}
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r)
    samples = []
    for name in sorted(by_image, key=lambda s: (len(s), s)):
        rs = by_image[name]
        split = rs[0].get("split", "train")
        if splits is not None and split not in splits:
            continue
        image = to_rgb_uint8(imread(_find_image(root / "images", name)))
        yx = np.array([[float(r["y"]), float(r["x"])] for r in rs], np.float32)
        labels = np.array([index.get(r["label"], -1) for r in rs], np.int64)
        samples.append(PointsSample(name, split, image, yx, labels))
    if not samples:
        raise InputError(f"{root}: no images in split(s) {splits}")
    return samples, list(classes)
