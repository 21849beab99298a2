"""Many slides: Dask LocalCluster runs equal the in-process run; reruns skip finished slides."""

import csv
import io
import shutil

import pytest

from napari_pathreview.backend.pipelines import BatchOptions, DetectOptions, detect_files


def _inputs(mini_points, tmp_path, names=("img4", "img7", "img12")):
    """Up to three real H&E inputs at 0.55 µm/px from the repository's fixture set (the third a crop)."""
    import imageio.v3 as iio

    d = tmp_path / "in"
    d.mkdir()
    a, b = sorted((mini_points / "images").glob("*.png"))
    out = [shutil.copy(a, d / f"{names[0]}.png"), shutil.copy(b, d / f"{names[1]}.png")]
    if len(names) > 2:
        iio.imwrite(d / f"{names[2]}.png", iio.imread(a)[:300, 40:340])
        out.append(d / f"{names[2]}.png")
    return out


def _same_cells(a: str, b: str) -> bool:
    """Two cell CSVs list the same cells (positions and classes exactly) with the same numbers to within one
    unit of their 4th decimal: a single-threaded worker sums convolutions in another order than 2 threads."""
    ra, rb = list(csv.DictReader(io.StringIO(a))), list(csv.DictReader(io.StringIO(b)))
    if len(ra) != len(rb) or (ra and ra[0].keys() != rb[0].keys()):
        return False
    for x, y in zip(ra, rb):
        for k in x:
            try:
                fx, fy = float(x[k]), float(y[k])
            except ValueError:
                if x[k] != y[k]:
                    return False
                continue
            if abs(fx - fy) > (0 if k in ("x", "y") else 1.5e-4):
                return False
    return True


@pytest.mark.slow
def test_two_worker_cluster_equals_in_process_and_reruns_skip_done_slides(mini_points, tmp_path):
    inputs = _inputs(mini_points, tmp_path)
    seq = detect_files(inputs, tmp_path / "seq", DetectOptions(mpp=0.55, device="cpu"))
    assert len(seq["ran"]) == 3 and not seq["skipped"] and len(seq["written"]) == 6
    par = detect_files(inputs, tmp_path / "par", DetectOptions(mpp=0.55, device="cpu"), BatchOptions(workers=2))
    assert len(par["ran"]) == 3
    for p in inputs:
        stem = p.stem
        a = (tmp_path / "seq" / f"{stem}.csv").read_text()
        assert _same_cells(a, (tmp_path / "par" / f"{stem}.csv").read_text()) and a.count("\n") > 20

    # a crash after two slides: the third slide's outputs and record are missing
    (tmp_path / "par" / "img12.csv").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "par").glob("img[47].*")}
    again = detect_files(inputs, tmp_path / "par", DetectOptions(mpp=0.55, device="cpu"))
    assert again["ran"] == [str(inputs[2])] and len(again["skipped"]) == 2
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "par").glob("img[47].*")}
    assert (tmp_path / "par" / "img12.csv").read_text() == (tmp_path / "seq" / "img12.csv").read_text()

    # another job (a different threshold) is not "done": everything runs again
    other = detect_files(inputs, tmp_path / "par", DetectOptions(mpp=0.55, device="cpu", threshold=0.6))
    assert len(other["ran"]) == 3 and not other["skipped"]


@pytest.mark.slow
def test_segment_many_inputs_writes_one_store_each_and_reruns_skip(mini_points, tmp_path, capsys):
    from napari_pathreview.cli import main

    inputs = _inputs(mini_points, tmp_path, names=("img4", "img7"))
    args = ["segment", *map(str, inputs), "--out", str(tmp_path / "masks"), "--mpp", "0.55", "--device", "cpu"]
    assert main(args) == 0
    out, _ = capsys.readouterr()
    stores = sorted((tmp_path / "masks").glob("*.zarr"))
    assert [s.name for s in stores] == ["img4.zarr", "img7.zarr"] and out.strip().splitlines() == list(map(str, stores))
    for s in stores:
        rows = (s / "instances.csv").read_text().strip().splitlines()
        assert rows[0].startswith("label,") and len(rows) > 20
    mtimes = [(s / "instances.csv").stat().st_mtime_ns for s in stores]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "" and err.count("skipped") == 2
    assert mtimes == [(s / "instances.csv").stat().st_mtime_ns for s in stores]


def test_a_rerun_after_the_models_card_changed_runs_again(mini_points, tmp_path):
    """The job key holds a digest of the weights and the card's decoding: the same model name with a
    re-tuned card (here its minimum distance) is another job, so finished slides are detected again."""
    import json

    from napari_pathreview.backend.weights import resolve

    src = resolve("detector-crchisto", "detector")[0]
    w = tmp_path / "w" / "det.safetensors"
    w.parent.mkdir()
    shutil.copy(src, w)
    shutil.copy(src.with_suffix(".json"), w.with_suffix(".json"))
    inputs = _inputs(mini_points, tmp_path, names=("a", "b"))
    opts = DetectOptions(weights=str(w), mpp=0.55, device="cpu")
    first = detect_files(inputs, tmp_path / "o", opts)
    assert len(first["ran"]) == 2 and len(detect_files(inputs, tmp_path / "o", opts)["skipped"]) == 2
    before = (tmp_path / "o" / "b.csv").read_text().count("\n")
    card = json.loads(w.with_suffix(".json").read_text())
    card["params"]["min_distance_um"] = 4.0
    w.with_suffix(".json").write_text(json.dumps(card))
    again = detect_files(inputs, tmp_path / "o", opts)
    assert len(again["ran"]) == 2 and not again["skipped"]
    assert 20 < (tmp_path / "o" / "b.csv").read_text().count("\n") < before  # written anew: cells 4 µm apart at least
