"""The detector's decoding threshold chosen so that it transfers (issue 27 item 2): leave one domain out.

Two held-out domains, neither fitted nor reported on: CRCHisto's tune images (the 8 training images the
card's ``training.tune_images`` names; 0.55 µm/px) and the ``validation`` fold of a points dataset made by
``scripts/monuseg_points.py`` (MoNuSeg binary-mask images, resampled from its dataset.json mpp). For each
threshold of the grid, detection F1 is measured on each domain (the card's smoothing and minimum distance,
match radius 3.3 µm). Leave-one-domain-out: the threshold best on one domain, scored on the other. The pick:
the threshold with the highest mean of the two domains' F1. ``--write W2`` writes a copy of the weights
with that threshold in its card.

    python scripts/lodo_threshold.py --weights detector-crchisto --extra runs/monuseg-points
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

GRID = tuple(round(t, 2) for t in np.arange(0.30, 0.751, 0.05))
CRC_TUNE = ["img42", "img85", "img54", "img69", "img66", "img9", "img14", "img52"]  # seed 0, every card


def curves(weights: str, crc: Path, extra: Path, radius_um: float = 3.3) -> tuple[dict, dict]:
    """-> ({domain: [det F1 per GRID threshold]}, the card's params)."""
    from napari_pathreview.backend.datasets import dataset_mpp, load_points_dataset, rescale_points_samples
    from napari_pathreview.backend.detection.evaluate import score_points
    from napari_pathreview.backend.detection.maps import DetectParams, normalise, predict_maps, smooth_objectness
    from napari_pathreview.backend.weights import load_model

    model, card = load_model(weights, "detector", "cpu")
    tune = (card.training or {}).get("tune_images") or CRC_TUNE
    crc_s = [s for s in load_points_dataset(crc, "train", classes=list(card.classes))[0] if s.name in tune]
    ext = load_points_dataset(extra, "validation", classes=list(card.classes))[0]
    ext = rescale_points_samples(ext, dataset_mpp(extra) / card.mpp)
    base = DetectParams.from_card(card)
    out = {}
    for dom, samples in (("crchisto-tune", crc_s), ("monuseg-binary-val", ext)):
        maps = [predict_maps(model, normalise(s.image, card)) for s in samples]
        maps = [dict(m, objectness=smooth_objectness(m["objectness"], base.smooth_um / card.mpp)) for m in maps]
        row = []
        for t in GRID:
            p = DetectParams(threshold=t, min_distance_um=base.min_distance_um)
            row.append(score_points(model, card, samples, p, radius_um, maps)["detection"]["f1"])
        out[dom] = row
    return out, card.params


def choose(f1: dict) -> dict:
    """Leave-one-domain-out scores and the pick (mean of the domains' F1) from ``curves``' F1 rows."""
    doms = list(f1)
    lodo = {}
    for d in doms:
        other = [o for o in doms if o != d][0]
        t = int(np.argmax(f1[other]))
        lodo[d] = {"threshold_from": other, "threshold": GRID[t], "det_f1": round(f1[d][t], 4)}
    mean = np.mean([f1[d] for d in doms], axis=0)
    k = int(np.argmax(mean))
    return {"grid": list(GRID), "f1": {d: [round(v, 4) for v in f1[d]] for d in doms}, "lodo": lodo, "pick": GRID[k]}


def write_copy(weights: str, out: Path, params: dict, training: dict) -> str:
    """Copy ``weights`` to ``out``.safetensors with its card's ``params`` / ``training`` updated -> the path."""
    from napari_pathreview.backend.weights import resolve

    src = Path(resolve(weights, "detector")[0])
    card = json.loads(src.with_suffix(".json").read_text())
    card["params"].update(params)
    card.setdefault("training", {}).update(training)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src.with_suffix(".safetensors"), out.with_suffix(".safetensors"))
    out.with_suffix(".json").write_text(json.dumps(card, indent=1))
    return str(out.with_suffix(".safetensors"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="detector weights (name or .safetensors)")
    ap.add_argument("--crc", type=Path, default=Path("../shared/data/crchisto"))
    ap.add_argument("--extra", type=Path, required=True, help="scripts/monuseg_points.py's folder")
    ap.add_argument("--write", type=Path, default=None, help="write the weights with the pick as W2.*")
    a = ap.parse_args(argv)
    f1, params = curves(a.weights, a.crc, a.extra)
    res = {"weights": a.weights, "card_threshold": params.get("threshold"), **choose(f1)}
    if a.write is not None:
        rule = "leave-one-domain-out: mean det F1 of CRCHisto tune + MoNuSeg binary val"
        res["written"] = write_copy(a.weights, a.write, {"threshold": res["pick"]}, {"threshold_rule": rule})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
