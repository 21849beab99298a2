"""``bench precision``: each shipped model at fp32 and at reduced precision on its held-out images;
``--record`` writes the verified precisions into the shipped cards."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import numpy as np

from ..backend import pipelines
from ..backend.classification.model_input import decide
from ..backend.datasets import load_labels_split, load_points_dataset
from ..backend.errors import InputError
from ..backend.matching import match_points
from ..backend.metrics import PointScores
from ..backend.precision import native, resolve
from ..backend.seg_metrics import dice, score_pair
from ..backend.segmentation import load_masks_dataset
from ..backend.slides import open_slide
from ..backend.weights import default_model
from ..backend.weights import resolve as resolve_weights
from .common import bench, cpu_flags, data_root

PRECISION_BOUNDS = {
    "matched_f1": 0.99,
    "metric_delta": 0.005,
    "label_dice": 0.995,
    "same_class": 0.995,
    "map_pearson": 0.99,
}
MAP_IMAGES = 12  # heat maps compared on the first images of the held-out split (all images for accuracy)


def _outputs_agree(a, b, radius_px: float) -> dict:
    """Two CellPoints of one image: matched-cell F1 between them and the share of matched cells that keep
    their class."""
    m = match_points(b.yx, a.yx, radius_px)
    n = len(m.pred_idx)
    f1 = 2 * n / max(1, len(a) + len(b)) if (len(a) or len(b)) else 1.0
    same = float((a.labels[m.gt_idx] == b.labels[m.pred_idx]).mean()) if n else 1.0
    return {"n": n, "f1": f1, "same": same, "na": len(a), "nb": len(b)}


def _timed_runs(fn, p: str):
    """``fn(p)`` once to warm up (first-call allocations, oneDNN kernels), then timed: (output, seconds)."""
    fn(p)
    t = time.perf_counter()
    out = fn(p)
    return out, time.perf_counter() - t


def _points_entry(task: str, run, samples, card, precisions) -> dict:
    """A detector's or enhancer's entry: ``run(precision)`` -> one CellPoints per sample, compared at each
    of ``precisions`` with fp32 (matched-cell F1, same class) and with the annotations (weighted F1)."""
    radius_px = 6.0
    ref, t_ref = _timed_runs(run, "fp32")
    entry = {"task": task, "images": len(samples), "fp32_seconds": round(t_ref, 2), "by_precision": {}}
    base = PointScores(card.classes, radius_px)
    for s, c in zip(samples, ref):
        base.add(c.yx, c.labels, s.yx, s.labels)
    wf_ref = base.as_dict(radius_px * card.mpp)["weighted_f1"]
    entry["fp32_weighted_f1"] = round(wf_ref, 4)
    for p in precisions:
        out, t = _timed_runs(run, p)
        sc = PointScores(card.classes, radius_px)
        agree = [_outputs_agree(a, b, radius_px) for a, b in zip(ref, out)]
        for s, c in zip(samples, out):
            sc.add(c.yx, c.labels, s.yx, s.labels)
        wf = sc.as_dict(radius_px * card.mpp)["weighted_f1"]
        n = sum(a["n"] for a in agree)
        f1 = 2 * n / max(1, sum(a["na"] + a["nb"] for a in agree))
        same = sum(a["same"] * a["n"] for a in agree) / max(1, n)
        ok = (
            f1 >= PRECISION_BOUNDS["matched_f1"]
            and abs(wf - wf_ref) <= PRECISION_BOUNDS["metric_delta"]
            and same >= PRECISION_BOUNDS["same_class"]
        )
        entry["by_precision"][p] = {
            "matched_f1": round(f1, 4),
            "same_class": round(same, 4),
            "weighted_f1": round(wf, 4),
            "delta": round(wf - wf_ref, 4),
            "seconds": round(t, 2),
            "time_ratio": round(t / t_ref, 3),
            "verified": ok,
        }
    return entry


def _point_models(root: Path, device: str, precisions, limit: int | None) -> dict:
    """Entries of the default detector and enhancer, on the CRCHisto validation images."""
    samples, _ = load_points_dataset(root / "crchisto", "validation")
    samples = samples[:limit] if limit else samples
    det_name, enh_name = default_model("detector"), default_model("enhancer")
    card = pipelines.get_model(det_name, "detector", device)[1]

    def det_run(p):
        return [
            pipelines.detect(
                s.image, pipelines.DetectOptions(weights=det_name, mpp=card.mpp, device=device, precision=p)
            )
            for s in samples
        ]

    def enh_run(p):
        return [
            pipelines.enhance(
                s.image,
                options=pipelines.EnhanceOptions(
                    weights=enh_name, mpp=card.mpp, device=device, return_attention=False, precision=p
                ),
            ).enhanced
            for s in samples
        ]

    return {
        det_name: _points_entry("detector", det_run, samples, card, precisions),
        enh_name: _points_entry("enhancer", enh_run, samples, card, precisions),
    }


def _segmenter_entry(name: str, root: Path, device: str, precisions, limit: int | None) -> dict:
    """A segmenter's entry on its held-out MoNuSeg images: labels Dice with fp32's labels, and Dice with
    the annotations, at each of ``precisions``."""
    scard = pipelines.get_model(name, "segmenter", device)[1]
    held = scard.training.get("heldout_images") or []
    segs = load_masks_dataset(root / "monuseg", names=held)
    segs = segs[:limit] if limit else segs
    data_mpp = scard.training.get("data_mpp", 0.25)

    def seg_run(p):
        return [
            pipelines.segment(
                s.image, pipelines.SegmentOptions(weights=name, mpp=data_mpp, device=device, precision=p)
            ).labels
            for s in segs
        ]

    ref, t_ref = _timed_runs(seg_run, "fp32")
    m_ref = [score_pair(r, s.labels, s.instances) for r, s in zip(ref, segs)]
    d_ref = float(np.mean([m["dice"] for m in m_ref]))
    entry = {
        "task": "segmenter",
        "images": len(segs),
        "fp32_seconds": round(t_ref, 2),
        "fp32_dice": round(d_ref, 4),
        "by_precision": {},
    }
    for p in precisions:
        out, t = _timed_runs(seg_run, p)
        ld = float(np.mean([dice(a > 0, b > 0) for a, b in zip(ref, out)]))
        m = [score_pair(o, s.labels, s.instances) for o, s in zip(out, segs)]
        d = float(np.mean([x["dice"] for x in m]))
        ok = ld >= PRECISION_BOUNDS["label_dice"] and abs(d - d_ref) <= PRECISION_BOUNDS["metric_delta"]
        entry["by_precision"][p] = {
            "label_dice": round(ld, 5),
            "dice": round(d, 4),
            "delta": round(d - d_ref, 4),
            "seconds": round(t, 2),
            "time_ratio": round(t / t_ref, 3),
            "verified": ok,
        }
    return entry


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two maps; two constant maps agree (1.0) when equal, else not (0.0)."""
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _explain_run(name: str, method: str, images, device: str, p: str) -> list:
    opts = pipelines.ExplainOptions(weights=name, method=method, device=device, precision=p)
    return [pipelines.explain(im, opts) for im in images]


