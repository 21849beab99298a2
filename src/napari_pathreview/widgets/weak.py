"""'Weak cell types' dock widget: image (+ optional Points layer) -> per-class CAM Image layers, the
pseudo-label mask (Labels) and a Points layer of cells with weakly supervised types.

Thin glue: the numerics are ``backend.pipelines.weak_cells``; no torch import at module import.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QLabel

from ..backend.pipelines import WeakOptions
from .base import LayerPicker, TaskWidget
from .forms import Param, ParamForm
from .layers import heat_colormap, heat_layer_data, hex_to_rgba, legend_html, points_layer_data, to_pixels_of

DETECT = "(detect with the shipped detector)"
PARAMS = [  # dock only: what it adds to the viewer
    Param(
        "show_seg",
        "",
        "also add the pseudo-label U-Net's map (stage 2) as a Labels layer",
        {"text": "also add the stage-2 (U-Net) map"},
        bool,
        False,
    ),
]


class CellsPicker(LayerPicker):
    """Points layers of the viewer, after a first entry meaning "detect the cells"."""

    def names(self) -> list[str]:
        return [DETECT] + super().names()

    def layer(self):
        return None if self.currentText() == DETECT else super().layer()


class WeakWidget(TaskWidget):
    task = "weak-cells"

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.cells = CellsPicker(napari_viewer, ("points",))
        self.form.addRow("cells", self.cells)
        self.params = ParamForm("weak", WeakOptions, PARAMS)  # remembered across sessions
        self.params.add_rows(self.form)
        self.legend = QLabel("")
        self.extra.addWidget(self.legend)
        self.cam_layers, self.labels_layer, self.points_layer = [], None, None

    def job(self):
        from ..backend import pipelines
        from ..backend.points import CellPoints

        layer = self.selected_image()
        mpp = self.image_mpp(layer)  # as every widget: typed (becomes the scale), else the file's, else refused
        arr = layer.data[0] if layer.multiscale else layer.data
        options = self.params.options(
            weights=self.model.currentText() or None, mpp=mpp, device=self.device.currentText()
        )
        pl = self.cells.layer()
        points = None
        if pl is not None:
            yx = to_pixels_of(pl, layer).astype(np.float32)
            n = len(yx)
            points = CellPoints(
                yx, np.zeros(n, np.int64), np.ones(n, np.float32), np.zeros((n, 1), np.float32), ["cell"], mpp=mpp
            )

        def fn(progress, cancel):
            return pipelines.weak_cells(
                arr,
                options=options,
                points=points,
                progress=progress,
                cancel=cancel,
                name=layer.name,
            )

        def done(res):
            self._add_layers(res, layer, mpp)

        return fn, done

    def _add_layers(self, res, layer, mpp):
        from ..backend.weights import class_colors

        scale, translate = tuple(layer.scale[-2:]), tuple(layer.translate[-2:])
        units = getattr(layer, "units", None)
        colors = res.points.colors or class_colors(res.classes)
        self.cam_layers = []
        # added last class first, so the layer list (top down) and the colour bars (left to right) read in
        # the legend's class order
        for k in reversed(range(len(res.classes))):
            c = res.classes[k]
            # CAMs as the Explain dock draws heat maps: translucent, clear where low, a colour bar (0-1)
            rgb = hex_to_rgba(colors.get(c, "#ffffff"))[:3]
            cmap = heat_colormap([rgb * 0.6, rgb], f"pathreview-cam-{rgba_hex(rgb)}", display_name=f"CAM {c}")
            data, kwargs, _ = heat_layer_data(
                res.cams[k],
                f"{layer.name} CAM {c}",
                cmap,
                scale=scale,
                translate=translate,
                contrast_limits=(0.0, 1.0),
                opacity=0.7,
                metadata={"pathreview": "cam", "class": c, "mpp": mpp},
                units=units,
            )
            ly = self.viewer.add_image(data, **kwargs)
            ly.colorbar.visible = True
            self.cam_layers.insert(0, ly)
        meta = {
            "pathreview": "pseudo-labels",
            "classes": ["background"] + list(res.classes),
            "threshold": res.threshold,
            "mpp": mpp,
        }
        self.labels_layer = self.viewer.add_labels(
            res.pseudo,
            name=f"{layer.name} pseudo-labels",
            opacity=0.4,
            scale=scale,
            translate=translate,
            metadata=meta,
            units=units,
        )
        _colour_labels(self.labels_layer, res.classes, colors)
        if self.params["show_seg"].value:
            seg = self.viewer.add_labels(
                res.segmentation,
                name=f"{layer.name} weak U-Net",
                opacity=0.4,
                scale=scale,
                translate=translate,
                metadata={**meta, "pathreview": "weak-seg"},
                units=units,
            )
            _colour_labels(seg, res.classes, colors)
        pts = res.points
        if mpp is None:
            pts.mpp = None
        data, kwargs, _ = points_layer_data(pts, f"{layer.name} weak cells", scale=scale, translate=translate)
        self.points_layer = self.viewer.add_points(data, **kwargs, units=units)
        counts = np.bincount(pts.labels, minlength=len(res.classes)) if len(pts) else None
        self.legend.setText(legend_html(res.classes, colors, counts))
        self.status.setText(f"{len(pts)} cells typed; pseudo-label threshold {res.threshold:.2f}")


def rgba_hex(rgb) -> str:
    return "".join(f"{int(round(float(v) * 255)):02x}" for v in list(rgb)[:3])


def _colour_labels(labels_layer, classes, colors) -> None:
    """Label k (1..K) in its class colour, 0 transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    cdict = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    cdict.update({k + 1: hex_to_rgba(colors.get(c, "#ffffff")) for k, c in enumerate(classes)})
    labels_layer.colormap = DirectLabelColormap(color_dict=cdict)
