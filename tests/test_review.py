"""Review backend on real data: comparisons, exchange formats (GeoJSON / CSV / polygons), viewer samples."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np

from napari_pathreview.backend.compare import compare_labels, compare_points, label_errors
from napari_pathreview.backend.exchange import (
    labels_to_geojson,
    read_geojson,
    read_points_file,
    read_points_table,
    write_geojson,
    write_points_csv,
)
from napari_pathreview.backend.metrics import PointScores
from napari_pathreview.backend.seg_metrics import aji, dice, panoptic_quality

MONUSEG = "TCGA-21-5784-01Z-00-DX1"


def _names(sample, classes):
    return [classes[k] if k >= 0 else "unlabeled" for k in sample.labels]


def test_compare_points_equals_point_scores_and_lists_every_error(val_sample, crchisto):
    sample, classes = val_sample
    other = read_points_table(crchisto / "points.csv")  # annotations of another image as a "prediction"
    rng = np.random.default_rng(0)
    pred_yx = sample.yx[::2] + rng.normal(0, 2.0, (len(sample.yx[::2]), 2))
    pred_lab = rng.integers(0, len(classes), len(pred_yx))
    pred_yx = np.vstack([pred_yx, other["img2"].yx[:40]])
    pred_lab = np.r_[pred_lab, rng.integers(0, len(classes), 40)]
    res = compare_points(
        (pred_yx, [classes[k] for k in pred_lab]),
        (sample.yx, _names(sample, classes)),
        radius_um=3.3,
        mpp=0.55,
        classes=classes,
    )
    ref = PointScores(classes, 3.3 / 0.55)
    ref.add(pred_yx, pred_lab, sample.yx, sample.labels)
    assert res.metrics == ref.as_dict(3.3)
    n_fp, n_fn, n_wrong = len(res.fp), len(res.fn), len(res.wrong_class)
    assert len(res.tp_pred) + n_fp == len(pred_yx) and len(res.tp_gt) + n_fn == len(sample.yx)
    assert n_fp > 0 and n_fn > 0 and n_wrong > 0
    assert sorted(e.kind for e in res.errors) == sorted(["fp"] * n_fp + ["fn"] * n_fn + ["class"] * n_wrong)
    d = np.linalg.norm(res.segments[:, 0] - res.segments[:, 1], axis=1)
    assert (d <= 3.3 / 0.55 + 1e-9).all()
    wrong = res.wrong_class
    assert (res.pred_labels[res.tp_pred[wrong]] != res.gt_labels[res.tp_gt[wrong]]).all()
    # reading order: bands of 50 µm from the top
    bands = [int(e.yx[0] // (50 / 0.55)) for e in res.errors]
    assert bands == sorted(bands)


def test_compare_labels_matches_seg_metrics_and_finds_unmatched(shared_data):
    gt = iio.imread(shared_data / "monuseg" / "masks" / f"{MONUSEG}.png")[:300, :300].astype(np.int32)
    pred = np.roll(gt, 2, axis=1)
    gone = np.unique(gt[gt > 0])[:3]
    pred[np.isin(pred, gone)] = 0
    r = compare_labels(pred, gt)
    assert r["dice"] == dice(pred, gt) and r["aji"] == aji(pred, gt)
    assert r["pq"] == panoptic_quality(pred, gt)["pq"] and 0 < r["pq"] < 1
    errs = label_errors(pred, gt)
    assert {e.gt for e in errs if e.kind == "fn"} >= set(gone.tolist())


def test_geojson_and_csv_round_trip_real_annotations(val_sample, tmp_path):
    from napari_pathreview.backend.points import CellPoints

    sample, classes = val_sample
    cl = classes + ["unlabeled"]
    labels = np.where(sample.labels < 0, len(classes), sample.labels)
    probs = np.eye(len(cl), dtype=np.float32)[labels]
    pts = CellPoints(sample.yx, labels, np.ones(len(labels), np.float32), probs, cl, 0.55, source="test")
    back = read_geojson(write_geojson(pts, tmp_path / "a.geojson"))
    assert np.allclose(back.yx, pts.yx) and back.mpp == 0.55
    assert [back.classes[k] for k in back.labels] == [cl[k] for k in labels]
    ((name, csv_back),) = read_points_file(write_points_csv(pts, tmp_path / "a.csv")).items()
    assert name == "a" and np.allclose(csv_back.yx, pts.yx, atol=0.006)
    assert [csv_back.classes[k] for k in csv_back.labels] == [cl[k] for k in labels]
    assert abs(csv_back.mpp - 0.55) < 1e-3


def test_points_table_reads_dataset_and_qupath_exports(crchisto, val_sample, tmp_path):
    sample, classes = val_sample
    by_image = read_points_table(crchisto / "points.csv")
    assert len(by_image) == 80
    got = by_image[sample.name]
    assert np.allclose(got.yx, sample.yx)
    assert [got.classes[k] for k in got.labels] == _names(sample, classes)
    # QuPath "Export measurements" (tab separated, centroids in µm)
    rows = ["Image\tName\tClass\tCentroid X µm\tCentroid Y µm"]
    rows += [
        f"{sample.name}.png\tPathCellObject\t{n}\t{x * 0.55:.4f}\t{y * 0.55:.4f}"
        for (y, x), n in zip(sample.yx, _names(sample, classes))
    ]
    (tmp_path / "qp.tsv").write_text("\n".join(rows) + "\n")
    qp = read_points_table(tmp_path / "qp.tsv")[f"{sample.name}.png"]
    assert qp.mpp == 1.0 and np.allclose(qp.yx, sample.yx * 0.55, atol=1e-3)


def test_labels_export_as_qupath_polygons(shared_data, tmp_path):
    from napari_pathreview._writer import write_labels_geojson_layer

    lab = iio.imread(shared_data / "monuseg" / "masks" / f"{MONUSEG}.png")[:256, :256]
    ids = np.unique(lab[lab > 0])
    (path,) = write_labels_geojson_layer(str(tmp_path / "nuclei.geojson"), lab, {"metadata": {"mpp": 0.25}})
    doc = json.loads(open(path).read())
    assert len(doc["features"]) == len(ids) and doc["properties"]["mpp"] == 0.25
    f = doc["features"][0]
    assert f["geometry"]["type"] == "Polygon" and f["properties"]["classification"]["name"] == "nucleus"
    ring = np.asarray(f["geometry"]["coordinates"][0])
    assert np.allclose(ring[0], ring[-1])
    # polygon centroids (what QuPath and our reader use) sit at the instances' centroids
    from scipy import ndimage

    back = read_geojson(path)
    cents = np.array(ndimage.center_of_mass(lab > 0, lab, ids))
    big = np.bincount(lab.ravel())[ids] > 60
    assert np.median(np.linalg.norm(back.yx - cents, axis=1)[big]) < 1.5
    assert labels_to_geojson(np.zeros((8, 8), np.uint16))["features"] == []
    from napari_pathreview._reader import get_points_reader

    layers = get_points_reader(path)(path)
    assert [kind for _, _, kind in layers] == ["points", "shapes"] and len(layers[1][0]) == len(ids)
    assert layers[1][1]["scale"] == (0.25, 0.25) and layers[0][1]["scale"] == (0.25, 0.25)


def test_viewer_annotations_become_a_training_sample_at_model_scale(val_sample):
    from napari_pathreview.backend.annotations import points_sample

    sample, classes = val_sample
    names = _names(sample, classes)
    same = points_sample(sample.image, sample.yx, names, classes, 0.55, 0.55)
    assert np.array_equal(same.labels, sample.labels)
    y0, x0 = np.floor(sample.yx.min(0) - 8 / 0.55).clip(0)
    assert np.allclose(same.yx, sample.yx - [y0, x0])
    # an image at 40x (0.275 µm/px) is resampled to the model's 0.55: half the pixels, same cells
    big = np.repeat(np.repeat(sample.image, 2, 0), 2, 1)
    s40 = points_sample(big, (sample.yx + 0.5) * 2 - 0.5, names, classes, 0.275, 0.55)
    assert abs(s40.image.shape[0] - same.image.shape[0]) <= 2
    assert np.abs(s40.yx - same.yx).max() < 1.0


def test_cli_convert_geojson_csv_round_trip(crchisto, val_sample, tmp_path, capsys):
    from napari_pathreview.cli import main

    sample, classes = val_sample
    one = tmp_path / "one.csv"
    lines = (crchisto / "points.csv").read_text().splitlines()
    one.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ln.startswith(f"{sample.name},")]) + "\n")
    assert main(["convert", str(one), str(tmp_path / "a.geojson"), "--mpp", "0.55"]) == 0
    assert main(["convert", str(tmp_path / "a.geojson"), str(tmp_path / "b.csv")]) == 0
    back = read_points_table(tmp_path / "b.csv")[""]
    assert np.allclose(back.yx, sample.yx, atol=0.006) and abs(back.mpp - 0.55) < 1e-3
    assert [back.classes[k] for k in back.labels] == _names(sample, classes)
    assert main(["convert", str(crchisto / "points.csv"), str(tmp_path / "c.geojson")]) == 2
    assert "80 images" in capsys.readouterr().err
