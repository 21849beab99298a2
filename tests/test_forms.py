"""The docks' parameter forms (``widgets/forms.py``, magicgui): values typed in a form reach the pipeline,
and come back when the dock is opened again (remembered in magicgui's cache folder, a temporary one in
tests: ``conftest.remembered_values``). Opened from Plugins > PathReview (``open_dock``) on real images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from napari_pathreview.widgets.forms import Param, ParamForm

TEST_DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Toy:
    tile: int = 512
    threshold: float | None = None
    tta: bool | None = None
    weights: str | None = None


TOY = [
    Param("tile", "tile (model px)", "tile side", {"min": 64, "max": 1024, "step": 64}),
    Param("threshold", "probability threshold", "", {"min": 0.05, "max": 0.95}, default=0.5, decimals=3),
    Param("tta", "TTA", "", {"text": "flips"}),
    Param("colormap", "colormap", "", {"choices": ("inferno", "turbo")}, str, "inferno"),
]


def test_a_form_fills_its_dataclass_and_remembers_it_in_the_temporary_cache(qtbot, remembered_values):
    form = ParamForm("toy", Toy, TOY)
    assert form.values() == {"tile": 512, "threshold": 0.5, "tta": False, "colormap": "inferno"}
    form.set(tile=256, threshold=0.375, tta=True, colormap="turbo")
    # the dock-only row (colormap) is not a field; the dock's own rows come in as keywords
    assert form.options(weights="mine") == Toy(tile=256, threshold=0.375, tta=True, weights="mine")
    assert form.path == remembered_values / "napari_pathreview.toy" and form.path.is_file()
    assert not (Path.home() / ".cache" / "magicgui" / "napari_pathreview.toy").exists()
    again = ParamForm("toy", Toy, TOY)
    assert again.values() == {"tile": 256, "threshold": 0.375, "tta": True, "colormap": "turbo"}
    with pytest.raises(ValueError, match="outside of the allowed range"):
        again.set(tile=8)
    # a remembered value the form no longer accepts (a choice that is gone, out of range) starts at its default
    narrower = [TOY[0], TOY[1], TOY[2], Param("colormap", "colormap", "", {"choices": ("red",)}, str, "red")]
    assert ParamForm("toy", Toy, narrower).values()["colormap"] == "red"
    form.path.write_bytes(b"not a pickle")
    assert ParamForm("toy", Toy, TOY).values()["tile"] == 512
    assert ParamForm("other", Toy, TOY).values()["tile"] == 512  # one file per form


def test_detect_form_tta_reaches_the_pipeline_and_is_remembered(sample_viewer, open_dock, qtbot):
    from napari_pathreview.backend import pipelines

    viewer = sample_viewer
    image = viewer.layers[0]
    first = open_dock(viewer, "detect")
    assert first.params["tta"].value is False and first.params["tta"].native.text() == "rotations and flips (8x slower)"
    first.params["tta"].value = True
    viewer.window.remove_dock_widget(first)
    w = open_dock(viewer, "detect")  # a fresh dock: TTA is still ticked
    assert w is not first and w.params["tta"].value is True
    w.device.setCurrentText("cpu")
    w.image.setCurrentText(image.name)
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    layer = viewer.layers[f"{image.name} cells"]
    ref = pipelines.detect(np.asarray(image.data), pipelines.DetectOptions(mpp=0.25, device="cpu", tta=True))
    assert len(layer.data) == len(ref) > 50 and w.status.text() == f"{len(ref)} cells"
    assert np.allclose(np.sort(layer.features["score"]), np.sort(ref.scores), atol=1e-5)


def test_segment_form_thresholds_reach_the_pipeline_and_are_remembered(make_napari_viewer, open_dock, qtbot):
    import imageio.v3 as iio

    from napari_pathreview.backend.pipelines import SegmentOptions, segment

    he = iio.imread(TEST_DATA / "monuseg" / "images" / "TCGA-21-5784-crop.png")[..., :3]
    viewer = make_napari_viewer()
    viewer.add_image(he, name="crop", rgb=True, scale=(0.25, 0.25), metadata={"mpp": 0.25})
    w = open_dock(viewer, "segment")
    card = w.model_card()
    assert np.isclose(w.params["threshold"].value, card.params["threshold"])  # the model's tuned value
    assert w.params["min_area_um2"].native.suffix() == " µm²"
    w.params.set(threshold=0.8, min_area_um2=12.0, tile=256, overlap=32)
    w.device.setCurrentText("cpu")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    labels = w.labels_layer
    ref = segment(he, SegmentOptions(mpp=0.25, device="cpu", tile=256, overlap=32), name="crop")
    n_default = len(np.unique(ref.labels)) - 1  # the model's tuned threshold and minimum size
    n = len(labels.features["index"])
    assert w.status.text() == f"{n} nuclei" and 0 < n < n_default  # stricter threshold, larger minimum: fewer
    areas_um2 = np.bincount(np.asarray(labels.data).ravel())[1:] * 0.25**2
    assert areas_um2[areas_um2 > 0].min() >= 12.0 - 1e-6
    viewer.window.remove_dock_widget(w)
    again = open_dock(viewer, "segment")
    assert again.params.values() | {"tta": False} == {
        "tile": 256,
        "overlap": 32,
        "tta": False,
        "stain_norm": w.params["stain_norm"].value,
        "threshold": 0.8,
        "min_area_um2": 12.0,
    }
    again.model.currentTextChanged.emit(again.model.currentText())  # choosing a model: its tuned values
    assert np.isclose(again.params["threshold"].value, card.params["threshold"])


def test_explain_form_method_and_colormap_name_the_layer_and_are_remembered(sample_viewer, open_dock, qtbot):
    viewer = sample_viewer
    image = viewer.layers[0]
    w = open_dock(viewer, "explain")
    w.device.setCurrentText("cpu")
    w.params.set(method="cam", colormap="turbo")
    classes = [w.target.itemText(i) for i in range(1, w.target.count())]
    w.target.setCurrentText(classes[-1])
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    heat = [ly for ly in viewer.layers if ly.name.startswith(f"{image.name} cam")]
    assert [ly.name for ly in heat] == [f"{image.name} cam {classes[-1]}"] or "Empty map" in w.status.text()
    for ly in heat:
        assert ly.metadata["method"] == "cam" and ly.metadata["class"] == classes[-1]
        assert "turbo" in ly.colormap.name
    viewer.window.remove_dock_widget(w)
    again = open_dock(viewer, "explain")
    assert (again.params["method"].value, again.params["colormap"].value) == ("cam", "turbo")
    assert again.target.isEnabled()


def test_train_form_epochs_and_learning_rate_reach_the_saved_card(
    make_napari_viewer, open_dock, qtbot, tmp_path, monkeypatch
):
    import imageio.v3 as iio

    from napari_pathreview.backend.exchange import read_points_table
    from napari_pathreview.backend.weights import list_models

    monkeypatch.setenv("PATHREVIEW_WEIGHTS", str(tmp_path / "user-weights"))
    name = "TCGA-50-5931"
    image = iio.imread(TEST_DATA / "points" / "images" / f"{name}.png")[..., :3]
    detector = list_models("detector")[0]
    pts = read_points_table(TEST_DATA / "points" / "points.csv")[name]  # 444 annotated cells
    viewer = make_napari_viewer()
    viewer.add_image(image, name="train image", rgb=True, scale=(0.55, 0.55), metadata={"mpp": 0.55})
    names = [pts.classes[k] for k in pts.labels]
    viewer.add_points(pts.yx, name="my annotations", features={"class": names}, scale=(0.55, 0.55))
    w = open_dock(viewer, "train")
    w.device.setCurrentText("cpu")
    w.model.setCurrentText(detector.name)
    w.image.setCurrentText("train image")
    w.annotations.setCurrentText("my annotations")
    w.params.set(epochs=1, lr=2.5e-5, save_as="detector-form")
    assert w.params["lr"].value == 2.5e-5  # six decimals: a fine-tuning rate is not rounded away
    w.run()
    assert w.worker is not None, w.status.text()
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    assert w.saved is not None, w.status.text()
    card = json.loads((tmp_path / "user-weights" / "detector-form.json").read_text())
    assert card["training"]["epochs"] == 1 and np.isclose(card["training"]["lr"], 2.5e-5)
    assert len(card["training"]["history"]) == 1
    viewer.window.remove_dock_widget(w)
    again = open_dock(viewer, "train")
    # the epochs are remembered; the learning rate and the name follow the task
    assert again.params["epochs"].value == 1 and again.params["save_as"].value == "detector-finetuned"


def _cells(n: int, dy: float, mpp: float):
    from napari_pathreview.backend.points import CellPoints

    yx = np.stack([np.full(n, 20.0 + dy), 20.0 + 30.0 * np.arange(n)], 1).astype(np.float32)
    labels = np.zeros(n, np.int64)
    return CellPoints(yx, labels, np.ones(n, np.float32), np.ones((n, 1), np.float32), ["tumour"], mpp)


def test_compare_form_radius_in_microns_decides_the_matches_and_is_remembered(make_napari_viewer, open_dock, qtbot):
    """Annotated cells 2 px = 1 µm (at 0.5 µm/px) from the predicted ones: a 0.8 µm radius matches none, 1.5 µm all."""
    from napari_pathreview.widgets.layers import points_layer_data

    viewer = make_napari_viewer()
    for name, dy in (("predicted", 0.0), ("annotated", 2.0)):
        data, kwargs, _ = points_layer_data(_cells(4, dy, 0.5), name, scale=(0.5, 0.5))
        viewer.add_points(data, **kwargs)
    w = open_dock(viewer, "compare")
    assert w.params["radius_um"].native.suffix() == " µm"
    w.image.setCurrentText("predicted")
    w.annotation.setCurrentText("annotated")
    matched = {}
    for radius in (0.8, 1.5):
        w.params["radius_um"].value = radius
        w.run()
        qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
        matched[radius] = w.status.text().split(" matched")[0]
    assert matched == {0.8: "0", 1.5: "4"}, w.status.text()
    viewer.window.remove_dock_widget(w)
    assert open_dock(viewer, "compare").params["radius_um"].value == 1.5


def test_weak_and_enhance_forms_are_remembered_in_a_fresh_dock(make_napari_viewer, open_dock):
    viewer = make_napari_viewer()
    weak = open_dock(viewer, "weak")
    assert weak.params.values() == {"show_seg": False}
    weak.params["show_seg"].value = True
    enhance = open_dock(viewer, "enhance")
    assert enhance.params.values() == {"top_k": 5, "threshold": 0.02, "knn_k": 3, "similarity": 0.97}
    assert enhance.params["top_k"].native.specialValueText() == "all"
    enhance.params.set(top_k=0, similarity=0.9)
    for w in (weak, enhance):
        viewer.window.remove_dock_widget(w)
    assert open_dock(viewer, "weak").params["show_seg"].value is True
    assert open_dock(viewer, "enhance").params.values() == {
        "top_k": 0,
        "threshold": 0.02,
        "knn_k": 3,
        "similarity": 0.9,
    }
