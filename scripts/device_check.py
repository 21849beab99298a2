"""One-call GPU check (issue 30): does CUDA run the shipped models, at which precisions, how fast, and do
reduced-precision outputs equal float32's? Writes ``$OUT/device_check.json`` (and prints it).

Run on a lent GPU machine from the repository root (its image has torch, numpy, scipy, scikit-image,
tifffile, imageio, safetensors; carry wheels for dask, zarr, numcodecs, partd, locket into ``.whl/`` first,
see /work/.library/device/README.md):

    bash scripts/device_check.sh

Inputs: a mosaic of the bundled MoNuSeg sample (no data set needed). Every check is independent: an error
is recorded under its name and the rest still run. Without CUDA it runs the same checks on the CPU at bf16
(``--device cpu --sizes 512``: what CI runs, tests/test_device_check.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(device: str | None = None, sizes=(2048, 8192)) -> dict:
    """Run the checks on ``device`` (default: cuda when present, else the CPU with bf16 only, the CI mode)."""
    import torch

    cuda = torch.cuda.is_available()
    device = device or ("cuda" if cuda else "cpu")
    out: dict = {"torch": torch.__version__, "cuda": cuda, "device_used": device}
    if device.startswith("cuda"):
        out.update(
            device=torch.cuda.get_device_name(0),
            bf16=torch.cuda.is_bf16_supported(),
            capability=list(torch.cuda.get_device_capability(0)),
        )
        precisions = ("bf16", "fp16")
    else:
        precisions = ("bf16",)  # no fp16 on the CPU
    from napari_pathreview.backend import pipelines
    from napari_pathreview.backend.matching import match_points
    from napari_pathreview.backend.seg_metrics import dice
    from napari_pathreview.bench.common import mosaic

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(fn):
        fn()  # warm
        sync()
        t = time.perf_counter()
        r = fn()
        sync()
        return r, time.perf_counter() - t

    for size in sizes:
        img = mosaic(size)
        mpx = size * size / 1e6
        for task in ("detect", "segment"):
            key = f"{task}_{size}"
            try:
                res = {}
                run, opts = getattr(pipelines, task), getattr(pipelines, task.capitalize() + "Options")
                ref, t_ref = timed(
                    lambda run=run, opts=opts, img=img: run(img, opts(mpp=0.25, device=device, precision="fp32"))
                )
                res["fp32"] = {"seconds": round(t_ref, 3), "mpx_per_s": round(mpx / t_ref, 2)}
                for p in precisions:
                    r, t = timed(
                        lambda p=p, run=run, opts=opts, img=img: run(img, opts(mpp=0.25, device=device, precision=p))
                    )
                    entry = {"seconds": round(t, 3), "mpx_per_s": round(mpx / t, 2), "ratio": round(t / t_ref, 3)}
                    if task == "detect":
                        m = match_points(r.yx, ref.yx, 6.0)
                        entry["matched_f1"] = round(2 * len(m.pred_idx) / max(1, len(r) + len(ref)), 4)
                        entry["same_class"] = round(float((r.labels[m.pred_idx] == ref.labels[m.gt_idx]).mean()), 4)
                        entry["cells"] = [len(ref), len(r)]
                    else:
                        entry["label_dice"] = round(dice(ref.labels > 0, r.labels > 0), 5)
                    res[p] = entry
                out[key] = res
            except Exception as exc:
                out[key] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
            print(key, json.dumps(out[key])[:400], flush=True)
    if device.startswith("cuda"):
        out["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="the prepared accelerator check; JSON to $OUT/device_check.json")
    ap.add_argument("--device", default=None, help="cuda (default when present) or cpu (bf16 only)")
    ap.add_argument("--sizes", default="2048,8192", help="mosaic sides in pixels, comma-separated")
    a = ap.parse_args()
    res = main(a.device, tuple(int(x) for x in a.sizes.split(",")))
    text = json.dumps(res, indent=1)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "device_check.json").write_text(text + "\n")
