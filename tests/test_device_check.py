"""The prepared GPU check (scripts/device_check.py) runs green in CPU mode: every check ran, reduced
precision gave fp32's cells and nuclei on the bundled sample."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_runs_green_on_the_cpu(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "device_check.py"), "--device", "cpu", "--sizes", "512"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OUT": str(tmp_path)},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads((tmp_path / "device_check.json").read_text())
    assert out["device_used"] == "cpu"
    for key in ("detect_512", "segment_512"):
        assert "error" not in out[key], out[key]
        assert set(out[key]) == {"fp32", "bf16"}
    assert out["detect_512"]["bf16"]["matched_f1"] >= 0.98 and min(out["detect_512"]["bf16"]["cells"]) > 50
    assert out["segment_512"]["bf16"]["label_dice"] >= 0.99
