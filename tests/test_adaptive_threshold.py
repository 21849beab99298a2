"""The shipped detector's per-image threshold (issue 27 item 2, ``detection/adaptive.py``): lowered on an
image where many nuclei score below the card's threshold, never on CRCHisto; a threshold given is fixed.

The committed MoNuSeg image TCGA-50-5931 (tests/data/points, 0.55 µm/px, points = instance-mask centroids)
is one such image: measured 2026-12-07, its threshold 0.496, det F1 0.762 against 0.615 at the card's 0.65.
"""

import json

import numpy as np
import pytest

from napari_pathreview.backend import pipelines
from napari_pathreview.backend.detection import DetectParams, detect
from napari_pathreview.backend.detection.adaptive import AdaptiveThreshold, build_adaptive
from napari_pathreview.backend.metrics import PointScores


def _det_f1(pts, sample, radius_px=6.0):
    s = PointScores(pts.classes, radius_px)
    s.add(pts.yx, pts.labels, sample.yx, sample.labels)
    return s.as_dict()["detection"]["f1"]


@pytest.fixture(scope="module")
def shifted_and_plain(mini_points):
    """(TCGA-50-5931, TCGA-B0-5698) PointsSamples at 0.55 µm/px: the rule lowers the first, not the second."""
    from napari_pathreview.backend.datasets import load_points_dataset

    samples = {s.name: s for s in load_points_dataset(mini_points, None)[0]}
    return samples["TCGA-50-5931"], samples["TCGA-B0-5698"]


def test_the_rule_lowers_the_threshold_in_proportion_to_the_unsure_share():
    rule = AdaptiveThreshold(floor=0.5, free_share=0.2, slope=1.0, lowest=0.35, min_peaks=50)
    sure, unsure = np.full(80, 0.8), np.full(20, 0.55)
    assert rule.threshold(np.r_[sure, unsure], 0.65) == 0.65  # 20 % unsure: the free share
    assert rule.threshold(np.r_[sure, unsure, np.full(900, 0.3)], 0.65) == 0.65  # below the floor: not counted
    assert rule.threshold(np.r_[sure[:50], np.full(50, 0.55)], 0.65) == pytest.approx(0.35)  # 50 %: 0.65 - 0.30
    assert rule.threshold(np.r_[sure[:40], np.full(60, 0.55)], 0.65) == pytest.approx(0.35)  # clipped at lowest
    assert rule.threshold(np.r_[sure[:60], np.full(40, 0.55)], 0.65) == pytest.approx(0.45)
    assert rule.threshold(np.full(49, 0.55), 0.65) == 0.65  # too few peaks to judge
    assert build_adaptive(None) is None and build_adaptive({}) is None
    assert build_adaptive({"slope": 2.0}) == AdaptiveThreshold(slope=2.0)


def test_an_image_unlike_crchisto_gets_its_own_threshold_and_more_of_its_nuclei(shifted_and_plain):
    from napari_pathreview.backend.weights import load_model

    model, card = load_model(None, "detector", "cpu")
    assert build_adaptive(DetectParams.from_card(card).adaptive) is not None  # the shipped card has the rule
    shifted, plain = shifted_and_plain
    own = detect(shifted.image, model, card, mpp=0.55)
    fixed = detect(shifted.image, model, card, mpp=0.55, params=DetectParams.from_card(card, threshold=0.65))
    assert fixed.threshold == 0.65 and 0.40 < own.threshold < 0.60  # measured 0.496
    assert len(own) > len(fixed) + 80  # measured 372 against 239 cells
    assert _det_f1(own, shifted) > _det_f1(fixed, shifted) + 0.1  # measured 0.762 against 0.615
    # the rule only picks the threshold: the cells are those of decoding at it
    at = detect(shifted.image, model, card, mpp=0.55, params=DetectParams.from_card(card, threshold=own.threshold))
    assert np.array_equal(own.yx, at.yx) and np.array_equal(own.scores, at.scores)
    assert (own.scores > own.threshold).all()
    # an image the detector is sure of keeps the card's threshold and the same cells
    kept = detect(plain.image, model, card, mpp=0.55)
    same = detect(plain.image, model, card, mpp=0.55, params=DetectParams.from_card(card, threshold=0.65))
    assert kept.threshold == 0.65 and np.array_equal(kept.yx, same.yx) and len(kept) > 200


def test_a_threshold_given_is_fixed_and_the_threshold_used_is_written(shifted_and_plain, tmp_path):
    from napari_pathreview.backend.exchange import write_geojson

    shifted, _ = shifted_and_plain
    opts = pipelines.DetectOptions(mpp=0.55, device="cpu")
    own = pipelines.detect(shifted.image, opts)
    given = pipelines.detect(shifted.image, pipelines.DetectOptions(mpp=0.55, device="cpu", threshold=0.65))
    assert given.threshold == 0.65 and own.threshold < 0.6 and len(given) < len(own)
    doc = json.loads(write_geojson(own, tmp_path / "cells.geojson").read_text())
    assert doc["properties"]["threshold"] == pytest.approx(own.threshold)
    assert len(doc["features"]) == len(own)


def test_crchisto_validation_keeps_the_cards_threshold_on_every_image(crchisto):
    """The rule was fitted so that CRCHisto keeps its detection F1; on the 10 validation images it never
    moves the threshold (measured: evaluate detector 0.7643 with and without it)."""
    from napari_pathreview.backend.datasets import load_points_dataset
    from napari_pathreview.backend.weights import load_model

    model, card = load_model(None, "detector", "cpu")
    samples = load_points_dataset(crchisto, "validation", classes=list(card.classes))[0]
    assert [detect(s.image, model, card, mpp=0.55).threshold for s in samples] == [0.65] * len(samples)


def test_the_detect_dock_says_when_it_lowered_the_threshold(make_napari_viewer, open_dock, qtbot, shifted_and_plain):
    viewer = make_napari_viewer()
    shifted, _ = shifted_and_plain
    image = viewer.add_image(shifted.image, name="other lab", scale=(0.55, 0.55), metadata={"mpp": 0.55})
    w = open_dock(viewer, "detect")
    w.device.setCurrentText("cpu")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    layer = viewer.layers[f"{image.name} cells"]
    t = layer.metadata["threshold"]
    assert 0.40 < t < 0.60 and float(np.min(layer.features["score"])) > t
    assert (
        w.status.text()
        == f"{len(layer.data)} cells (score ≥ {t:.2f} on this image: many nuclei scored below the model's 0.65)"
    )
