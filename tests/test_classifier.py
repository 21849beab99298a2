"""Classifier models, losses, labels.csv datasets, thresholds, training and evaluation on GlaS."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from napari_pathreview.backend import losses
from napari_pathreview.backend.classification import (
    decide,
    read_labels_csv,
    search_thresholds,
    targets_of,
    train_classifier,
)
from napari_pathreview.backend.models.classifier import ClassifierConfig, build_classifier, nearest_neighbours
from napari_pathreview.backend.weights import ModelCard, load_model, resolve

EVAL_KEYS = {"accuracy", "balanced_accuracy", "auc", "f1", "per_class", "faithfulness"}


@pytest.fixture(scope="module")
def glas(shared_data):
    return shared_data / "glas"


def _small_glas(glas, root, per_class=2, multilabel=False):
    """A labels.csv copy of a few GlaS images per (split, class) under ``root``."""
    rows = list(csv.DictReader(open(glas / "labels.csv")))
    keep = []
    for split in ("train", "testA"):
        for grade in ("benign", "malignant"):
            keep += [r for r in rows if r["split"] == split and r["grade"] == grade][:per_class]
    (root / "images").mkdir(parents=True)
    for r in keep:
        shutil.copy(glas / "images" / f"{r['image']}.jpg", root / "images")
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "split", "labels"])
        for i, r in enumerate(keep):
            lab = r["grade"] + (";gland" if multilabel and i % 2 else "")
            w.writerow([r["image"], r["split"], lab])
    return root


def test_labels_csv_single_and_multi_label(glas, tmp_path):
    images, classes, multi = read_labels_csv(glas)
    assert classes == ["benign", "malignant"] and not multi and len(images) == 93
    assert {s.split for s in images} == {"train", "testA"}
    ml = _small_glas(glas, tmp_path / "ml", multilabel=True)
    images, classes, multi = read_labels_csv(ml)
    assert multi and classes == ["benign", "gland", "malignant"]
    t = targets_of(images, classes)
    assert t.shape == (8, 3) and set(t.sum(1)) == {1.0, 2.0}


@pytest.mark.parametrize(
    "cfg",
    [
        ClassifierConfig(in_channels=4, classes=tuple("abcde"), multilabel=True, se=True),
        ClassifierConfig(head="arcface", embed_dim=16),
        ClassifierConfig(decoder=True, widths=(8, 16, 32)),
    ],
)
def test_classifier_variants(cfg):
    torch.manual_seed(0)
    m = build_classifier(cfg).eval()
    x = torch.randn(3, cfg.in_channels, 64, 96)
    torch.set_grad_enabled(False)
    try:
        _check_variant(m, x, cfg)
    finally:
        torch.set_grad_enabled(True)


def _check_variant(m, x, cfg):
    logits = m(x)
    assert logits.shape == (3, len(cfg.classes))
    assert m.forward_features(x).shape[-2:] == (64 // m.stride, 96 // m.stride)
    emb = m.embed(x)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    sim, idx = nearest_neighbours(emb, emb[1:2], k=2)
    assert sim[0, 0] == pytest.approx(1.0, abs=1e-5) and torch.allclose(emb[idx[0, 0]], emb[1], atol=1e-3)
    if cfg.head == "arcface":
        assert logits.abs().max() <= cfg.arcface_s + 1e-4  # scaled cosines
    if cfg.decoder:
        assert m.reconstruct(m.forward_features(x), (64, 96)).shape == x.shape


def test_losses_behave():
    torch.manual_seed(0)
    t = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    good, bad = (t * 2 - 1) * 6, -(t * 2 - 1) * 6
    for fn in (losses.weighted_bce, losses.focal_loss, losses.soft_f1_loss, losses.lovasz_hinge):
        assert float(fn(good, t)) < 0.05 < float(fn(bad, t))
    mid = torch.randn(4, 3, requires_grad=True)
    with torch.no_grad():
        assert float(losses.focal_loss(mid, t)) < float(losses.weighted_bce(mid, t))  # focal down-weights
        assert float(losses.weighted_bce(mid, t, pos_weight=torch.full((3,), 3.0))) > float(losses.weighted_bce(mid, t))
    y = torch.tensor([0, 2, 1, 1])
    assert float(losses.lovasz_softmax(torch.eye(3)[y] * 9, y)) < 0.01 < float(losses.lovasz_softmax(mid.detach(), y))
    cos = torch.tensor([[0.9, 0.1, -0.2]])
    arc = losses.arcface_logits(cos, torch.tensor([0]), s=10, m=0.5)
    assert arc[0, 0] < 9.0 and torch.allclose(arc[0, 1:], 10 * cos[0, 1:])  # margin only on the target
    assert float(losses.arcface_loss(cos, torch.tensor([0]))) > float(
        torch.nn.functional.cross_entropy(16 * cos, torch.tensor([0]))
    )
    img = torch.rand(2, 3, 8, 8)
    assert float(losses.dual_loss(torch.tensor(1.0), img + 0.1, img, 10)) == pytest.approx(1.1, abs=1e-5)
    total = losses.build_loss("focal+lovasz", multilabel=True)(mid, t)
    total.backward()
    assert mid.grad is not None and torch.isfinite(mid.grad).all()


def test_threshold_search_and_decisions():
    card = ModelCard(name="x", task="classifier", config={"multilabel": False}, classes=["b", "m"], mpp=1.0)
    p1 = np.array([0.2, 0.35, 0.4, 0.8, 0.9])
    probs, t = np.stack([1 - p1, p1], 1), np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]])
    th = search_thresholds(probs, t, multilabel=False)
    assert 0.35 < th[1] <= 0.4 and th[0] == pytest.approx(1 - th[1])
    card.params["thresholds"] = th
    assert (decide(probs, card) == t).all()
    card.config["multilabel"] = True
    card.params["thresholds"] = [0.5, 0.85]
    assert decide(probs, card)[:, 1].tolist() == [0, 0, 0, 0, 1]


def test_shipped_classifier_card_records_how_it_was_made():
    weights, card = resolve("classifier-glas", "classifier")
    assert weights.stat().st_size < 5e6 and card.classes == ["benign", "malignant"]
    assert card.training["command"].startswith("pathreview train classifier")
    assert {"seed", "seconds", "tune_images", "best_epoch"} <= set(card.training)
    assert len(card.params["thresholds"]) == 2 and "research use only" in card.licence
    assert card.metrics["testA"]["accuracy"] >= 0.85
    model, _ = load_model("classifier-glas", "classifier", "cpu")
    assert not model.training


def test_train_classifier_tiny_run_writes_weights_and_card(glas, tmp_path):
    data = _small_glas(glas, tmp_path / "ds", per_class=3)
    out = tmp_path / "w" / "tiny"
    model, card = train_classifier(
        data,
        out,
        epochs=1,
        steps_per_epoch=2,
        batch_size=4,
        crop=64,
        widths=(8, 16),
        tune_images=2,
        device="cpu",
        command="test",
    )
    assert (tmp_path / "w" / "tiny.safetensors").is_file()
    saved = json.loads((tmp_path / "w" / "tiny.json").read_text())
    assert saved["task"] == "classifier" and saved["mpp"] == pytest.approx(1.24)
    assert len(saved["params"]["thresholds"]) == 2 and len(saved["training"]["tune_images"]) == 2
    loaded, _ = load_model(tmp_path / "w" / "tiny.safetensors", "classifier", "cpu")
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)


@pytest.mark.parametrize("kw", [dict(loss="bce+f1+lovasz", se=True, decoder=True), dict(loss="focal")])
def test_train_multilabel_dual_loss_and_arcface_variants(glas, tmp_path, kw):
    multilabel = "f1" in kw["loss"]
    data = _small_glas(glas, tmp_path / "ds", per_class=2, multilabel=multilabel)
    head = "linear" if multilabel else "arcface"
    model, card = train_classifier(
        data,
        tmp_path / "m",
        epochs=1,
        steps_per_epoch=2,
        batch_size=4,
        crop=64,
        widths=(8, 16),
        tune_images=2,
        device="cpu",
        head=head,
        **kw,
    )
    assert card.config["multilabel"] is multilabel and card.config["head"] == head
    assert len(card.params["thresholds"]) == len(card.classes) == (3 if multilabel else 2)
    assert np.isfinite(card.training["history"][0]["loss"])
    loaded, _ = load_model(tmp_path / "m.safetensors", "classifier", "cpu")
    with torch.no_grad():
        assert loaded.embed(torch.randn(2, 3, 64, 64)).shape[0] == 2


@pytest.mark.slow
def test_evaluate_classifier_json_keys(glas, tmp_path, capsys):
    from napari_pathreview.cli import main

    data = _small_glas(glas, tmp_path / "ds", per_class=1)
    rc = main(
        ["evaluate", "classifier", "--data", str(data), "--split", "testA", "--limit", "1", "--json", "--device", "cpu"]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert EVAL_KEYS <= set(res) and res["n_images"] == 1
    assert set(res["per_class"]) == {"benign", "malignant"}
    assert {"cam", "gradcam", "lrp-epsilon", "lrp-gamma", "lrp-a1b0", "lrp-a2b1"} == set(res["faithfulness"])
    for v in res["faithfulness"].values():
        assert 0 <= v["deletion_auc"] <= 1 and 0 <= v["random_deletion_auc"] <= 1


def test_evaluate_unknown_split_is_exit_2(glas, capsys):
    from napari_pathreview.cli import main

    assert main(["evaluate", "classifier", "--data", str(glas), "--split", "testB", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "testB" in err


def test_evaluate_classifier_json_keys_on_the_fixture_set(mini_labels, capsys):
    """The JSON contract on the repository's fixture set (made-up grades: no accuracy is read from it)."""
    from napari_pathreview.cli import main

    rc = main(
        [
            "evaluate",
            "classifier",
            "--data",
            str(mini_labels),
            "--split",
            "testA",
            "--limit",
            "1",
            "--json",
            "--device",
            "cpu",
            "--no-faithfulness",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"accuracy", "balanced_accuracy", "auc", "f1", "per_class"} <= set(res) and res["n_images"] == 1  # --limit 1
    assert set(res["per_class"]) == {"benign", "malignant"} and 0 <= res["accuracy"] <= 1
    images, classes, multi = read_labels_csv(mini_labels)
    assert classes == ["benign", "malignant"] and not multi and len(images) == 4
