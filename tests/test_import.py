"""napari start-up cost: the plugin's manifest contributions import without torch."""

import subprocess
import sys

MODULES = [
    "napari_pathreview",
    "napari_pathreview._reader",
    "napari_pathreview._writer",
    "napari_pathreview._sample_data",
    "napari_pathreview.widgets.layers",
    "napari_pathreview.widgets.detect",
    "napari_pathreview.backend.slides",
    "napari_pathreview.cli",
]


def test_plugin_modules_do_not_import_torch():
    code = "import sys\n" + "".join(f"import {m}\n" for m in MODULES) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_manifest_is_valid():
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-pathreview"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "valid" in (out.stdout + out.stderr), out.stdout + out.stderr
