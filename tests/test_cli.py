"""The pathreview command: exit codes, outputs, JSON contracts."""

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_pathreview.backend.exchange import read_geojson


def run(*args, cwd=None):
    p = subprocess.run(
        [sys.executable, "-m", "napari_pathreview.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    return p.returncode, p.stdout, p.stderr


def test_info_json_lists_the_shipped_detector():
    rc, out, err = run("info", "--json")
    assert rc == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    assert info["device"] == "cpu" or info["cuda"]
    assert any(m["task"] == "detector" for m in info["models"])


def test_help_exits_zero():
    assert run("--help")[0] == 0


@pytest.mark.parametrize("case", ["missing", "text-as-png", "bad-mpp", "unknown-model"])
def test_bad_input_exit_2_one_line_nothing_written(case, tmp_path, mini_points):
    out = tmp_path / "out"
    img = mini_points / "images" / "TCGA-50-5931.png"
    args = {
        "missing": [tmp_path / "nope.png"],
        "text-as-png": [tmp_path / "fake.png"],
        "bad-mpp": [img, "--mpp", "-1"],
        "unknown-model": [img, "--weights", "no-such-model"],
    }[case]
    (tmp_path / "fake.png").write_text("not an image")
    rc, stdout, err = run("detect", *args, "--out", out)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pathreview: error:")
    if case in ("missing", "text-as-png"):
        assert args[0].name in lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_detect_writes_csv_and_qupath_geojson(tmp_path, mini_points):
    img = mini_points / "images" / "TCGA-50-5931.png"
    rc, out, err = run("detect", img, "--out", tmp_path / "o", "--mpp", "0.55")
    assert rc == 0, err
    csv_path, gj = tmp_path / "o" / "TCGA-50-5931.csv", tmp_path / "o" / "TCGA-50-5931.geojson"
    assert csv_path.exists() and gj.exists()
    rows = csv_path.read_text().strip().splitlines()
    assert rows[0].startswith("x,y,x_um,y_um,class,score,p_")
    doc = json.loads(gj.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(rows) - 1 > 100
    f0 = doc["features"][0]
    assert f0["geometry"]["type"] == "Point" and set(f0["properties"]["classification"]) == {"name", "color"}
    back = read_geojson(gj)
    xs = np.array([float(r.split(",")[0]) for r in rows[1:]])
    assert np.allclose(back.yx[:, 1], xs, atol=0.01)
    names = [r.split(",")[4] for r in rows[1:]]
    assert [back.classes[k] for k in back.labels] == names


@pytest.mark.slow
def test_evaluate_detector_json_keys(small_points_dataset):
    rc, out, err = run("evaluate", "detector", "--data", small_points_dataset, "--split", "validation", "--json")
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert set(res) >= {"detection", "classes", "mF1", "weighted_f1", "n_images", "radius_um"}
    assert set(res["detection"]) == {"precision", "recall", "f1"}
    assert set(res["classes"]) == {"epithelial", "fibroblast", "inflammatory", "others"}
    for c in res["classes"].values():
        assert set(c) == {"precision", "recall", "f1", "support"}
    assert res["n_images"] == 2 and res["radius_um"] == 3.3 and res["detection"]["f1"] > 0.6


@pytest.mark.slow
def test_evaluate_detector_json_keys_on_the_fixture_set(mini_points):
    """The same contract on the repository's fixture set (fresh clone); no accuracy is read from it."""
    rc, out, err = run("evaluate", "detector", "--data", mini_points, "--split", "validation", "--json")
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert set(res["classes"]) == {"epithelial", "fibroblast", "inflammatory", "others"}
    assert res["n_images"] == 1 and res["radius_um"] == 3.3 and 0 < res["detection"]["f1"] <= 1
    for c in res["classes"].values():
        assert set(c) == {"precision", "recall", "f1", "support"} and c["support"] > 0


@pytest.mark.slow
def test_evaluate_detector_tta_scores_the_tta_detections(small_points_dataset):
    """``--tta`` reaches the detector (also under the enhancer): the JSON equals scoring the pipeline's TTA
    cells directly."""
    from napari_pathreview.backend import pipelines
    from napari_pathreview.backend.datasets import load_points_dataset
    from napari_pathreview.backend.metrics import PointScores

    rc, out, err = run(
        "evaluate", "detector", "--data", small_points_dataset, "--split", "validation", "--tta", "--json"
    )
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    classes = pipelines.get_model(None, "detector", "cpu")[1].classes
    samples, _ = load_points_dataset(small_points_dataset, "validation", classes=list(classes))
    scores, plain = PointScores(classes, 6.0), PointScores(classes, 6.0)
    for s in samples:
        p = pipelines.detect(s.image, pipelines.DetectOptions(mpp=0.55, device="cpu", tta=True))
        scores.add(p.yx, p.labels, s.yx, s.labels)
        q = pipelines.detect(s.image, pipelines.DetectOptions(mpp=0.55, device="cpu"))
        plain.add(q.yx, q.labels, s.yx, s.labels)
    ref, no_tta = scores.as_dict(3.3), plain.as_dict(3.3)
    assert res["detection"] == pytest.approx(ref["detection"]) and res["mF1"] == pytest.approx(ref["mF1"])
    assert res["detection"] != pytest.approx(no_tta["detection"])
    rc, out, err = run(
        "evaluate", "enhancer", "--data", small_points_dataset, "--split", "validation", "--tta", "--json"
    )
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["base"]["detection"] == pytest.approx(ref["detection"])


@pytest.mark.slow
def test_evaluate_on_a_folder_without_images_is_exit_2(tmp_path):
    rc, out, err = run("evaluate", "detector", "--data", tmp_path, "--json")
    assert rc == 2 and str(tmp_path) in err


@pytest.mark.slow
def test_demo_out_writes_cells_and_a_rendered_png(tmp_path):
    """README command 1 without a display: the bundled sample's cells as CSV, GeoJSON and a PNG."""
    from skimage.io import imread

    rc, out, err = run("demo", "--out", tmp_path / "demo", "--device", "cpu")
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    rows = (tmp_path / "demo" / "cells.csv").read_text().strip().splitlines()
    assert res["cells"] == len(rows) - 1 > 50 and sum(res["per_class"].values()) == res["cells"]
    doc = json.loads((tmp_path / "demo" / "cells.geojson").read_text())
    assert len(doc["features"]) == res["cells"]
    png = imread(tmp_path / "demo" / "cells.png")
    assert png.shape[:2] == (512, 512) and png.shape[2] in (3, 4)


@pytest.mark.parametrize(
    "args,word",
    [
        (["--widths", "32,x"], "widths"),
        (["--widths", "16,32", "--init", "segmenter-monuseg"], "widths"),
        (["--per-grid", "0,0,0"], "per-grid"),
        (["--per-grid", "1,4"], "per-grid"),
        (["--tile", "100"], "tile"),
        (["--pale-nuclei", "1.5"], "pale-nuclei"),
        (["--scale-jitter", "0.7"], "scale-jitter"),
    ],
)
@pytest.mark.slow
def test_train_refuses_bad_options_with_exit_2(args, word, tmp_path, mini_masks):
    rc, _, err = run("train", "segmenter", "--data", mini_masks, "--out", tmp_path / "w", *args)
    assert rc == 2 and word in err.strip().splitlines()[-1]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_train_enhancer_uses_the_given_learning_rate(points_subset, tmp_path):
    data = points_subset("train", 9)  # 8 tune images + 1 fitted
    rc, out, err = run(
        "train",
        "enhancer",
        "--data",
        data,
        "--out",
        tmp_path / "enh",
        "--epochs",
        "1",
        "--lr",
        "3e-4",
        "--device",
        "cpu",
    )
    assert rc == 0, err
    card = json.loads((tmp_path / "enh.json").read_text())
    assert card["training"]["options"]["lr"] == 3e-4 and card["training"]["options"]["epochs"] == 1
    assert json.loads(out.strip().splitlines()[-1])["out"] == str(tmp_path / "enh.safetensors")


@pytest.mark.parametrize(
    "task,args,word",
    [
        ("weak-cells", ["--amp"], "--amp"),
        ("enhancer", ["--deepen", "64"], "--deepen"),
        ("classifier", ["--lr", "1e-4"], "--lr"),
        ("detector", ["--cams", "weak-cells"], "--cams"),
    ],
)
def test_train_refuses_an_option_its_task_does_not_use(task, args, word, tmp_path, mini_points):
    """Each task's sub-command takes its own options only: another task's is refused by its parser, in one
    line naming the option and the command, before anything is read or written."""
    rc, _, err = run("train", task, "--data", mini_points, "--out", tmp_path / "w", *args)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and word in lines[0] and f"train {task}" in lines[0]
    assert "unrecognized arguments" in lines[0]
    assert not list(tmp_path.iterdir())
