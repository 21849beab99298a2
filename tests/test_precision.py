"""Reduced-precision inference (``--precision``): which precision a run resolves to, and that bf16 gives
float32's outputs on real H&E (the bundled MoNuSeg sample) within the bounds ``bench precision`` records."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from napari_pathreview.backend import pipelines, precision
from napari_pathreview.backend.errors import InputError
from napari_pathreview.backend.matching import match_points
from napari_pathreview.backend.seg_metrics import dice


def _card(*verified):
    return SimpleNamespace(training={"precision": {"verified": list(verified)}})


def test_resolve_auto_needs_a_native_and_verified_precision(monkeypatch):
    monkeypatch.setattr(precision, "native", lambda dev: ("bf16",) if dev == "cpu" else ("bf16", "fp16"))
    assert precision.resolve("auto", "cpu", _card("bf16")) == "bf16"
    assert precision.resolve("auto", "cpu", _card()) == "fp32"  # not verified: stays fp32
    assert precision.resolve("auto", "cuda:0", _card("fp16")) == "fp16"
    monkeypatch.setattr(precision, "native", lambda dev: ())
    assert precision.resolve("auto", "cpu", _card("bf16")) == "fp32"  # no native bf16 on this CPU
    assert precision.resolve(None, "cpu") == "fp32" and precision.resolve("BF16", "cpu") == "bf16"
    with pytest.raises(InputError, match="fp16 is not a CPU precision"):
        precision.resolve("fp16", "cpu")
    with pytest.raises(InputError, match="choose one of fp32, bf16, fp16, auto"):
        precision.resolve("int8", "cpu")


def test_the_scope_sets_autocast_and_is_restored():
    import torch

    x = torch.randn(4, 8)
    w = torch.nn.Linear(8, 8)
    with precision.use("bf16"):
        assert precision.current() == "bf16"
        with torch.inference_mode(), precision.autocast("cpu"):
            assert w(x).dtype == torch.bfloat16
    assert precision.current() == "fp32"
    with precision.autocast("cpu"):
        assert w(x).dtype == torch.float32


def test_bf16_detection_and_enhancement_equal_fp32_on_real_hne(sample_he):
    ref = pipelines.detect(sample_he, pipelines.DetectOptions(mpp=0.25, device="cpu"))
    low = pipelines.detect(sample_he, pipelines.DetectOptions(mpp=0.25, device="cpu", precision="bf16"))
    assert low.probs.dtype == np.float32 and low.features.dtype == np.float32  # decoding stays float32
    m = match_points(low.yx, ref.yx, 6.0)
    f1 = 2 * len(m.pred_idx) / (len(ref) + len(low))
    assert len(ref) > 50 and f1 >= 0.98
    assert (ref.labels[m.gt_idx] == low.labels[m.pred_idx]).mean() >= 0.95
    e_ref = pipelines.enhance(sample_he, options=pipelines.EnhanceOptions(mpp=0.25, device="cpu"))
    e_low = pipelines.enhance(sample_he, options=pipelines.EnhanceOptions(mpp=0.25, device="cpu", precision="bf16"))
    m = match_points(e_low.enhanced.yx, e_ref.enhanced.yx, 6.0)
    assert (e_ref.enhanced.labels[m.gt_idx] == e_low.enhanced.labels[m.pred_idx]).mean() >= 0.95
    assert e_low.attention is not None and e_low.attention.weights.dtype == np.float32


def test_bf16_segmentation_equals_fp32_on_real_hne(sample_he):
    ref = pipelines.segment(sample_he, pipelines.SegmentOptions(mpp=0.25, device="cpu"))
    low = pipelines.segment(sample_he, pipelines.SegmentOptions(mpp=0.25, device="cpu", precision="bf16"))
    assert ref.labels.max() > 50 and dice(ref.labels > 0, low.labels > 0) >= 0.99
    auto = pipelines.segment(sample_he, pipelines.SegmentOptions(mpp=0.25, device="cpu", precision="auto"))
    card = pipelines.get_model(None, "segmenter", "cpu")[1]
    want = precision.resolve("auto", "cpu", card)
    assert np.array_equal(auto.labels, (low if want == "bf16" else ref).labels)


def test_bf16_heat_maps_equal_fp32_and_lrp_stays_float32(mini_labels):
    """Explain at bf16 on a committed H&E image: Grad-CAM and CAM maps correlate r >= 0.99 with fp32's and the
    probabilities agree; LRP runs in float32 whatever the scope (its maps are the fp32 maps exactly)."""
    from napari_pathreview.backend.slides import open_slide

    image = open_slide(sorted((mini_labels / "images").glob("*.jpg"))[0], mpp=0.62)
    for method in ("gradcam", "cam", "lrp-epsilon"):
        o = pipelines.ExplainOptions("classifier-glas", method, device="cpu")
        ref = pipelines.explain(image, o)
        low = pipelines.explain(image, pipelines.ExplainOptions(**{**o.__dict__, "precision": "bf16"}))
        assert low.maps.dtype == np.float32 and np.abs(low.probs - ref.probs).max() < 0.02
        for a, b in zip(ref.maps, low.maps):
            r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
            assert r >= 0.99, (method, r)
        if method.startswith("lrp"):
            assert np.allclose(ref.maps, low.maps, atol=1e-6)


def test_cli_precision_flag_and_a_new_precision_is_a_new_job(tmp_path, capsys, sample_he):
    import imageio.v3 as iio

    from napari_pathreview.cli import main

    img = tmp_path / "tile.png"
    iio.imwrite(img, sample_he)
    out = tmp_path / "out"
    assert main(["detect", str(img), "--out", str(out), "--mpp", "0.25", "--device", "cpu"]) == 0
    first = (out / "tile.csv").read_text()
    capsys.readouterr()
    assert main(["detect", str(img), "--out", str(out), "--mpp", "0.25", "--device", "cpu", "--precision", "bf16"]) == 0
    assert "skipped" not in capsys.readouterr().err  # a bf16 run is not the fp32 job already done
    rows = (out / "tile.csv").read_text().strip().splitlines()
    assert abs(len(rows) - len(first.strip().splitlines())) <= 3
    assert (
        main(
            [
                "detect",
                str(img),
                "--out",
                str(tmp_path / "o2"),
                "--mpp",
                "0.25",
                "--device",
                "cpu",
                "--precision",
                "fp16",
            ]
        )
        == 2
    )
    assert "fp16 is not a CPU precision" in capsys.readouterr().err


def test_shipped_cards_record_what_bench_precision_measured():
    from napari_pathreview.backend.weights import resolve

    for name, task in (
        ("detector-crchisto", "detector"),
        ("enhancer-crchisto", "enhancer"),
        ("segmenter-monuseg-wide", "segmenter"),
        ("segmenter-monuseg", "segmenter"),
    ):
        path, card = resolve(name, task)
        rec = card.training["precision"]
        assert rec["command"].startswith("pathreview bench precision")
        for p, r in rec["measured"]["by_precision"].items():
            assert (p in rec["verified"]) == r["verified"]
            if task == "segmenter":
                assert r["verified"] == (r["label_dice"] >= 0.995 and abs(r["delta"]) <= 0.005)
            else:
                assert r["verified"] == (
                    r["matched_f1"] >= 0.99 and abs(r["delta"]) <= 0.005 and r["same_class"] >= 0.995
                )
        assert json.loads(path.with_suffix(".json").read_text())["training"]["precision"] == rec
