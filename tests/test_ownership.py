"""Nothing a user owns is destroyed: no command writes over its input (not even with --overwrite), nor over
a file it did not write unless --overwrite is given; its own outputs are replaced on reruns. Issue 31,
failures 1 and 2. Inputs are built from the bundled sample (512 x 512 H&E at 0.25 µm/px)."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_pathreview._sample_data import SAMPLE_TILE
from napari_pathreview.backend.errors import InputError
from napari_pathreview.cli import main


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def digest(path: Path) -> str:
    """SHA-256 over a file, or over every file (name and bytes) of a folder."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode() + f.read_bytes())
    return h.hexdigest()


def one_line(err: str, *needles: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and all(n in lines[0] for n in needles)


@pytest.fixture
def zarr_slide(tmp_path):
    """``s/a.zarr``: the sample as an OME-Zarr pyramid (the user's input)."""
    from skimage.io import imread

    from napari_pathreview.backend.slides import ZarrLayout, write_ome_zarr

    path = tmp_path / "s" / "a.zarr"
    path.parent.mkdir()
    write_ome_zarr(path, imread(SAMPLE_TILE)[..., :3], 0.25, ZarrLayout(chunks=256))
    return path


def test_segment_never_replaces_its_input_store_even_with_overwrite(zarr_slide, capsys):
    """Failure 1: detect writes ``s/a.done.json``; segment into the same folder must not take it as leave
    to replace ``s/a.zarr`` — the input itself."""
    folder = zarr_slide.parent
    rc, _, err = run(capsys, "detect", zarr_slide, "--out", folder, "--device", "cpu")
    assert rc == 0, err and (folder / "a.done.json").exists()
    before = digest(zarr_slide)
    for extra in ([], ["--overwrite"]):
        rc, _, err = run(capsys, "segment", zarr_slide, "--out", folder, "--device", "cpu", *extra)
        assert rc == 2 and one_line(err, "a.zarr", "is the input", "choose another --out"), err
        assert digest(zarr_slide) == before
    rc, _, err = run(capsys, "segment", zarr_slide, "--out", zarr_slide, "--overwrite", "--device", "cpu")
    assert rc == 2 and one_line(err, "a.zarr", "never writes over its input"), err
    assert digest(zarr_slide) == before


def test_a_record_of_another_job_does_not_make_a_users_store_ours(tmp_path, capsys):
    """``NAME.done.json`` written by detect lists detect's files only: the user's ``NAME.zarr`` beside it
    is refused by segment unless --overwrite."""
    p = tmp_path / "p"
    p.mkdir()
    img = Path(shutil.copy(SAMPLE_TILE, p / "x.png"))
    users = p / "x.zarr"
    users.mkdir()
    (users / "notes.txt").write_text("the user's store")
    rc, _, err = run(capsys, "detect", img, "--out", p, "--mpp", "0.25", "--device", "cpu")
    assert rc == 0, err
    rc, _, err = run(capsys, "segment", img, "--out", p, "--mpp", "0.25", "--device", "cpu")
    assert rc == 2 and one_line(err, "x.zarr", "not written by", "--overwrite"), err
    assert (users / "notes.txt").read_text() == "the user's store"


@pytest.mark.parametrize("command", ["detect", "enhance"])
def test_detect_and_enhance_refuse_the_users_annotations_beside_the_slide(command, tmp_path, capsys):
    """Failure 2: ``img15.geojson`` / ``img15.csv`` (QuPath exports) beside ``img15.png`` survive
    ``detect p/img15.png --out p``; --overwrite replaces them."""
    p = tmp_path / "p"
    p.mkdir()
    img = Path(shutil.copy(SAMPLE_TILE, p / "img15.png"))
    (p / "img15.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (p / "img15.csv").write_text("Class,Centroid X µm,Centroid Y µm\ntumor,1,2\n")
    before = {n: digest(p / n) for n in ("img15.geojson", "img15.csv")}
    rc, out, err = run(capsys, command, img, "--out", p, "--mpp", "0.25", "--device", "cpu")
    assert rc == 2 and one_line(err, "img15.", "not written by", "--overwrite"), err
    assert before == {n: digest(p / n) for n in before} and out == ""
    assert not (p / "img15.done.json").exists()
    rc, _, err = run(capsys, command, img, "--out", p, "--mpp", "0.25", "--device", "cpu", "--overwrite")
    assert rc == 0, err
    assert json.loads((p / "img15.geojson").read_text())["features"]


def test_reruns_replace_their_own_outputs_but_not_hand_edited_ones(tmp_path, capsys):
    """Outputs listed (with their SHA-256) in the slide's record are pathreview's: another job (a new
    threshold) replaces them; one the user has edited since is theirs again."""
    img = Path(shutil.copy(SAMPLE_TILE, tmp_path / "t.png"))
    out = tmp_path / "o"
    args = ["detect", img, "--out", out, "--mpp", "0.25", "--device", "cpu"]
    assert run(capsys, *args)[0] == 0
    rc, _, err = run(capsys, *args)
    assert rc == 0 and "skipped" in err
    rc, _, err = run(capsys, *args, "--threshold", "0.6")
    assert rc == 0 and "skipped" not in err, err
    (out / "t.csv").write_text((out / "t.csv").read_text() + "1,1,,,tumor,1\n")
    edited = digest(out / "t.csv")
    rc, _, err = run(capsys, *args, "--threshold", "0.7")
    assert rc == 2 and one_line(err, "t.csv", "--overwrite"), err
    assert digest(out / "t.csv") == edited


def test_a_crash_between_outputs_leaves_a_claim_so_the_rerun_may_replace_them(tmp_path):
    """A task killed after writing one of its files left it claimed in the record (unfinished): the
    rerun replaces it; a task refused before writing anything leaves no record."""
    from napari_pathreview.backend.batch import run_batch

    src = tmp_path / "a.png"
    src.write_bytes(b"x")
    out = tmp_path / "o"
    planned = lambda stem: [stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")]

    def crash(path, stem):
        planned(stem)[0].write_text("half")
        raise RuntimeError("killed")

    def refuse(path, stem):
        raise InputError("bad pixels")

    with pytest.raises(InputError):
        run_batch([src], out, refuse, {"job": "t"}, planned=planned)
    assert not (out / "a.done.json").exists()
    with pytest.raises(RuntimeError):
        run_batch([src], out, crash, {"job": "t"}, planned=planned)
    record = json.loads((out / "a.done.json").read_text())
    assert record["jobs"]["t"]["done"] is False

    def ok(path, stem):
        for p in planned(stem):
            p.write_text("done")
        return planned(stem)

    res = run_batch([src], out, ok, {"job": "t"}, planned=planned)
    assert res["ran"] == [str(src)] and (out / "a.csv").read_text() == "done"
    entry = json.loads((out / "a.done.json").read_text())["jobs"]["t"]
    assert entry["done"] and {o["name"] for o in entry["outputs"]} == {"a.csv", "a.json"}
    assert all(len(o["sha256"]) == 64 for o in entry["outputs"])


def test_a_foreign_file_named_like_the_record_is_refused(tmp_path):
    from napari_pathreview.backend.batch import run_batch

    src = tmp_path / "a.png"
    src.write_bytes(b"x")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "a.done.json").write_text("my notes")
    with pytest.raises(InputError, match="a.done.json: exists and is not a pathreview record"):
        run_batch([src], tmp_path / "o", lambda p, s: [], {"job": "t"})
    assert (tmp_path / "o" / "a.done.json").read_text() == "my notes"


def test_a_format_1_record_still_skips_and_owns_only_what_it_lists(tmp_path):
    """Records written before ownership (``{"key", "outputs"}``) keep working for reruns."""
    from napari_pathreview.backend.batch import SlideJob, _input_key

    src = tmp_path / "a.png"
    src.write_bytes(b"x")
    (tmp_path / "a.csv").write_text("ours")
    key = {"job": "detect", **_input_key(str(src))}
    (tmp_path / "a.done.json").write_text(json.dumps({"key": key, "outputs": [str(tmp_path / "a.csv")]}))
    job = SlideJob(str(src), tmp_path / "a", key)
    assert job.is_done() and job.owns(tmp_path / "a.csv") and not job.owns(tmp_path / "a.zarr")


@pytest.mark.parametrize("case", ["exists", "same", "same-overwrite"])
def test_convert_refuses_its_input_and_existing_files(case, tmp_path, capsys):
    src = tmp_path / "cells.csv"
    src.write_text("x,y,class\n1,2,tumor\n")
    dst = src if case.startswith("same") else tmp_path / "out.csv"
    if case == "exists":
        dst.write_text("the user's table")
    before = dst.read_bytes()
    extra = ["--overwrite"] if case == "same-overwrite" else []
    rc, _, err = run(capsys, "convert", src, dst, *extra)
    assert rc == 2 and one_line(err, dst.name), err
    assert dst.read_bytes() == before
    if case == "exists":
        assert run(capsys, "convert", src, dst, "--overwrite")[0] == 0 and dst.read_bytes() != before


def test_atomic_temporary_names_are_unique_per_writer(tmp_path):
    from napari_pathreview.backend.atomic import atomic_path

    target = tmp_path / "t.csv"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b and a.parent == b.parent == tmp_path and a.name.startswith(".t.csv.")
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a" and not list(tmp_path.glob("*.partial"))


def test_a_layer_saved_over_a_folder_that_is_not_a_zarr_store_replaces_nothing(tmp_path):
    """napari asks before replacing, and the writers then overwrite - but only a zarr store: a user's
    folder (or file) that happens to carry the name is refused, its contents intact; a store is replaced."""
    from napari_pathreview._writer import write_image_layer, write_labels_layer
    from napari_pathreview.backend.slides import open_slide

    folder = tmp_path / "project.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match="not a zarr store"):
        write_image_layer(str(folder), img, {"rgb": True, "metadata": {"mpp": 0.5}})
    assert (folder / "notes.txt").read_text() == "my notes" and sorted(os.listdir(folder)) == ["notes.txt"]
    afile = tmp_path / "mask.zarr"
    afile.write_bytes(b"not a store")
    with pytest.raises(InputError, match="not a zarr store"):
        write_labels_layer(str(afile), np.zeros((32, 32), np.int32), {"metadata": {"mpp": 0.5}})
    assert afile.read_bytes() == b"not a store"
    store = tmp_path / "cells.zarr"
    write_labels_layer(str(store), np.ones((32, 32), np.int32), {"metadata": {"mpp": 0.5}})
    write_labels_layer(str(store), np.full((32, 32), 7, np.int32), {"metadata": {"mpp": 0.5}})
    assert int(np.asarray(open_slide(str(store)).levels[0]).max()) == 7
