"""Fine-tune recipes of the Train widget, without a viewer (``backend.finetune``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from napari_pathreview.backend import finetune as ft
from napari_pathreview.backend.errors import InputError
from napari_pathreview.backend.tasks import TrainRun


def test_save_path_is_in_the_user_weights_folder_and_refuses_bad_or_shipped_names(tmp_path, monkeypatch):
    monkeypatch.setenv("PATHREVIEW_WEIGHTS", str(tmp_path / "uw"))
    assert ft.save_path(" my-model.v2 ") == tmp_path / "uw" / "my-model.v2"
    for bad in ("", "a b", "../x", "-x"):
        with pytest.raises(InputError, match="'save as' name"):
            ft.save_path(bad)
    with pytest.raises(InputError, match="shipped model's name"):
        ft.save_path("detector-crchisto")


def test_check_folder(tmp_path):
    ft.check_folder("")
    ft.check_folder(str(tmp_path))
    with pytest.raises(InputError, match="does not exist"):
        ft.check_folder(str(tmp_path / "nope"))


def test_crop_and_tile_recipes():
    samples = [SimpleNamespace(image=np.zeros((300, 500, 3))), SimpleNamespace(image=np.zeros((180, 900, 3)))]
    assert ft.detector_crop(samples) == 180
    assert ft.detector_crop(samples[:1]) == 256
    # a 192 px region at 0.25 µm/px: 2x2 cells of 96 px = 48 model px at 0.5 µm/px -> 64 (the floor)
    assert ft.segmenter_tile((192, 192, 3), 0.25, 0.5) == 64
    assert ft.segmenter_tile((600, 700, 3), 0.25, 0.25) == 256
    assert ft.segmenter_tile((400, 400, 3), 0.5, 0.5) == 192


def test_learning_rates_are_the_widgets_tasks():
    assert ft.LEARNING_RATES == {"detector": 2e-4, "segmenter": 2e-4, "enhancer": 1e-4, "classifier": 3e-4}


def test_class_checks_name_the_problem():
    classes = ["epithelial", "inflammatory"]
    ft.check_enhancer_classes(["epithelial", "unlabeled"], classes, "cells", "enh")
    with pytest.raises(InputError, match=r"classes \['tumour'\] that enhancer 'enh' does not know"):
        ft.check_enhancer_classes(["tumour"], classes, "cells", "enh")
    with pytest.raises(InputError, match="no cell has a class"):
        ft.check_enhancer_classes(["unlabeled"], classes, "cells", "enh")
    grades = ["benign", "malignant"]
    ft.check_classifier_classes(["benign", "malignant"], grades, "cls", "")
    ft.check_classifier_classes(["benign"], grades, "cls", "/some/folder")
    with pytest.raises(InputError, match="give image layers a class"):
        ft.check_classifier_classes([], grades, "cls", "")
    with pytest.raises(InputError, match=r"\['grade3'\] are not classes of 'cls'"):
        ft.check_classifier_classes(["grade3"], grades, "cls", "")
    with pytest.raises(InputError, match="at least two classes"):
        ft.check_classifier_classes(["benign", "benign"], grades, "cls", "")


@pytest.mark.slow
def test_fine_tune_a_detector_on_an_annotated_region(mini_points, tmp_path):
    """One epoch from the shipped detector on a real annotated region (the fixture set's train image)."""
    from napari_pathreview.backend.annotations import points_sample
    from napari_pathreview.backend.datasets import load_points_dataset
    from napari_pathreview.backend.weights import resolve

    weights, card = resolve("detector-crchisto", "detector")
    (s,), _ = load_points_dataset(mini_points, "train", classes=list(card.classes))
    names = [card.classes[k] if k >= 0 else "unlabeled" for k in s.labels]
    region = points_sample(s.image, s.yx[:40], names[:40], list(card.classes), 0.55, card.mpp, name="region")
    rows = []
    run = TrainRun(data="", out=tmp_path / "det-ft", device="cpu", command="test", on_epoch=rows.append)
    new = ft.finetune_detector(ft.FineTune(run, weights, epochs=1, lr=2e-4), region, list(card.classes))
    saved = json.loads((tmp_path / "det-ft.json").read_text())
    assert new.task == "detector" and saved["training"]["best_epoch"] == 1 and len(rows) == 1
    assert saved["training"]["init"].endswith(".safetensors") and saved["training"]["command"] == "test"
