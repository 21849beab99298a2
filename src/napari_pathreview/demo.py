"""``pathreview demo``: detect cells on the bundled sample and show them in napari, or write the
results (CSV, GeoJSON) and a rendered PNG when there is no display or ``--out`` is given."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


def sample_path() -> Path:
    return Path(__file__).parent / "sample_data" / "monuseg_tile.png"


def render_points(image: np.ndarray, points, radius_px: int = 5) -> np.ndarray:
    """(H, W, 3) uint8 image with a class-coloured ring drawn around every cell."""
    from skimage.draw import circle_perimeter

    from .widgets.layers import hex_to_rgba

    out = image[..., :3].copy()
    h, w = out.shape[:2]
    table = points.table()
    for (y, x), name in zip(points.yx, table["class"]):
        rgb = (hex_to_rgba(points.colors.get(str(name), "#ffffff"))[:3] * 255).astype(np.uint8)
        for r in (radius_px, radius_px + 1):
            rr, cc = circle_perimeter(int(round(y)), int(round(x)), r, shape=(h, w))
            out[rr, cc] = rgb
    return out


def write_demo(out: str | Path, device: str | None = None) -> dict:
    """Run the detector on the sample and write cells.csv, cells.geojson and cells.png to ``out``."""
    import imageio.v3 as iio

    from .backend import pipelines
    from .backend.atomic import atomic_path
    from .backend.exchange import write_geojson, write_points_csv
    from .backend.slides import open_slide

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from ._sample_data import SAMPLE_MPP

    slide = open_slide(sample_path(), mpp=SAMPLE_MPP)
    pts = pipelines.detect(slide, pipelines.DetectOptions(device=device), name=slide.name)
    image = np.asarray(slide.levels[0])
    write_points_csv(pts, out / "cells.csv")
    write_geojson(pts, out / "cells.geojson")
    with atomic_path(out / "cells.png") as tmp:
        iio.imwrite(tmp, render_points(image, pts, max(3, int(round(3.0 / (pts.mpp or 0.5))))), extension=".png")
    counts = {c: int((pts.labels == k).sum()) for k, c in enumerate(pts.classes)}
    return {"cells": len(pts), "per_class": counts, "out": str(out)}


def has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(out: str | None = None, device: str | None = None) -> int:
    import json

    if out is not None or not has_display():
        res = write_demo(out or "pathreview-demo", device)
        print(json.dumps(res))
        return 0
    import napari

    from .widgets.detect import DetectWidget
    from .widgets.enhance import EnhanceWidget

    viewer = napari.Viewer(title="napari-pathreview demo")
    viewer.open_sample("napari-pathreview", "monuseg_tile")
    widget = DetectWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Detect cells (PathReview)", area="right")
    viewer.window.add_dock_widget(EnhanceWidget(viewer), name="Enhance cells (PathReview)", area="right")
    if device:
        widget.device.setCurrentText(device)
    widget.run()
    napari.run()
    return 0
