"""Issue 27 item 1: a dataset at any magnification — ``--mpp`` on ``pathreview train`` / ``evaluate`` and a
dataset folder's ``dataset.json`` — resampled to the model's scale."""

from __future__ import annotations

import csv
import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
from skimage.transform import resize

from napari_pathreview.backend.datasets import (
    data_mpp,
    dataset_mpp,
    load_points_dataset,
    rescale_points_samples,
)
from napari_pathreview.backend.errors import InputError
from napari_pathreview.cli import main


def _copy_at(src, dst, factor: float, mpp: float | None):
    """A points dataset ``src`` resampled by ``factor`` into ``dst`` (images and x/y), with a
    ``dataset.json`` declaring ``mpp`` (none when None)."""
    (dst / "images").mkdir(parents=True)
    for p in (src / "images").iterdir():
        img = iio.imread(p)
        shape = (round(img.shape[0] * factor), round(img.shape[1] * factor))
        out = resize(img, shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
        iio.imwrite(dst / "images" / p.name, np.clip(np.rint(out), 0, 255).astype(np.uint8))
    rows = list(csv.DictReader(open(src / "points.csv")))
    for r in rows:
        r["x"] = f"{(float(r['x']) + 0.5) * factor - 0.5:.3f}"
        r["y"] = f"{(float(r['y']) + 0.5) * factor - 0.5:.3f}"
    with open(dst / "points.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if mpp is not None:
        (dst / "dataset.json").write_text(json.dumps({"mpp": mpp}))
    return dst


def test_a_40x_copy_of_a_20x_set_gives_the_same_model_inputs(mini_points, tmp_path):
    """The 0.55 µm/px fixture set upsampled to 0.275 µm/px and declared so in dataset.json: resampled back to
    the model's 0.55 µm/px, the images and cell positions are the originals within resampling error."""
    x40 = _copy_at(mini_points, tmp_path / "x40", 2.0, 0.275)
    assert dataset_mpp(x40) == 0.275 and dataset_mpp(mini_points) == 0.55
    assert data_mpp(0.5, x40) == 0.5 and data_mpp(None, x40) == 0.275  # --mpp wins over dataset.json
    ref, classes = load_points_dataset(mini_points)
    big, classes40 = load_points_dataset(x40)
    back = rescale_points_samples(big, 0.275 / 0.55)
    assert classes40 == classes and len(back) == len(ref) == 2
    for a, b in zip(ref, back):
        assert a.image.shape == b.image.shape and b.image.dtype == np.uint8
        diff = np.abs(a.image.astype(float) - b.image)
        assert diff.mean() < 6.0 and np.median(diff) <= 4  # grey levels of 255: bilinear up, anti-aliased down
        assert np.corrcoef(a.image.ravel(), b.image.ravel())[0, 1] > 0.97
        assert len(a.yx) == len(b.yx) > 50 and np.abs(a.yx - b.yx).max() < 0.01
        assert np.array_equal(a.labels, b.labels)


def test_evaluate_reads_dataset_json_and_mpp_wins(mini_points, tmp_path, capsys):
    """``evaluate detector`` on the 40x copy finds its scale in dataset.json: the same detection F1 as the
    20x original within resampling noise; a wrong ``--mpp`` (the 20x value) is worse."""

    def f1(data, *extra):
        assert main(["evaluate", "detector", "--data", str(data), "--split", "train", "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["detection"]["f1"]

    x40 = _copy_at(mini_points, tmp_path / "x40", 2.0, 0.275)
    at20, at40 = f1(mini_points), f1(x40)
    assert at20 > 0.6 and abs(at40 - at20) < 0.05
    assert f1(x40, "--mpp", "0.55") < at20 - 0.1  # read as 20x, nuclei look twice their size


@pytest.mark.parametrize(
    "content,message",
    [("{", "cannot read it"), ('{"scale": 1}', 'no "mpp" key'), ('{"mpp": -1}', "mpp")],
)
def test_a_bad_dataset_json_is_one_line_exit_2(mini_points, tmp_path, capsys, content, message):
    bad = tmp_path / "bad"
    shutil.copytree(mini_points, bad)
    (bad / "dataset.json").write_text(content)
    with pytest.raises(InputError, match=message):
        dataset_mpp(bad)
    assert main(["evaluate", "detector", "--data", str(bad), "--split", "train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.json" in err[0]


@pytest.mark.slow
def test_fine_tune_from_a_40x_folder_trains_at_the_models_scale(mini_points, tmp_path, capsys):
    """``train detector --init detector-crchisto`` on the 40x copy: the data is resampled to the init's
    0.55 µm/px (the card keeps it) and the fine-tuned model still finds the cells of the 20x original."""
    x40 = _copy_at(mini_points, tmp_path / "x40", 2.0, 0.275)
    out = tmp_path / "ft"
    argv = ["train", "detector", "--data", str(x40), "--init", "detector-crchisto", "--out", str(out)]
    assert main([*argv, "--epochs", "1", "--device", "cpu"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["mpp"] == 0.55
    capsys.readouterr()
    assert (
        main(["evaluate", "detector", "--data", str(mini_points), "--weights", str(out) + ".safetensors", "--json"])
        == 0
    )
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["detection"]["f1"] > 0.5


def test_a_folder_of_unknown_scale_is_refused_unless_it_is_a_bundled_data_set(tmp_path, monkeypatch):
    """Issue 27 item 1: no --mpp and no dataset.json -> InputError naming the folder and both fixes; the
    three bundled data sets under the data root keep their tasks' defaults (None)."""
    monkeypatch.setenv("PATHREVIEW_DATA", str(tmp_path / "data"))
    for name in ("crchisto", "monuseg", "glas"):
        (tmp_path / "data" / name).mkdir(parents=True)
        assert data_mpp(None, tmp_path / "data" / name) is None
    other = tmp_path / "elsewhere" / "crchisto"  # the same name elsewhere is a copy: its scale is not known
    other.mkdir(parents=True)
    with pytest.raises(InputError, match="microns per pixel") as e:
        data_mpp(None, other)
    assert str(other) in str(e.value) and "--mpp" in str(e.value) and "dataset.json" in str(e.value)
    assert data_mpp(0.25, other) == 0.25
    (other / "dataset.json").write_text('{"mpp": 0.5}')
    assert data_mpp(None, other) == 0.5


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_refuse_a_copy_without_dataset_json(mini_points, tmp_path, capsys, command):
    """A copied points folder without dataset.json: exit 2 and one line naming it; with it: accepted."""
    data = tmp_path / "copy"
    shutil.copytree(mini_points, data)
    (data / "dataset.json").unlink()
    tail = ["--out", str(tmp_path / "w"), "--epochs", "1"] if command == "train" else ["--split", "train", "--json"]
    assert main([command, "detector", "--data", str(data), *tail]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(data) in err[0] and "--mpp" in err[0] and "dataset.json" in err[0]
    assert not (tmp_path / "w.safetensors").exists()
    if command == "evaluate":
        (data / "dataset.json").write_text('{"mpp": 0.55}')
        assert main([command, "detector", "--data", str(data), *tail]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["detection"]["f1"] > 0.5
