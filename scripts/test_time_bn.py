"""Test-time batch-norm adaptation of the detector (AdaBN, Li et al. 2016), measured (issue 27 item 2).

For each image, the batch-norm statistics are recomputed from that image alone (one forward pass at the
model's scale) and mixed with the trained ones: ``mix`` 1 = the image's only, 0.5 = half each. Detection then
runs with the adapted copy. Policies compared, each with the card's per-image threshold rule:

- ``plain``: no adaptation (the shipped detector);
- ``all MIX``: every image adapted;
- ``gate G, MIX``: an image is adapted only when the share ``u`` of its peaks (score >= 0.5) below 0.65 is
  above G (the rule's statistic: images the detector is unsure of).

The policy would be chosen as the adaptive threshold was (``scripts/adaptive_threshold.py``): best pooled
det F1 on MoNuSeg's 17 binary-mask images among the policies that keep CRCHisto's 70 ``train`` images
within 0.001 of the plain detector; CRCHisto validation, MoNuSeg's 13 instance-mask images and the synthetic
scanner are reported only.

    python scripts/test_time_bn.py --monuseg runs/monuseg-points --instance runs/monuseg-inst --scanner runs/crc-scanner
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

MIXES = (0.5, 1.0)
GATES = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3)
RADIUS_UM = 3.3


def adapted(model, card, image: np.ndarray, mix: float):
    """A copy of ``model`` whose batch-norm statistics are ``mix`` x those of ``image`` ((H, W, 3) uint8 at
    the model's scale) + (1 - mix) x the trained ones."""
    import torch

    from napari_pathreview.backend.detection import normalise

    m = copy.deepcopy(model)
    bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    trained = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
        b.train()
    with torch.no_grad():
        m(torch.from_numpy(normalise(image, card)).permute(2, 0, 1)[None].float())
    for b, (mean, var) in zip(bns, trained):
        b.running_mean.mul_(mix).add_((1 - mix) * mean)
        b.running_var.mul_(mix).add_((1 - mix) * var)
        b.eval()
    return m


def detections(folders: dict) -> dict:
    """{domain: [{mix: (yx, scores), "gt": yx, "radius": px}]} at threshold 0.1, mix 0 = not adapted."""
    from skimage.transform import rescale

    from napari_pathreview.backend.datasets import dataset_mpp, load_points_dataset
    from napari_pathreview.backend.detection import DetectParams, detect
    from napari_pathreview.backend.weights import load_model

    model, card = load_model(None, "detector", "cpu")
    low = DetectParams.from_card(card, threshold=0.1)
    out = {}
    for dom, (folder, split, keep) in folders.items():
        mpp = dataset_mpp(folder) or card.mpp
        rows = []
        for s in load_points_dataset(folder, split, classes=list(card.classes))[0]:
            if not keep(s.name):
                continue
            small = s.image
            if abs(mpp / card.mpp - 1) > 0.02:
                small = rescale(
                    s.image, mpp / card.mpp, order=1, anti_aliasing=True, channel_axis=-1, preserve_range=True
                )
                small = np.clip(np.round(small), 0, 255).astype(np.uint8)
            row = {"gt": s.yx, "radius": RADIUS_UM / mpp}
            for mix in (0.0, *MIXES):
                m = adapted(model, card, small, mix) if mix else model
                pts = detect(s.image, m, card, mpp=mpp, params=low, name=s.name)
                row[mix] = (pts.yx, pts.scores)
            rows.append(row)
        out[dom] = rows
        print(f"{dom}: {len(rows)} images", file=sys.stderr, flush=True)
    return out, card


def table(dets: dict, card) -> dict:
    """{policy: {domain: pooled det F1}} for every policy of the module docstring."""
    from napari_pathreview.backend.detection.adaptive import build_adaptive
    from napari_pathreview.backend.matching import match_points

    rule, t0 = build_adaptive(card.params["adaptive"]), float(card.params["threshold"])

    def unsure(scores: np.ndarray) -> float:
        above = scores[scores >= rule.floor]
        return float(np.mean(above < t0)) if len(above) >= rule.min_peaks else 0.0

    def f1(dom: str, policy) -> float:
        tot = np.zeros(3)
        for r in dets[dom]:
            yx, scores = r[policy(r)]
            keep = scores > rule.threshold(scores, t0)
            tot += (len(match_points(yx[keep], r["gt"], r["radius"]).pred_idx), keep.sum(), len(r["gt"]))
        return round(float(2 * tot[0] / max(1.0, tot[1] + tot[2])), 4)

    policies = {"plain": lambda r: 0.0}
    for mix in MIXES:
        policies[f"all {mix}"] = lambda r, mix=mix: mix
        for g in GATES[1:]:
            policies[f"gate {g}, {mix}"] = lambda r, g=g, mix=mix: mix if unsure(r[0.0][1]) > g else 0.0
    return {name: {d: f1(d, p) for d in dets} for name, p in policies.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crc", type=Path, default=Path("../shared/data/crchisto"))
    ap.add_argument("--monuseg", type=Path, required=True, help="scripts/monuseg_points.py's folder (binary)")
    ap.add_argument("--instance", type=Path, required=True, help="the same with --masks instance (held out)")
    ap.add_argument("--scanner", type=Path, required=True, help="scripts/synthetic_scanner.py's folder (held out)")
    a = ap.parse_args(argv)
    folders = {
        "crc-train": (a.crc, "train", lambda n: True),
        "monuseg-binary": (a.monuseg, None, lambda n: True),
        "crc-validation": (a.crc, "validation", lambda n: True),
        "monuseg-instance": (a.instance, None, lambda n: True),
        "crc-scanner": (a.scanner, None, lambda n: True),
    }
    dets, card = detections(folders)
    res = table(dets, card)
    floor = res["plain"]["crc-train"] - 0.001
    ok = {k: v for k, v in res.items() if v["crc-train"] >= floor}
    pick = max(ok, key=lambda k: (ok[k]["monuseg-binary"], k == "plain"))
    print(json.dumps({"policies": res, "pick": pick}))


if __name__ == "__main__":
    main()