def _classifier_entry(name: str, root: Path, device: str, precisions, limit: int | None) -> dict:
    """A classifier's (or ViT's) entry on the GlaS testA images: every heat-map method's maps compared
    with fp32's (Pearson r per map, on the first ``MAP_IMAGES``), and the accuracy of its decisions at
    each precision against fp32's (all images, Grad-CAM's or rollout's run)."""
    card = pipelines.get_classifier(name, device)[1]
    rows = load_labels_split(root / "glas", "testA")[0]
    rows = rows[:limit] if limit else rows
    images = [open_slide(r.path) for r in rows]
    target = np.array([card.classes.index(r.labels[0]) for r in rows])
    methods = ("rollout",) if card.task == "vit" else ("cam", "gradcam", "lrp-epsilon", "lrp-a1b0")
    main = methods[0] if card.task == "vit" else "gradcam"
    t = time.perf_counter()
    ref = {m: _explain_run(name, m, images if m == main else images[:MAP_IMAGES], device, "fp32") for m in methods}
    t_ref = time.perf_counter() - t

    def accuracy(results) -> float:
        return float((decide(np.stack([r.probs for r in results]), card).argmax(1) == target).mean())

    acc_ref = accuracy(ref[main])
    entry = {"task": card.task, "images": len(images), "fp32_seconds": round(t_ref, 2), "fp32_accuracy": acc_ref}
    entry["by_precision"] = {}
    for p in precisions:
        t = time.perf_counter()
        out = {m: _explain_run(name, m, images if m == main else images[:MAP_IMAGES], device, p) for m in methods}
        sec = time.perf_counter() - t
        r = {
            m: min(_pearson(a.maps[k], b.maps[k]) for a, b in zip(ref[m], out[m]) for k in range(len(a.maps)))
            for m in methods
        }
        acc = accuracy(out[main])
        ok = (
            min(r.values()) >= PRECISION_BOUNDS["map_pearson"]
            and abs(acc - acc_ref) <= PRECISION_BOUNDS["metric_delta"]
        )
        entry["by_precision"][p] = {
            "min_map_pearson": {m: round(v, 4) for m, v in r.items()},
            "accuracy": acc,
            "delta": round(acc - acc_ref, 4),
            "seconds": round(sec, 2),
            "time_ratio": round(sec / t_ref, 3),
            "verified": ok,
        }
    return entry


