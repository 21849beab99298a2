"""Loading a weak-cells model (its U-Net and the stage-1 CAM models it names) and running it on an image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ProgressFn, check_cancel, report
from ..points import CellPoints
from ..slides import check_model_scale
from ..weights import load_model, reference, resolve
from .maps import cam_probs, cell_types, pseudo_labels, seg_probs


def load_weak_cells(weights=None, device=None):
    """(segmenter, its card, {variant: CAM model}) for a name/path (shipped ``weak-cells`` when None).

    The CAM models named in the card are looked up beside the segmenter's file first, then by name.
    """
    path, card = resolve(weights or "weak-cells", "weak-cells")
    seg, card = load_model(path, "weak-cells", device)
    cams = {v: load_model(r, "weak-cam", device)[0] for v, r in cam_references(path).items()}
    return seg, card, cams


def cam_references(weights) -> dict:
    """``{variant: name or absolute path}`` of the stage-1 CAM models a weak-cells model uses: a card's
    name is looked up beside the segmenter's file first, then among the registered models."""
    path, card = resolve(weights, "weak-cells")
    refs = {}
    for v, name in card.params["cams"].items():
        beside = Path(name) if Path(name).is_absolute() else path.with_name(f"{name}.safetensors")
        refs[v] = reference(beside if beside.exists() else name, "weak-cam")
    return refs


@dataclass
class WeakCellsResult:
    """Output of :func:`infer`, all at the input's pixel grid.

    cams ``(K, H, W)`` float32 presence probabilities (CAM ensemble + TTA); pseudo ``(H, W)`` int32
    (0 background, 1..K); segmentation ``(H, W)`` int32 (stage-2 argmax, same coding); points: cells with
    their weakly supervised types (CellPoints, input pixels).
    """

    cams: np.ndarray
    pseudo: np.ndarray
    segmentation: np.ndarray
    points: object
    classes: list
    threshold: float
    params: dict = field(default_factory=dict)


def infer(
    img: np.ndarray,
    yx: np.ndarray,
    seg,
    card,
    cams: dict,
    mpp: float | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
) -> WeakCellsResult:
    """Run the weak-cells models on an (H, W, 3) uint8 image at ``mpp`` µm/px (None: the models')
    and type the cells at ``yx`` ``(N, 2)`` (input pixels)."""
    import torch
    import torch.nn.functional as F
    from skimage.transform import resize

    h, w = img.shape[:2]
    f = check_model_scale(mpp, card.mpp, name) if mpp else 1.0
    small = (
        img
        if abs(f - 1) < 1e-3
        else (
            resize(
                img, (max(8, round(h * f)), max(8, round(w * f))), order=1, preserve_range=True, anti_aliasing=f < 1
            ).astype(np.uint8)
        )
    )
    p = card.params
    report(progress, 0, 3, "CAMs")
    norm = card.normalisation  # the CAM models' too (train_weak_cells writes the same in every card)
    scales, flips = tuple(p.get("tta_scales", (1.0,))), bool(p.get("tta_flips"))
    probs = cam_probs(list(cams.values()), small, norm, scales, flips)
    check_cancel(cancel)
    report(progress, 1, 3, "U-Net")
    sp = seg_probs(seg, small, norm)
    check_cancel(cancel)
    labels, scores = cell_types(sp[1:], np.asarray(yx, np.float32).reshape(-1, 2) * f, int(p.get("cell_radius_px", 3)))

    def up(a):
        if a.shape[-2:] == (h, w):
            return a
        return F.interpolate(torch.from_numpy(a)[None], size=(h, w), mode="bilinear", align_corners=False)[0].numpy()

    probs_in, sp_in = up(probs), up(sp)
    pts = CellPoints(
        np.asarray(yx, np.float32).reshape(-1, 2),
        labels,
        scores.max(1) if len(labels) else np.zeros(0, np.float32),
        scores,
        list(card.classes),
        mpp=mpp,
        source=card.name,
        colors=dict(card.colors),
    )
    report(progress, 2, 3, f"{len(pts)} cells typed")
    return WeakCellsResult(
        probs_in.astype(np.float32),
        pseudo_labels(probs_in, float(p["threshold"])),
        sp_in.argmax(0).astype(np.int32),
        pts,
        list(card.classes),
        float(p["threshold"]),
        {"mpp": mpp, "model_mpp": card.mpp, "name": name},
    )
