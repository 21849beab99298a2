"""Compare predictions with annotations: metrics plus the errors themselves (where, what kind).

Points: the same matching (:func:`matching.match_points`) and counting (:class:`metrics.PointScores`) as
``pathreview evaluate detector``, so a comparison of one image gives exactly the numbers that command
reports on a one-image dataset. On top of the metrics it returns what a reviewer needs to look at:
true positives, false positives, missed cells, the match segments, the wrong-class matches, and one
ordered list of errors to step through. Labels: Dice, AJI and panoptic quality (``seg_metrics``).

All coordinates are (row, col) pixels of the prediction; ``mpp`` converts the radius from microns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .metrics import UNLABELED, PointScores
from .points import CellPoints

#: class names that mean "a nucleus without a class" (counted for detection only)
UNLABELED_NAMES = frozenset({"", "unlabeled", "unlabelled", "unclassified", "none", "nan"})


@dataclass
class ErrorItem:
    """One error to review. kind: "fp" (false positive), "fn" (missed cell) or "class" (matched, wrong
    class); yx: (row, col) prediction pixels; pred / gt: indices into the inputs (-1 when not applicable);
    pred_class / gt_class: class names (or ""); diameter: equivalent diameter of the instance in pixels
    (labels only, else 0)."""

    kind: str
    yx: tuple
    pred: int = -1
    gt: int = -1
    pred_class: str = ""
    gt_class: str = ""
    diameter: float = 0.0
    best_iou: float = 0.0
    iou_thresh: float = 0.5

    def describe(self) -> str:
        if self.diameter:  # labels: an unmatched instance
            if self.kind == "fp":
                what, other = f"false positive: predicted nucleus (label {self.pred})", "annotated"
            else:
                what, other = f"missed: annotated nucleus (label {self.gt})", "predicted"
            if self.best_iou > 0:
                return (
                    f"{what} overlaps {other} nuclei at IoU {self.best_iou:.2f} at best "
                    f"(a match needs above {self.iou_thresh:.2f})"
                )
            return f"{what} overlaps no {other} nucleus"
        if self.kind == "fp":
            return "false positive" + (f" ({self.pred_class})" if self.pred_class else "")
        if self.kind == "fn":
            return "missed" + (f" cell ({self.gt_class})" if self.gt_class else "")
        return f"wrong class: predicted {self.pred_class}, annotated {self.gt_class}"


@dataclass
class PointComparison:
    """Result of :func:`compare_points`.

    metrics: the ``PointScores.as_dict`` JSON (detection / per-class P, R, F1, support, mF1, confusion);
    classes: class order of the metrics; tp_pred / tp_gt: (K,) matched index pairs; fp: (P,) unmatched
    prediction indices; fn: (Q,) unmatched annotation indices; wrong_class: (W,) positions into
    tp_pred / tp_gt of matches whose (labelled) annotation has another class; segments: (K, 2, 2) match
    lines [[pred_y, pred_x], [gt_y, gt_x]]; errors: FP, FN and wrong-class items in reading order.
    """

    metrics: dict
    classes: list
    pred_yx: np.ndarray
    gt_yx: np.ndarray
    pred_labels: np.ndarray
    gt_labels: np.ndarray
    tp_pred: np.ndarray
    tp_gt: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    wrong_class: np.ndarray
    segments: np.ndarray
    errors: list = field(default_factory=list)

    #: column names of :meth:`table_rows`
    TABLE_HEADER = ("class", "precision", "recall", "F1", "annotated", "predicted", "matched")

    def table_rows(self) -> list[tuple]:
        """(name, precision, recall, F1, annotated, predicted, matched) per class, then "detection" (all
        cells, class ignored) and "mF1 (classes)" / "weighted F1" (F1 only).

        annotated: annotated cells of the class (the support of ``evaluate detector``); predicted: cells
        the prediction gave the class; matched: annotated cells of the class matched by a prediction of
        the same class (the diagonal of the confusion matrix)."""
        m = self.metrics
        conf = np.asarray(m["confusion"], np.int64).reshape(len(self.classes), len(self.classes))
        rows = []
        for k, (name, c) in enumerate(m["classes"].items()):
            rows.append(
                (
                    name,
                    c["precision"],
                    c["recall"],
                    c["f1"],
                    c["support"],
                    int(np.count_nonzero(self.pred_labels == k)),
                    int(conf[k, k]),
                )
            )
        d = m["detection"]
        rows.append(
            ("detection", d["precision"], d["recall"], d["f1"], len(self.gt_yx), len(self.pred_yx), len(self.tp_pred))
        )
        rows.append(("mF1 (classes)", None, None, m["mF1"], None, None, None))
        rows.append(("weighted F1", None, None, m["weighted_f1"], None, None, None))
        return rows


def _yx_names(x, what: str):
    """(yx (N, 2) float64, class names or None, class list or None) from CellPoints / (yx, names) / array."""
    if isinstance(x, CellPoints):
        names = [x.classes[k] if 0 <= k < len(x.classes) else "" for k in np.asarray(x.labels, int)]
        return np.asarray(x.yx, np.float64).reshape(-1, 2), names, list(x.classes)
    if isinstance(x, tuple) and len(x) == 2:
        yx, lab = x
        yx = np.asarray(yx, np.float64).reshape(-1, 2)
        lab = list(np.asarray(lab).reshape(-1)) if lab is not None else None
        if lab is not None and len(lab) != len(yx):
            raise InputError(f"{what}: {len(yx)} points but {len(lab)} class values")
        return yx, (None if lab is None else [str(v) for v in lab]), None
    arr = np.asarray(x, np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InputError(f"{what}: expected (N, 2) points, got shape {arr.shape}")
    return arr[:, -2:], None, None


def class_index(names, classes) -> np.ndarray:
    """Class names -> indices into ``classes``; unknown / unlabeled names -> ``UNLABELED`` (-1)."""
    index = {c: i for i, c in enumerate(classes)}
    return np.array(
        [index.get(str(n), UNLABELED) if str(n).lower() not in UNLABELED_NAMES else UNLABELED for n in names], np.int64
    ).reshape(-1)


def reading_order(yx: np.ndarray, band: float) -> np.ndarray:
    """Indices sorting points in bands of ``band`` rows, left to right within a band (boustrophedon)."""
    if len(yx) == 0:
        return np.zeros(0, np.int64)
    b = np.floor(yx[:, 0] / max(band, 1e-9)).astype(np.int64)
    x = np.where(b % 2 == 0, yx[:, 1], -yx[:, 1])
    return np.lexsort((x, b))


def compare_points(
    pred,
    gt,
    radius_um: float = 3.3,
    mpp: float | None = None,
    classes=None,
    method: str = "hungarian",
    band_um: float = 50.0,
) -> PointComparison:
    """Match predicted to annotated cells and score them exactly as ``pathreview evaluate detector``.

    Args:
        pred: CellPoints, ``(yx, class_names)`` or an (N, 2) array of (row, col) pixels.
        gt: the annotations, same forms, in the same pixels. Annotation classes not among ``classes`` (or
            named "unlabeled") count for detection only, as in CRCHisto's ``unlabeled``.
        radius_um: largest distance of a match, microns; mpp: microns per pixel (None: radius in pixels).
        classes: class order of the metrics; default the prediction's classes (CellPoints), else the
            sorted prediction class names, else ``["cell"]`` for plain coordinates.
        band_um: height of the reading-order bands of the error list.
    """
    pyx, pnames, pclasses = _yx_names(pred, "prediction")
    gyx, gnames, _ = _yx_names(gt, "annotation")
    if radius_um is None or not np.isfinite(radius_um) or radius_um <= 0:
        raise InputError(f"match radius must be a positive number of microns, got {radius_um}")
    if mpp is not None and (not np.isfinite(mpp) or mpp <= 0):
        raise InputError(f"microns per pixel must be positive, got {mpp}")
    if classes is None:
        if pclasses is not None:
            classes = pclasses
        elif pnames is not None:
            classes = sorted({n for n in pnames if n.lower() not in UNLABELED_NAMES})
        else:
            classes = ["cell"]
    classes = list(classes) or ["cell"]
    if pnames is None:
        plab = np.zeros(len(pyx), np.int64) if len(classes) == 1 else np.full(len(pyx), UNLABELED)
    else:
        plab = class_index(pnames, classes)
    glab = class_index(gnames, classes) if gnames is not None else np.full(len(gyx), UNLABELED)
    scale = mpp if mpp else 1.0
    radius_px = radius_um / scale
    scores = PointScores(classes, radius_px)
    m = _add(scores, pyx, plab, gyx, glab, method)
    metrics = scores.as_dict(radius_um)
    tp_p, tp_g = m.pred_idx, m.gt_idx
    fp, fn = m.unmatched_pred, m.unmatched_gt
    pl, gl = plab[tp_p], glab[tp_g]
    wrong = np.flatnonzero((gl != UNLABELED) & (pl != UNLABELED) & (pl != gl))
    seg = np.stack([pyx[tp_p], gyx[tp_g]], 1) if len(tp_p) else np.zeros((0, 2, 2))
    name = lambda lab: classes[lab] if lab >= 0 else ""
    items = (
        [ErrorItem("fp", tuple(map(float, pyx[i])), pred=int(i), pred_class=name(plab[i])) for i in fp]
        + [ErrorItem("fn", tuple(map(float, gyx[j])), gt=int(j), gt_class=name(glab[j])) for j in fn]
        + [
            ErrorItem(
                "class",
                tuple(map(float, gyx[tp_g[k]])),
                pred=int(tp_p[k]),
                gt=int(tp_g[k]),
                pred_class=name(pl[k]),
                gt_class=name(gl[k]),
            )
            for k in wrong
        ]
    )
    if items:
        order = reading_order(np.array([e.yx for e in items]), band_um / scale)
        items = [items[i] for i in order]
    return PointComparison(metrics, classes, pyx, gyx, plab, glab, tp_p, tp_g, fp, fn, wrong, seg, items)


def _add(scores: PointScores, pyx, plab, gyx, glab, method: str = "hungarian"):
    """PointScores.add, with predictions of no class (-1) kept out of the per-class counts."""
    from .matching import match_points

    m = match_points(pyx, gyx, scores.radius, method)
    if (plab >= 0).all():
        return scores.add(pyx, plab, gyx, glab, matches=m)
    # Unclassed predictions: count them for detection; for classes, treat their matched annotations
    # as unjudged (like predictions matched to unlabeled nuclei) and leave unmatched ones out.
    glab_judged = glab.copy()
    glab_judged[m.gt_idx[plab[m.pred_idx] < 0]] = UNLABELED
    scores.add(pyx, np.where(plab < 0, 0, plab), gyx, glab_judged, matches=m)
    fp_unclassed = np.intersect1d(m.unmatched_pred, np.flatnonzero(plab < 0))
    scores.cls_fp[0] -= len(fp_unclassed)
    return m


# ------------------------------------------------------------------------------------------ labels


def compare_labels(pred: np.ndarray, gt: np.ndarray, iou_thresh: float = 0.5) -> dict:
    """Dice (foreground), AJI and panoptic quality of two label images of the same shape, computed by
    :func:`seg_metrics.score_pair`, the scoring of ``pathreview evaluate segmenter``: on a segmenter's
    labels and an image's instance mask it gives exactly that command's per-image numbers.

    An annotation that is a binary mask (one label value over many regions, e.g. a 0/255 PNG) has no
    instances: Dice only, the instance entries None, and ``"binary": True``.
    Returns ``{"dice", "aji", "pq", "dq", "sq", "tp", "fp", "fn", "n_pred", "n_gt", "binary",
    "iou_thresh"}``.
    """
    from .seg_metrics import is_binary_mask, score_pair

    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise InputError(
            f"labels: prediction shape {pred.shape} differs from annotation {gt.shape}; "
            "compare layers of the same image and level"
        )
    binary = is_binary_mask(gt)
    res = score_pair(pred, gt, instances=not binary, iou_thresh=iou_thresh)
    res.update(binary=binary, iou_thresh=float(iou_thresh))
    return res


def label_errors(pred: np.ndarray, gt: np.ndarray, iou_thresh: float = 0.5, band: float = 100.0) -> list:
    """Unmatched instances (IoU <= ``iou_thresh``) as ErrorItems at their centroids: predicted -> "fp",
    annotated -> "fn"; in reading order (bands of ``band`` pixels)."""
    from scipy import ndimage

    from .seg_metrics import _pair_iou, contingency

    pred, gt = np.asarray(pred), np.asarray(gt)
    inter, gt_area, pred_area = contingency(pred, gt)
    g_ids, p_ids = np.unique(gt[gt != 0]), np.unique(pred[pred != 0])
    g_ok, p_ok = np.zeros(len(g_ids), bool), np.zeros(len(p_ids), bool)
    g_best, p_best = np.zeros(len(g_ids)), np.zeros(len(p_ids))
    if inter.nnz:
        iou = _pair_iou(inter, gt_area, pred_area)
        good = iou > iou_thresh
        g_ok[inter.row[good]] = True
        p_ok[inter.col[good]] = True
        np.maximum.at(g_best, inter.row, iou)
        np.maximum.at(p_best, inter.col, iou)
    items = []
    for ids, ok, area, best, img, kind in (
        (p_ids, p_ok, pred_area, p_best, pred, "fp"),
        (g_ids, g_ok, gt_area, g_best, gt, "fn"),
    ):
        miss = ids[~ok]
        if len(miss):
            cents = ndimage.center_of_mass(np.ones(img.shape, np.uint8), img, miss)
            diam = 2.0 * np.sqrt(area[~ok] / np.pi)
            for lab, c, d, b in zip(miss, cents, diam, best[~ok]):
                items.append(
                    ErrorItem(
                        kind,
                        tuple(float(v) for v in c[-2:]),
                        pred=int(lab) if kind == "fp" else -1,
                        gt=int(lab) if kind == "fn" else -1,
                        diameter=float(max(d, 1.0)),
                        best_iou=float(b),
                        iou_thresh=float(iou_thresh),
                    )
                )
    if items:
        order = reading_order(np.array([e.yx for e in items]), band)
        items = [items[i] for i in order]
    return items