def _record(res: dict) -> None:
    """Write each model's verified precisions (and what was measured) into its shipped card's
    ``training.precision``, atomically (a temporary file renamed over the card)."""

    for name, entry in res["models"].items():
        path = Path(resolve_weights(name, entry["task"])[0]).with_suffix(".json")
        card_json = json.loads(path.read_text())
        card_json["training"]["precision"] = {
            "verified": [p for p, r in entry["by_precision"].items() if r["verified"]],
            "measured": entry,
            "device": res["device"],
            "bounds": PRECISION_BOUNDS,
            "command": "pathreview bench precision --record --json",
            "date": datetime.date.today().isoformat(),
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(card_json, indent=2) + "\n")
        tmp.replace(path)


@bench("precision")
def bench_precision(precisions=("bf16",), device: str = "cpu", record: bool = False, limit: int | None = None) -> dict:
    """Each shipped detector / enhancer / segmenter run at fp32 and at each reduced precision on its
    held-out images (CRCHisto validation; the segmenters' held-out MoNuSeg images): outputs compared with
    each other (matched-cell F1 and same class; labels Dice) and the task metric with the annotations
    (weighted F1; Dice / AJI), time ratio against fp32 measured in the same run (second pass, warm).
    A precision is *verified* for a model when every bound of ``PRECISION_BOUNDS`` holds; ``record``
    writes the verified list into the shipped card (``training.precision``), which ``--precision auto`` reads.
    """
    import torch

    root = data_root()
    if not all((root / d).is_dir() for d in ("crchisto", "monuseg", "glas")):
        raise InputError(
            f"bench precision needs the annotated data sets (crchisto/, monuseg/, glas/) at {root}; "
            "set PATHREVIEW_DATA to their folder (docs/data-formats.md)"
        )
    dev = torch.device(device)
    for p in precisions:
        resolve(p, dev)  # refuses fp16 on a CPU
    res = {
        "device": str(dev),
        "native": list(native(dev.type)),
        "cpu_flags": cpu_flags(),
        "bounds": PRECISION_BOUNDS,
        "models": _point_models(root, device, precisions, limit),
    }
    for name in ("segmenter-monuseg-wide", "segmenter-monuseg"):
        res["models"][name] = _segmenter_entry(name, root, device, precisions, limit)
    for name in (default_model("classifier"), default_model("vit")):
        res["models"][name] = _classifier_entry(name, root, device, precisions, limit)
    if record:
        _record(res)
        res["recorded"] = sorted(res["models"])
    return res
