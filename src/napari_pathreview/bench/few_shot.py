"""``bench few-shot``: leave-one-dataset-out adaptation of the shipped detector (CRCHisto) to MoNuSeg.

MoNuSeg's nuclei are points here: the centroids of its instance masks, without cell types. One image
(the annotated field: the one at the median nucleus count) is fine-tuned on with ``train_detector``'s
defaults, the other images are evaluated, zero-shot and few-shot, at MoNuSeg's 0.25 µm/px; the
fine-tuned model is also evaluated on CRCHisto's validation split (forgetting check). The table of
docs/model-cards/detector.md ("Few-shot adaptation") is this bench's output.
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from ..backend.errors import InputError
from .common import bench, data_root

MONUSEG_MPP = 0.25  # µm per pixel of the MoNuSeg images (40x)
TARGETS = {"few_shot_det_f1": 0.75, "forgetting_det_f1": 0.75, "train_seconds": 600.0}


def monuseg_points(root: Path) -> tuple[dict, str]:
    """-> ({image name: (N, 2) nucleus centroids (row, col) in pixels at 0.25 µm/px}, the annotated
    field's name): every image of ``root/splits.csv`` with an instance mask; the field is the image whose
    nucleus count is the median (ties: the first name)."""
    from skimage.io import imread
    from skimage.measure import regionprops

    splits = root / "splits.csv"
    if not splits.is_file():
        raise InputError(f"{root}: no splits.csv; bench few-shot needs MoNuSeg's images/, masks/ and splits.csv")
    with open(splits, newline="") as fh:
        names = sorted(r["image"] for r in csv.DictReader(fh) if r.get("mask") == "instance")
    if len(names) < 2:
        raise InputError(f"{root}: bench few-shot needs at least 2 images with instance masks, found {len(names)}")
    cents = {n: np.array([p.centroid for p in regionprops(imread(root / "masks" / f"{n}.png"))]) for n in names}
    med = float(np.median([len(c) for c in cents.values()]))
    field = min(cents, key=lambda n: (abs(len(cents[n]) - med), n))
    return cents, field


def _write_points(folder: Path, root: Path, cents: dict, field: str) -> None:
    """A points dataset at 0.25 µm/px: images linked, every nucleus ``unlabeled``; ``field`` is the
    ``train`` split, the rest ``validation``."""
    (folder / "images").mkdir(parents=True)
    with open(folder / "points.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "split", "x", "y", "label"])
        for name, yx in cents.items():
            (folder / "images" / f"{name}.png").symlink_to((root / "images" / f"{name}.png").resolve())
            for y, x in yx:
                w.writerow([name, "train" if name == field else "validation", f"{x:.3f}", f"{y:.3f}", "unlabeled"])


def field_sample(root: Path, name: str, yx: np.ndarray, mpp: float):
    """The annotated field as a ``PointsSample`` at the model's ``mpp``: the image resampled (bilinear,
    anti-aliased) and the centroids mapped with the pixel-centre convention ``(c + 0.5) s - 0.5``."""
    from skimage.io import imread
    from skimage.transform import rescale

    from ..backend.datasets import PointsSample

    s = MONUSEG_MPP / mpp
    img = imread(root / "images" / f"{name}.png")[..., :3]
    small = rescale(img, s, order=1, anti_aliasing=True, channel_axis=-1, preserve_range=True)
    small = np.clip(np.round(small), 0, 255).astype(np.uint8)
    pts = ((yx + 0.5) * s - 0.5).astype(np.float32)
    return PointsSample(name, "train", small, pts, -np.ones(len(pts), np.int64))


def _scores(res: dict) -> dict:
    d = res["detection"]
    return {
        "det_f1": round(d["f1"], 4),
        "precision": round(d["precision"], 4),
        "recall": round(d["recall"], 4),
        "weighted_f1": round(res["weighted_f1"], 4),
    }


@bench("few-shot")
def bench_few_shot(init: str = "detector-crchisto", seed: int = 0, device: str = "cpu") -> dict:
    """Zero-shot and few-shot det F1 / weighted F1 on the MoNuSeg images other than the annotated field
    (0.25 µm/px, match radius 3.3 µm), the fine-tuned model's CRCHisto validation scores (forgetting
    check, against ``init``'s), and the fine-tune's seconds (wall, and CPU seconds of this process).
    The fine-tune is ``train_detector(field, init=init)`` with nothing else set: the few-shot defaults."""
    import torch

    from ..backend.detection import DetectorTrainOptions, evaluate_detector, train_detector
    from ..backend.weights import resolve

    root = data_root()
    mon, crc = root / "monuseg", root / "crchisto"
    if not (mon / "masks").is_dir() or not (crc / "images").is_dir():
        raise InputError(
            f"bench few-shot needs MoNuSeg (monuseg/ with images/, masks/, splits.csv) and CRCHisto "
            f"(crchisto/) at {root}; set PATHREVIEW_DATA to their folder (docs/data-formats.md)"
        )
    cents, field = monuseg_points(mon)
    mpp = resolve(init, "detector")[1].mpp
    with tempfile.TemporaryDirectory() as tmp:
        points = Path(tmp) / "monuseg-points"
        _write_points(points, mon, cents, field)

        def on_monuseg(w):
            return _scores(evaluate_detector(points, "validation", weights=w, mpp=MONUSEG_MPP, device=device))

        zero = on_monuseg(init)
        crc_init = _scores(evaluate_detector(crc, "validation", weights=init, device=device))
        sample = field_sample(mon, field, cents[field], mpp)
        out = Path(tmp) / "few-shot"
        c0, t0 = time.process_time(), time.perf_counter()
        _, card = train_detector([sample], out, DetectorTrainOptions(init=init, seed=seed, device=device))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        weights = str(out) + ".safetensors"
        few = on_monuseg(weights)
        crc_few = _scores(evaluate_detector(crc, "validation", weights=weights, device=device))
    forgetting = {"init": crc_init, "few_shot": crc_few, "passes": crc_few["det_f1"] >= TARGETS["forgetting_det_f1"]}
    summary = (
        f"zero-shot det F1 {zero['det_f1']:.3f} / wF1 {zero['weighted_f1']:.3f}; few-shot det F1 "
        f"{few['det_f1']:.3f} / wF1 {few['weighted_f1']:.3f}; forgetting check (CRCHisto validation) det F1 "
        f"{crc_init['det_f1']:.3f} -> {crc_few['det_f1']:.3f}, wF1 {crc_init['weighted_f1']:.3f} -> "
        f"{crc_few['weighted_f1']:.3f} ({'pass' if forgetting['passes'] else 'FAIL'}); fine-tune {wall:.0f} s"
    )
    return {
        "name": "few-shot",
        "reference": "the issue's budget: 10 min of fine-tuning on 2 CPU cores",
        "ours_s": round(wall, 1),
        "reference_s": TARGETS["train_seconds"],
        "ratio": round(wall / TARGETS["train_seconds"], 3),
        "init": init,
        "field": field,
        "field_nuclei": len(cents[field]),
        "eval_images": len(cents) - 1,
        "eval_nuclei": int(sum(len(c) for n, c in cents.items() if n != field)),
        "torch_threads": torch.get_num_threads(),
        "recipe": {k: card.training[k] for k in ("epochs", "crops_per_image", "lr", "freeze_bn", "distill")},
        "train_cpu_s": round(cpu, 1),
        "targets": TARGETS,
        "zero_shot": zero,
        "few_shot": {**few, "passes": few["det_f1"] >= TARGETS["few_shot_det_f1"]},
        "forgetting": forgetting,
        "seconds": round(wall, 1),
        "summary": summary,
    }
