"""``bench train-step``: one segmenter training step under bfloat16 autocast against float32."""

from __future__ import annotations

import time

import numpy as np

from ..backend.segmentation import segmenter_loss
from .common import bench, cpu_flags


@bench("train-step")
def bench_train_step(
    widths=((16, 32, 64, 128), (32, 64, 128, 256)), batch: int = 8, tile: int = 256, repeats: int = 4, seed: int = 0
) -> dict:
    """Ours: one segmenter training step (forward, segmenter loss, backward, AdamW) under bfloat16
    autocast (``train --amp``). Reference: the same step in float32. Batch of ``batch`` random
    ``tile``² tiles; median of ``repeats`` steps after two warm-up steps, per encoder ``widths``; the
    headline ratio is the last (widest) model's."""
    import torch

    from ..backend.models.segmenter import SegmenterConfig, build_segmenter

    rows = []
    for w in widths:
        torch.manual_seed(seed)
        model = build_segmenter(SegmenterConfig(widths=tuple(w))).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(batch, 3, tile, tile).contiguous(memory_format=torch.channels_last)
        fg = (torch.rand(batch, tile, tile) > 0.7).float()
        batch_t = (x, fg, torch.rand(batch, tile, tile), torch.ones(batch))
        row = {"widths": list(w), "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
        for mode in ("fp32", "bf16"):
            times = []
            for _i in range(repeats + 2):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                    loss = segmenter_loss(model, batch_t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t)
            row[f"{mode}_s"] = round(float(np.median(times[2:])), 3)
        row["ratio"] = round(row["bf16_s"] / row["fp32_s"], 3)
        rows.append(row)
    last = rows[-1]
    return {
        "name": "train-step",
        "reference": "the same segmenter training step in float32",
        "ours_s": last["bf16_s"],
        "reference_s": last["fp32_s"],
        "ratio": last["ratio"],
        "rows": rows,
        "batch": batch,
        "tile": tile,
        "threads": torch.get_num_threads(),
        "cpu_flags": cpu_flags(),
    }
