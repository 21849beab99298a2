#!/usr/bin/env bash
# The prepared GPU check: one device call, `bash scripts/device_check.sh` (timeout ~300 s).
set -uo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "${OUT:-/tmp}/nvidia-smi.txt"
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-deps --no-index .whl/*.whl; fi
python3 scripts/device_check.py 2>&1 | tee "${OUT:-/tmp}/device_check.log"
