"""Point-detection and cell-classification metrics (precision / recall / F1 per class, mF1).

Counting follows the CRCHisto papers: detection counts every annotated nucleus; classification counts
only annotated nuclei that carry a class (``unlabeled`` is detection-only). A matched cell whose class
is wrong counts as a false negative of the true class and a false positive of the predicted class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .matching import Matches, match_points

UNLABELED = -1


def _prf(tp: float, fp: float, fn: float) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


@dataclass
class PointScores:
    """Accumulates detection and per-class counts over images.

    ``classes``: class names; labels are indices into it, ``UNLABELED`` (-1) for nuclei without class.
    """

    classes: Sequence[str]
    radius: float
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n_images: int = 0
    confusion: np.ndarray = field(default=None)  # (C, C) rows: annotated class, cols: predicted class
    cls_fp: np.ndarray = field(default=None)
    cls_fn: np.ndarray = field(default=None)

    def __post_init__(self):
        c = len(self.classes)
        self.confusion = np.zeros((c, c), np.int64)
        self.cls_fp = np.zeros(c, np.int64)
        self.cls_fn = np.zeros(c, np.int64)

    def add(self, pred_yx, pred_label, gt_yx, gt_label, matches: Matches | None = None) -> Matches:
        """Add one image. Coordinates (N, 2) in the same unit as ``radius``; labels (N,) ints."""
        pred_label = np.asarray(pred_label, np.int64).reshape(-1)
        gt_label = np.asarray(gt_label, np.int64).reshape(-1)
        m = matches if matches is not None else match_points(pred_yx, gt_yx, self.radius)
        self.n_images += 1
        self.tp += len(m.pred_idx)
        self.fp += m.n_pred - len(m.pred_idx)
        self.fn += m.n_gt - len(m.gt_idx)
        c = len(self.classes)
        pl, gl = pred_label[m.pred_idx], gt_label[m.gt_idx]
        labelled = gl != UNLABELED
        np.add.at(self.confusion, (gl[labelled], pl[labelled]), 1)
        # Unmatched predictions are false positives of their class; unmatched labelled nuclei are
        # false negatives of theirs. Predictions matched to unlabeled nuclei are not judged for class.
        fp_lab = pred_label[m.unmatched_pred]
        self.cls_fp += np.bincount(fp_lab[fp_lab >= 0], minlength=c)[:c]
        fn_lab = gt_label[m.unmatched_gt]
        self.cls_fn += np.bincount(fn_lab[fn_lab >= 0], minlength=c)[:c]
        return m

    def as_dict(self, radius_um: float | None = None) -> dict:
        """The JSON reported by ``pathreview evaluate detector``."""
        det = _prf(self.tp, self.fp, self.fn)
        per = {}
        diag = np.diag(self.confusion)
        for k, name in enumerate(self.classes):
            tp = int(diag[k])
            fp = int(self.confusion[:, k].sum() - tp + self.cls_fp[k])
            fn = int(self.confusion[k, :].sum() - tp + self.cls_fn[k])
            per[name] = {**_prf(tp, fp, fn), "support": int(self.confusion[k, :].sum() + self.cls_fn[k])}
        f1s = np.array([v["f1"] for v in per.values()])
        sup = np.array([v["support"] for v in per.values()], float)
        return {
            "detection": det,
            "classes": per,
            "mF1": float(f1s.mean()) if len(f1s) else 0.0,
            "weighted_f1": float((f1s * sup).sum() / sup.sum()) if sup.sum() else 0.0,
            "n_images": self.n_images,
            "radius_um": radius_um if radius_um is not None else self.radius,
            "confusion": self.confusion.tolist(),
        }
