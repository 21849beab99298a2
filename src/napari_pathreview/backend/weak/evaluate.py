"""Evaluating weak-cells models: cell types at the annotated positions, per stage-1 variant, the ensemble,
the two-stage model and the supervised detector."""

from __future__ import annotations

import numpy as np

from ..datasets import load_points_dataset
from ..detection import normalise as det_normalise
from ..detection import predict_maps, stain_normalised
from ..errors import ProgressFn, check_cancel, report
from ..weights import load_model
from .config import ROW_KEYS
from .infer import load_weak_cells
from .maps import cam_probs, cell_types, seg_probs
from .scores import type_scores


def evaluate_weak_cells(
    data,
    split: str = "validation",
    weights=None,
    device=None,
    detector=None,
    limit: int | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
) -> dict:
    """Cell types at the annotated (labelled) positions of ``split``, per variant.

    Rows: ``cam``, ``puzzle_cam``, ``sc_cam`` (each its own CAM with TTA, argmax in a box of
    ``cell_radius_px``), ``cam_ensemble`` (the three), ``two_stage`` (the U-Net on the pseudo-labels) and
    ``supervised``: the shipped detector's class-probability map *sampled at the annotated position*
    (no detection/matching, so every row types exactly the same cells).
    """
    seg, card, cams = load_weak_cells(weights, device)
    det, dcard = load_model(detector, "detector", device)
    samples, classes = load_points_dataset(data, split, classes=list(card.classes))
    samples = samples[:limit] if limit else samples
    p, norm = card.params, card.normalisation
    scales, flips, r = tuple(p.get("tta_scales", (1.0,))), bool(p.get("tta_flips")), int(p.get("cell_radius_px", 3))
    rows = {k: [] for k in ("cam", "puzzle_cam", "sc_cam", "cam_ensemble", "two_stage", "supervised")}
    gts = []
    didx = [dcard.classes.index(c) for c in classes]
    for i, s in enumerate(samples):
        check_cancel(cancel)
        gts.append(s.labels)
        per_model = {v: cam_probs(m, s.image, norm, scales, flips) for v, m in cams.items()}
        for v, pr in per_model.items():
            rows[ROW_KEYS[v]].append(cell_types(pr, s.yx, r)[0])
        ens = np.mean(list(per_model.values()), 0)  # = cam_probs of the list: same TTA count per model
        rows["cam_ensemble"].append(cell_types(ens, s.yx, r)[0])
        rows["two_stage"].append(cell_types(seg_probs(seg, s.image, norm)[1:], s.yx, r)[0])
        dp = predict_maps(det, det_normalise(stain_normalised(s.image, dcard), dcard))["probs"][didx]
        rows["supervised"].append(cell_types(dp, s.yx, 0)[0])
        report(progress, i + 1, len(samples), s.name)
    gt = np.concatenate(gts)
    res = {k: type_scores(np.concatenate(v), gt, classes) for k, v in rows.items()}
    sup = res["supervised"]["mF1"]
    res["ratio_two_stage_to_supervised"] = round(res["two_stage"]["mF1"] / sup, 4) if sup else None
    res.update(
        {
            "split": split,
            "n_images": len(samples),
            "weights": card.name,
            "threshold": p["threshold"],
            "supervised_method": "detector class map sampled at the annotated position",
            "classes": list(classes),
        }
    )
    return res
