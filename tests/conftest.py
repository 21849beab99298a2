"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest


# ---- shared_data (slides / reader / sample-data tests) ------------------------------------------
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real, human-annotated data folder (``../shared/data``); tests build their inputs from it."""
    assert SHARED_DATA.is_dir(), (
        f"{SHARED_DATA} is missing: the tests need the real data described in ../shared/data/README.md"
    )
    return SHARED_DATA
# ---- end shared_data -----------------------------------------------------------------------------


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
        return out

    return make


@pytest.fixture
def small_points_dataset(points_subset) -> Path:
    """A copy of 2 CRCHisto validation images in the points-CSV layout (fast CLI evaluation)."""
    return points_subset("validation", 2)
