"""Weakly supervised cell types (issue 6): tile labels, Puzzle-CAM loss, threshold sweep, stage-2 checkpoint
rule, evaluation JSON."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_pathreview.backend import weak


def test_tile_labels_are_the_types_present_in_the_crop():
    yx = np.array([[10, 10], [20, 50], [70, 10], [30, 30], [1, 30], [40, 40]], np.float32)
    labels = np.array([0, 2, 1, -1, 3, 2])
    y = weak.tile_labels(yx, labels, 0, 0, 64, 4)
    # (70, 10) is outside, the unlabelled point counts for nothing, (1, 30) lies in the 2 px margin
    assert y.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert weak.tile_labels(yx, labels, 64, 0, 64, 4).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert weak.tile_labels(yx[:0], labels[:0], 0, 0, 64, 4).tolist() == [0.0] * 4


def test_tile_labels_of_real_crops_match_the_annotations(crchisto):
    from napari_pathreview.backend.datasets import load_points_dataset

    samples, classes = load_points_dataset(crchisto, "validation")
    s = samples[0]
    crops = weak.grid_crops([s], 64, len(classes))
    assert len(crops) == (s.image.shape[0] // 64) * (s.image.shape[1] // 64)
    union = np.max([c[-1] for c in crops], 0)
    present = np.zeros(len(classes))
    present[np.unique(s.labels[s.labels >= 0])] = 1
    assert (union <= present).all() and union.sum() >= 1


def test_puzzle_loss_is_zero_when_tile_cams_equal_the_full_cam():
    full = torch.randn(2, 4, 8, 8)
    tiles = weak.split_tiles(full)
    assert tiles.shape == (4, 2, 4, 4, 4)
    assert float(weak.puzzle_loss(full, tiles)) == 0.0
    assert float(weak.puzzle_loss(full, tiles + 1.0)) > 0.0


def test_puzzle_variant_trains_through_the_tiles():
    m = weak.build_weak_cam({"classes": ["a", "b"], "widths": [8, 16, 32]})
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = weak.stage1_loss(m, x, y, "puzzle")
    loss.backward()
    assert torch.isfinite(loss) and m.cams(x).shape == (2, 2, 8, 8)


def test_threshold_sweep_is_monotone_in_foreground_area():
    rng = np.random.default_rng(0)
    probs = [rng.random((4, 64, 64)).astype(np.float32) for _ in range(2)]
    crops = [(0, 0, 0, 32, np.array([1, 0, 1, 0], np.float32)), (1, 32, 32, 32, np.ones(4, np.float32))]
    curve = weak.threshold_sweep(probs, crops, 4, np.linspace(0.05, 0.95, 19), min_px=5)
    fg = [r["foreground"] for r in curve]
    assert all(a >= b for a, b in zip(fg, fg[1:])) and fg[0] > fg[-1]
    lab = weak.pseudo_labels(probs[0], 0.5)
    assert lab.max() <= 4 and ((lab == 0) == (probs[0].max(0) < 0.5)).all()


def test_shipped_card_records_the_recipe():
    from napari_pathreview.backend.weights import resolve

    _, card = resolve("weak-cells", "weak-cells")
    assert card.licence.startswith("research use only")
    t = card.training
    assert {"command", "seed", "seconds", "crop_px", "threshold_curve"} <= set(t)
    assert card.params["threshold"] in [r["threshold"] for r in t["threshold_curve"]]
    assert card.metrics["validation"]["two_stage"]["mF1"] >= 0.8 * card.metrics["validation"]["supervised"]["mF1"]


@pytest.mark.slow
def test_evaluate_json_on_one_real_validation_image(capsys, crchisto):
    from napari_pathreview.cli import main

    rc = main(
        [
            "evaluate",
            "weak-cells",
            "--data",
            str(crchisto),
            "--split",
            "validation",
            "--limit",
            "1",
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("cam", "puzzle_cam", "sc_cam", "two_stage", "supervised"):
        row = res[key]
        assert {"epithelial", "fibroblast", "inflammatory", "others", "mF1", "accuracy"} <= set(row)
        assert 0.0 <= row["mF1"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
    assert res["n_images"] == 1 and res["two_stage"]["n_cells"] == res["supervised"]["n_cells"] > 0


@pytest.mark.slow
def test_pipeline_types_the_given_points_at_the_input_grid(crchisto):
    from napari_pathreview.backend.datasets import load_points_dataset
    from napari_pathreview.backend.pipelines import WeakOptions, weak_cells
    from napari_pathreview.backend.points import CellPoints

    samples, _ = load_points_dataset(crchisto, "validation")
    s = samples[0]
    n = len(s.yx)
    pts = CellPoints(s.yx, np.zeros(n, np.int64), np.ones(n, np.float32), np.zeros((n, 1), np.float32), ["cell"])
    res = weak_cells(s.image, options=WeakOptions(mpp=0.55, device="cpu"), points=pts)
    assert res.cams.shape == (4,) + s.image.shape[:2] and res.pseudo.shape == s.image.shape[:2]
    assert len(res.points) == n and set(np.unique(res.points.labels)) <= {0, 1, 2, 3}
    assert np.allclose(res.points.yx, s.yx) and np.allclose(res.points.probs.sum(1), 1.0, atol=1e-4)


def test_normalise_reads_the_card_and_matches_the_shipped_numbers():
    from napari_pathreview.backend.weights import resolve

    img = np.random.default_rng(0).integers(0, 256, (9, 7, 3)).astype(np.uint8)
    card = resolve("weak-cells", "weak-cells")[1]
    x = weak.normalise(img, card.normalisation)
    assert x.shape == (3, 9, 7) and x.dtype == np.float32
    np.testing.assert_array_equal(x, ((img.astype(np.float32) / 255.0 - 0.5) / 0.25).transpose(2, 0, 1))
    other = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    np.testing.assert_array_equal(weak.normalise(img, other), (img.astype(np.float32) / 255.0).transpose(2, 0, 1))


def test_pseudo_agreement_scores_types_on_the_pseudo_foreground_only():
    pseudo = np.zeros((8, 8), np.int64)
    pseudo[:4, :4], pseudo[:4, 4:], pseudo[4:, :4], pseudo[4:, 4:6] = 1, 2, 3, 4  # 0 = background
    pred = np.clip(pseudo - 1, 0, None)
    assert weak.pseudo_agreement([pred], [pseudo], 4) == 1.0
    other_bg = pred.copy()
    other_bg[pseudo == 0] = 2  # what the U-Net says on background is not scored
    assert weak.pseudo_agreement([other_bg], [pseudo], 4) == 1.0
    swapped = pred.copy()
    swapped[:4, :4] = 1  # class 1's 16 pixels called class 2: F1 0 for class 1, 2*16/(32+16) for class 2
    assert np.isclose(weak.pseudo_agreement([swapped], [pseudo], 4), (0 + 2 / 3 + 1 + 1) / 4)


@pytest.mark.slow
def test_stage2_retrained_on_the_shipped_cams_keeps_them_and_picks_by_agreement(points_subset, tmp_path):
    from napari_pathreview.backend.weights import resolve

    data = points_subset("train", 8)
    cfg = weak.WeakConfig(
        seg_epochs=3, seg_steps=2, seg_batch=2, seg_crop=96, tta_scales=(1.0,), tta_flips=False, thresholds=(0.5, 0.7)
    )
    res = weak.train_weak_cells(data, tmp_path / "w" / "weak", cfg, device="cpu", cams="weak-cells")
    assert [Path(f).name for f in res["files"]] == ["weak.safetensors"]  # no CAM models written
    seg, card, cams = weak.load_weak_cells(tmp_path / "w" / "weak.safetensors", device="cpu")
    shipped = resolve("weak-cells", "weak-cells")[1]
    assert card.params["cams"] == shipped.params["cams"] and card.training["stage1_from"] == "weak-cells"
    hist = card.training["history"]
    assert len(hist) == 3 and all({"agreement", "tile_f1"} <= set(r) for r in hist)
    best = max(range(3), key=lambda i: hist[i]["agreement"])
    assert card.training["best_epoch"] == best + 1 and card.metrics["tune_agreement"] == round(
        hist[best]["agreement"], 4
    )
    ref = weak.load_weak_cells(device="cpu")[2]
    for v in weak.VARIANTS:
        a, b = cams[v].state_dict(), ref[v].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
