"""The enhancer's training data: the detector run once on every annotated image (cached on disk, keyed
by the detector's weights and the data), its detections matched once to the annotations, and the split
into fitted images and the detector's held-out tune images.

Coordinates are pixels of the images, at ``mpp`` µm per pixel.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets import load_points_dataset
from ..detection import CRCHISTO_MPP, detect
from ..errors import InputError, ProgressFn, check_cancel, report
from ..matching import match_points


@dataclass
class CachedImage:
    """Detections on one annotated image: points (pixels), base probs, features, and the annotations.
    ``target``: (N,) class of the matched annotation, -1 when unmatched or class-less."""

    name: str
    yx: np.ndarray
    probs: np.ndarray
    features: np.ndarray
    scores: np.ndarray
    gt_yx: np.ndarray
    gt_labels: np.ndarray
    shape: tuple
    target: np.ndarray = field(default=None)


def _cache_file(det_card, data, split) -> Path:
    w = Path(det_card.path).with_suffix(".safetensors")
    st = w.stat() if w.exists() else None
    key = json.dumps(
        [
            str(w.resolve()),
            st.st_size if st else 0,
            st.st_mtime_ns if st else 0,
            det_card.params,
            str(Path(data).resolve()),
            split,
        ],
        sort_keys=True,
        default=str,
    )
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-pathreview" / "enhancer"
    return root / f"{det_card.name}-{split}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"


def cache_detections(
    data,
    split,
    det_model,
    det_card,
    mpp: float | None = None,
    use_disk: bool = True,
    progress: ProgressFn | None = None,
    cancel=None,
) -> tuple[list[CachedImage], list[str]]:
    """Detect on every image of a points dataset split (disk-cached) -> ([CachedImage], classes).

    ``data``: a points dataset folder, or a list of ``PointsSample`` at ``mpp`` whose labels index the
    detector's classes (annotations from the viewer; ``split`` is ignored and nothing is cached on disk).
    """
    if isinstance(data, (str, Path)):
        samples, classes = load_points_dataset(data, split, classes=list(det_card.classes))
    else:
        samples, classes, use_disk = list(data), list(det_card.classes), False
    mpp = mpp or CRCHISTO_MPP
    path = _cache_file(det_card, data, split) if use_disk else None
    if use_disk and path.exists():
        z = np.load(path)
        names = list(z["names"])
        if names == [s.name for s in samples]:
            return [
                CachedImage(
                    s.name,
                    z[f"{i}_yx"],
                    z[f"{i}_probs"],
                    z[f"{i}_features"],
                    z[f"{i}_scores"],
                    s.yx,
                    s.labels,
                    s.image.shape[:2],
                )
                for i, s in enumerate(samples)
            ], classes
    out = []
    for i, s in enumerate(samples):
        check_cancel(cancel)
        p = detect(s.image, det_model, det_card, mpp=mpp, name=s.name)
        out.append(CachedImage(s.name, p.yx, p.probs, p.features, p.scores, s.yx, s.labels, s.image.shape[:2]))
        report(progress, i + 1, len(samples), f"detect {s.name}: {len(p)} cells")
    if use_disk:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"names": np.array([c.name for c in out])}
        for i, c in enumerate(out):
            arrays.update(
                {f"{i}_yx": c.yx, f"{i}_probs": c.probs, f"{i}_features": c.features, f"{i}_scores": c.scores}
            )
        tmp = path.with_name(path.name + ".partial.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    return out, classes


def assign_targets(cache: list[CachedImage], radius_px: float, method: str = "hungarian") -> None:
    """Match detections to annotations once; set each image's ``target`` (class or -1)."""

    for c in cache:
        m = match_points(c.yx, c.gt_yx, radius_px, method)
        t = np.full(len(c.yx), -1, np.int64)
        t[m.pred_idx] = c.gt_labels[m.gt_idx]
        c.target = t


def _tune_names(det_card, train_names: list[str]) -> list[str]:
    """The detector's held-out tune images (card), else its documented rule (seeded permutation)."""
    names = (det_card.training or {}).get("tune_images")
    if names:
        return [n for n in names if n in train_names]
    seed = int((det_card.training or {}).get("seed", 0))
    n = len(train_names)
    n_tune = min(8, max(1, n // 5)) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    return [train_names[i] for i in order[:n_tune]]


def _split_cache(data, det_model, det_card, mpp, progress, cancel, matching, radius_um):
    cache, classes = cache_detections(data, "train", det_model, det_card, mpp, progress=progress, cancel=cancel)
    assign_targets(cache, radius_um / mpp, matching)
    tune_names = set(_tune_names(det_card, [c.name for c in cache]))
    train_cache = [c for c in cache if c.name not in tune_names]
    tune_cache = [c for c in cache if c.name in tune_names]
    if not tune_cache and not isinstance(data, (str, Path)):  # a few viewer annotations: select on them
        tune_cache = train_cache
    if not tune_cache:
        raise InputError(f"{data}: no held-out training images to select the enhancer on")
    return train_cache, tune_cache, classes
