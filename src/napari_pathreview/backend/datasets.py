"""Readers for the dataset layouts of ``../shared/data`` (users lay out their own data the same way).

- points:  ``images/NAME.png`` + ``points.csv`` (image, split, x, y, label); x = column, y = row, pixels.
- masks:   ``images/NAME.png`` + ``masks/NAME.png`` + ``splits.csv`` (image, split, mask).
- labels:  ``images/NAME.*`` + ``labels.csv`` (image, split, grade|labels).

Still elsewhere: the masks reader (``segmentation.read_splits_csv`` / ``load_masks_dataset``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import InputError
from .slides import to_rgb_uint8, validate_mpp

DATASET_JSON = "dataset.json"  # {"mpp": 0.25}: the microns per pixel of every image of a dataset folder

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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LABEL_COLUMNS = ("labels", "label", "grade", "class")


def find_image(folder: Path, name: str, bare: bool = False) -> Path | None:
    """``folder/name.<ext>`` for the first of :data:`IMAGE_SUFFIXES` that exists; with ``bare``, else
    ``folder/name`` itself (a name that carries its extension). None when there is none."""
    for ext in IMAGE_SUFFIXES:
        if (folder / f"{name}{ext}").is_file():
            return folder / f"{name}{ext}"
    if bare and (folder / name).is_file():
        return folder / name
    return None


def _find_image(images: Path, name: str) -> Path:
    """The image of a points / masks CSV row (InputError when missing)."""
    found = find_image(images, name)
    if found is None:
        raise InputError(f"{images}: no image file for '{name}' listed in the CSV; add images/{name}.png")
    return found


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
        yx = np.array([[_coordinate(r, "y", root), _coordinate(r, "x", root)] for r in rs], np.float32)
        labels = np.array([index.get(r["label"], -1) for r in rs], np.int64)
        samples.append(PointsSample(name, split, image, yx, labels))
    if not samples:
        raise InputError(f"{root}: no images in split(s) {splits}")
    _warn_unused_points(root, samples, [r for s in samples for r in by_image[s.name]], classes)
    return samples, list(classes)


def _coordinate(row: dict, key: str, root: Path) -> float:
    """``row[key]`` as a finite float; InputError naming the file, the image and the value otherwise."""
    try:
        v = float(row[key])
    except (TypeError, ValueError, KeyError):
        v = math.nan
    if not math.isfinite(v):
        raise InputError(
            f"{root / 'points.csv'}: image {row.get('image')!r} has {key}={row.get(key)!r}; x and y must be "
            "pixel coordinates (numbers)"
        )
    return v


def _warn_unused_points(root: Path, samples: list[PointsSample], rows: list[dict], classes) -> None:
    """Say (a warning: the CLI prints one line) what a points dataset holds that scores cannot use: labels
    that are not among ``classes`` (scored as unlabelled cells: detection only) and points outside their
    image (never matched: they count as misses)."""
    import warnings

    unknown = sorted({r["label"] for r in rows} - set(classes) - {UNLABELED_NAME})
    if unknown:
        n = sum(r["label"] in unknown for r in rows)
        warnings.warn(
            f"{root}: {n} points have labels {unknown[:5]} that are not classes ({', '.join(classes)}); "
            "they count for detection only",
            stacklevel=3,
        )
    outside = {  # beyond the edge pixels' outer border, with a pixel of slack for clicks on the border
        s.name: int(((s.yx < -1.5) | (s.yx > np.array(s.image.shape[:2]) + 0.5)).any(1).sum()) for s in samples
    }
    outside = {k: v for k, v in outside.items() if v}
    if outside:
        first = next(iter(outside))
        warnings.warn(
            f"{root}: {sum(outside.values())} points lie outside their image (e.g. {outside[first]} in "
            f"{first}); check x/y are pixels of the image, not microns",
            stacklevel=3,
        )


# ---------------------------------------------------------------- labels.csv (image classification)


@dataclass
class LabelledImage:
    """One dataset image: ``labels`` are class names (several for multi-label rows ``a;b``).

    In-memory images (annotations from the viewer) carry their pixels in ``image`` (an ``(H, W, C)`` array
    or a Slide) at ``mpp`` µm/px (None: the training data's); ``path`` is then not read.
    """

    name: str
    path: Path
    split: str
    labels: list
    image: object = None
    mpp: float | None = None


def _labelled_image(folder: Path, name: str) -> Path:
    found = find_image(folder, name, bare=True)
    if found is None:
        raise InputError(f"{folder}: no image file for '{name}'")
    return found


def read_labels_csv(root: str | Path) -> tuple[list[LabelledImage], list[str], bool]:
    """Read ``root/labels.csv`` (``image,split,<label column>``; ``a;b`` = several labels).

    Returns (images, sorted class names, multilabel). The label column is the first of
    labels/label/grade/class present, else the third column.
    """
    root = Path(root)
    path = root / "labels.csv"
    if not path.is_file():
        raise InputError(f"{root}: no labels.csv (expected image,split,label; see docs/data-formats.md)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0]:
        raise InputError(f"{path}: needs a header with an 'image' column")
    cols = list(rows[0])
    col = next((c for c in _LABEL_COLUMNS if c in cols), None) or (cols[2] if len(cols) > 2 else None)
    if col is None:
        raise InputError(f"{path}: no label column (expected image,split,label)")
    out = []
    for r in rows:
        labels = [s.strip() for s in (r[col] or "").split(";") if s.strip()]
        out.append(LabelledImage(r["image"], _labelled_image(root / "images", r["image"]), r.get("split", ""), labels))
    classes = sorted({c for s in out for c in s.labels})
    multilabel = any(len(s.labels) != 1 for s in out)
    return out, classes, multilabel


def load_labels_split(root, split: str | None):
    """(images of ``split`` of a labels.csv folder (all when None), classes, multilabel)."""
    images, classes, multi = read_labels_csv(root)
    if split:
        chosen = [s for s in images if s.split == split]
        if not chosen:
            splits = sorted({s.split for s in images})
            raise InputError(f"{root}: no images in split '{split}'; splits: {', '.join(splits)}")
        images = chosen
    return images, classes, multi


def dataset_mpp(folder) -> float | None:
    """The microns per pixel a dataset folder declares in its ``dataset.json`` (``{"mpp": 0.25}``);
    None when the folder has no such file (or ``folder`` is not a folder, e.g. viewer samples)."""
    if not isinstance(folder, (str, Path)):
        return None
    path = Path(folder) / DATASET_JSON
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f'{path}: cannot read it ({e}); write it as {{"mpp": 0.25}}') from None
    if not isinstance(meta, dict) or "mpp" not in meta:
        raise InputError(f'{path}: no "mpp" key; write it as {{"mpp": 0.25}} (microns per pixel of the images)')
    return validate_mpp(meta["mpp"], str(path))


# The annotated data sets under the data root whose scale the project knows (µm/px; see its README): a task
# given one of them with no --mpp and no dataset.json uses its own default, which is that data set's.
BUNDLED_MPP = {"crchisto": 0.55, "monuseg": 0.25, "glas": 0.62}


def data_root() -> Path:
    """The annotated data sets: ``$PATHREVIEW_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("PATHREVIEW_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "data"


def is_bundled(folder) -> bool:
    """Whether ``folder`` is one of ``BUNDLED_MPP``'s data sets under :func:`data_root`."""
    try:
        path = Path(folder).resolve()
        return path.name in BUNDLED_MPP and path.parent == data_root().resolve()
    except (OSError, TypeError):
        return False


def data_mpp(given: float | None, folder) -> float | None:
    """The microns per pixel of a dataset folder's images: ``given`` (``--mpp``) wins, else the folder's
    ``dataset.json``, else None for a bundled data set (:func:`is_bundled`: the task's default is its
    scale). Any other folder that says nothing is refused (InputError naming the folder and the fix),
    as ``detect`` refuses an image of unknown scale."""
    if given is not None:
        return validate_mpp(given, "--mpp")
    mpp = dataset_mpp(folder)
    if mpp is None and isinstance(folder, (str, Path)) and not is_bundled(folder):
        raise InputError(
            f"{folder}: microns per pixel of its images unknown; give --mpp (e.g. 0.5 for 20x, 0.25 for 40x) "
            f'or write {Path(folder) / DATASET_JSON} as {{"mpp": X}}'
        )
    return mpp


def rescale_points_samples(samples: list[PointsSample], factor: float) -> list[PointsSample]:
    """Points samples resampled by ``factor`` (new pixels per old pixel, e.g. 0.25 / 0.55 from 40x to a
    0.55 µm/px model): images with anti-aliasing (uint8 kept), point centres mapped as pixel centres
    (``(c + 0.5) * factor - 0.5``)."""
    from skimage.transform import resize

    if abs(factor - 1.0) < 1e-6:
        return list(samples)
    out = []
    for s in samples:
        h, w = s.image.shape[:2]
        shape = (max(1, round(h * factor)), max(1, round(w * factor)))
        img = resize(s.image, shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
        yx = (np.asarray(s.yx, np.float64) + 0.5) * np.array([shape[0] / h, shape[1] / w]) - 0.5
        out.append(replace(s, image=np.clip(np.rint(img), 0, 255).astype(np.uint8), yx=yx.astype(s.yx.dtype)))
    return out
