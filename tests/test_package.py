"""What a user installs: the wheel carries the weights, cards, sample and manifest, and nothing of the
repository's tests or docs; the manifest validates."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "napari_pathreview"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (whl,) = out.glob("napari_pathreview-*.whl")
    return zipfile.ZipFile(whl)


@pytest.mark.slow
def test_wheel_holds_weights_cards_sample_and_manifest_only(wheel):
    names = set(wheel.namelist())
    shipped = {p.name for p in (PKG / "weights").iterdir() if p.suffix in (".safetensors", ".json")}
    assert shipped and {f"napari_pathreview/weights/{n}" for n in shipped} <= names
    for n in ("monuseg_tile.png", "monuseg_pyramid.ome.tif", "ATTRIBUTION.md"):
        assert f"napari_pathreview/sample_data/{n}" in names
    assert "napari_pathreview/napari.yaml" in names
    assert not [
        n
        for n in names
        if n.startswith(("tests/", "docs/", "napari_pathreview/tests"))
        or "/data/points/" in n
        or n.endswith("conftest.py")
    ]
    # every card in the wheel is the card in the source tree (no stale copy) and names its licence
    for n in sorted(shipped):
        if n.endswith(".json"):
            card = json.loads(wheel.read(f"napari_pathreview/weights/{n}"))
            assert card == json.loads((PKG / "weights" / n).read_text())
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    from napari_pathreview import __version__

    assert f"Version: {__version__}" in wheel.read(meta).decode()
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "napari_pathreview:napari.yaml" in wheel.read(entry).decode()


def test_manifest_validates_and_names_every_widget():
    from conftest import WIDGETS
    from npe2 import PluginManifest

    mf = PluginManifest.from_file(PKG / "napari.yaml")
    assert {w.display_name for w in mf.contributions.widgets} == set(WIDGETS.values())
    res = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-pathreview"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
