"""Shared pytest fixtures.

Two tiers, one command. Tests that need the annotated data sets (CRCHisto, MoNuSeg, GlaS; see
``docs/data-formats.md``) read them from ``$PATHREVIEW_DATA`` (default ``../shared/data`` beside the
clone) and are marked ``data`` automatically; without the folder they are skipped with one line saying
how to get it. Everything else runs on the bundled sample and the small fixtures in ``tests/data/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"
DATA_FIXTURES = {"shared_data", "crchisto", "val_sample", "points_subset", "small_points_dataset"}
DATA_HINT = (
    "annotated data sets not found at {path}: set PATHREVIEW_DATA to a folder with crchisto/, "
    "monuseg/ and glas/ (layouts and sources: docs/data-formats.md)"
)


def data_dir() -> Path:
    """The annotated-data folder: ``$PATHREVIEW_DATA``, else ``../shared/data`` beside the clone."""
    env = os.environ.get("PATHREVIEW_DATA")
    return Path(env).expanduser().resolve() if env else ROOT.parent / "shared" / "data"


SHARED_DATA = data_dir()


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses an annotated-data fixture ``data`` (and ``gui`` for viewer tests)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & DATA_FIXTURES:
            item.add_marker(pytest.mark.data)
        if names & {"make_napari_viewer", "qtbot", "open_dock"}:
            item.add_marker(pytest.mark.gui)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "PATHREVIEW_DATA" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} data tests skipped: " + DATA_HINT.format(path=SHARED_DATA))


# ---- shared_data (slides / reader / sample-data tests) ------------------------------------------
@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real, human-annotated data folder; tests build their inputs from it (skipped without it)."""
    if not (SHARED_DATA / "crchisto").is_dir():
        if os.environ.get("PATHREVIEW_REQUIRE_DATA"):  # CI: every data test must run
            pytest.fail(DATA_HINT.format(path=SHARED_DATA), pytrace=False)
        pytest.skip(DATA_HINT.format(path=SHARED_DATA))
    return SHARED_DATA


# ---- end shared_data -----------------------------------------------------------------------------


# ---- fixtures that ship with the repository (tests/data, see its ATTRIBUTION.md) ----------------
@pytest.fixture(scope="session")
def mini_masks() -> Path:
    """Masks layout: 3 MoNuSeg crops at 0.25 µm/px with instance masks (2 train, 1 test)."""
    return TEST_DATA / "monuseg"


@pytest.fixture(scope="session")
def mini_points() -> Path:
    """Points layout at the detector's 0.55 µm/px: 2 MoNuSeg images (train, validation), made-up classes."""
    return TEST_DATA / "points"


@pytest.fixture(scope="session")
def mini_labels() -> Path:
    """Image-labels layout: 4 small MoNuSeg images with made-up grades (2 train, 2 testA)."""
    return TEST_DATA / "glas-like"


@pytest.fixture(scope="session")
def mini_he_and_mask():
    """A real 320² H&E crop (uint8 RGB, 0.25 µm/px) and its uint16 instance mask (~40 nuclei)."""
    import imageio.v3 as iio

    name = "TCGA-21-5784-crop.png"
    return (
        iio.imread(TEST_DATA / "monuseg" / "images" / name)[..., :3],
        iio.imread(TEST_DATA / "monuseg" / "masks" / name),
    )


@pytest.fixture(scope="session")
def sample_he():
    """The bundled sample: a real 512² MoNuSeg H&E crop, uint8 RGB, 0.25 µm/px."""
    import imageio.v3 as iio

    return iio.imread(ROOT / "src" / "napari_pathreview" / "sample_data" / "monuseg_tile.png")[..., :3]


# ---- the plugin as users open it ----------------------------------------------------------------
@pytest.fixture(autouse=True)
def remembered_values(tmp_path_factory, monkeypatch) -> Path:
    """The folder where the docks' forms remember their values (magicgui's ``persist`` cache,
    ``widgets/forms.py``): a fresh temporary one per test, never the user's ``~/.cache/magicgui``."""
    import magicgui._util

    folder = tmp_path_factory.mktemp("magicgui-cache")
    monkeypatch.setattr(magicgui._util, "user_cache_dir", lambda *a, **k: folder)
    return folder


WIDGETS = {
    "detect": "Detect cells",
    "enhance": "Enhance cells",
    "segment": "Segment",
    "compare": "Compare with annotations",
    "annotate": "Annotate cells",
    "train": "Train / fine-tune",
    "explain": "Explain",
    "weak": "Weak cell types",
}


@pytest.fixture
def open_dock():
    """``open_dock(viewer, key) -> widget``: the dock as *Plugins > PathReview* opens it (napari hands the
    widget a proxied viewer with wrapped layers). ``key`` is one of ``WIDGETS``."""

    def _open(viewer, key: str):
        _, widget = viewer.window.add_plugin_dock_widget("napari-pathreview", WIDGETS[key])
        return widget

    return _open


@pytest.fixture
def sample_viewer(make_napari_viewer):
    """A viewer with the bundled MoNuSeg sample tile open (0.25 µm/px), as File > Open Sample does."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pathreview", "monuseg_tile")
    return viewer


# ---- detector fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def crchisto(shared_data) -> Path:
    return shared_data / "crchisto"


@pytest.fixture(scope="session")
def val_sample(crchisto):
    """The first validation image of CRCHisto with its annotations (PointsSample)."""
    from napari_pathreview.backend.datasets import load_points_dataset

    samples, classes = load_points_dataset(crchisto, "validation")
    return samples[0], classes


@pytest.fixture
def points_subset(crchisto, tmp_path):
    """``make(split, n) -> folder``: a copy of the first ``n`` CRCHisto images of ``split`` (sorted by name)
    in the points-CSV layout."""
    import csv
    import shutil

    rows = list(csv.DictReader(open(crchisto / "points.csv")))

    def make(split: str, n: int) -> Path:
        names = sorted({r["image"] for r in rows if r["split"] == split})[:n]
        out = tmp_path / f"{split}-{n}"
        (out / "images").mkdir(parents=True)
        for name in names:
            shutil.copy(crchisto / "images" / f"{name}.png", out / "images")
        with open(out / "points.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(r for r in rows if r["image"] in names)
        (out / "dataset.json").write_text('{"mpp": 0.55}')  # a copy: its scale is no longer known by its place
        return out

    return make


@pytest.fixture
def small_points_dataset(points_subset) -> Path:
    """A copy of 2 CRCHisto validation images in the points-CSV layout (fast CLI evaluation)."""
    return points_subset("validation", 2)
