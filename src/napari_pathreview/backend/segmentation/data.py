"""Masks datasets: ``images/`` + ``masks/`` + ``splits.csv``, read as :class:`MaskSample` lists.

Layout in docs/data-formats.md. ``mask=instance`` rows hold instance ids (0 background),
``mask=binary`` rows a foreground mask with no instance split.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets import _find_image
from ..errors import InputError
from ..slides import to_rgb_uint8

MONUSEG_MPP = 0.25  # MoNuSeg: TCGA 40x scans, about 0.25 µm per pixel
MASK_KINDS = ("instance", "binary")


@dataclass
class MaskSample:
    """One annotated image: ``image`` (H, W, 3) uint8 and ``labels`` (H, W) int32 — instance ids
    (0 background) when ``instances`` is True, else a 0/1 foreground mask with no instance split."""

    name: str
    split: str
    image: np.ndarray
    labels: np.ndarray
    instances: bool


def read_splits_csv(root: Path) -> list[dict]:
    """Rows of ``root/splits.csv`` (``image, split, mask``), ``mask`` checked and defaulted to instance."""
    path = Path(root) / "splits.csv"
    if not path.is_file():
        raise InputError(
            f"{root}: no splits.csv; a masks dataset needs images/, masks/ and splits.csv "
            "(image,split,mask); see docs/data-formats.md"
        )
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image", "split"} <= set(rows[0]):
        raise InputError(f"{path}: expected columns image,split,mask")
    for r in rows:
        kind = (r.get("mask") or "instance").strip()
        if kind not in MASK_KINDS:
            raise InputError(f"{path}: image {r['image']}: mask kind '{kind}' is not one of {MASK_KINDS}")
        r["mask"] = kind
    return rows


def _select_rows(root: Path, rows: list[dict], splits, names) -> list[dict]:
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",")]
    if names is not None:
        by_name = {r["image"]: r for r in rows}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InputError(f"{root}: images {missing[:3]} are not listed in splits.csv")
        return [by_name[n] for n in names]
    if splits is not None:
        present = sorted({r["split"] for r in rows})
        rows = [r for r in rows if r["split"] in splits]
        if not rows:
            raise InputError(f"{root}: no images in split(s) {splits}; splits present: {', '.join(present)}")
    return rows


def _read_sample(root: Path, row: dict) -> MaskSample:
    from skimage.io import imread

    image = to_rgb_uint8(imread(_find_image(root / "images", row["image"])), row["image"])
    mpath = _find_image(root / "masks", row["image"])
    mask = np.asarray(imread(mpath))
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != image.shape[:2]:
        raise InputError(f"{mpath}: mask shape {mask.shape} differs from the image's {image.shape[:2]}")
    inst = row["mask"] == "instance"
    labels = mask.astype(np.int32) if inst else (mask > 0).astype(np.int32)
    return MaskSample(row["image"], row["split"], image, labels, inst)


def load_masks_dataset(
    root: str | Path, splits: str | list[str] | None = None, names: list[str] | None = None
) -> list[MaskSample]:
    """Load an images + masks + splits.csv dataset (splits: a name, comma list or list; None: all).

    ``names``: keep only these images (in this order). ``mask=instance`` rows: uint16/int instance labels;
    ``mask=binary`` rows: nonzero = foreground (0/255 PNG).
    """
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        raise InputError(f"{root}: not a masks dataset (needs images/ and masks/ folders and splits.csv)")
    rows = _select_rows(root, read_splits_csv(root), splits, names)
    return [_read_sample(root, r) for r in rows]


def distance_target(labels: np.ndarray) -> np.ndarray:
    """Normalised distance map of an instance mask: per instance, the Euclidean distance to its border
    divided by its maximum, in (0, 1] inside instances and 0 outside: float32 (H, W)."""
    from scipy import ndimage

    out = np.zeros(labels.shape, np.float32)
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sl)
        m = labels[sl] == i
        d = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        if d.max() > 0:
            out[sl][m] = (d[m] / d.max()).astype(np.float32)
    return out
