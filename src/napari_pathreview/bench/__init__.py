"""``pathreview bench NAME``: timings against a named reference measured in the same run.

Each benchmark returns a dict with at least ``name``, ``reference``, ``ours_s``, ``reference_s`` and
``ratio`` (our time over the reference's; < 1 means faster), plus whatever else it measured. Modules by
theme register their benches in ``BENCHES`` on import; only ``viewer`` opens a napari window, and it
imports napari and Qt when it runs, not when it is registered. The backend never imports this package.
"""

from __future__ import annotations

from ..backend.errors import InputError
from . import enhancer, few_shot, matching, precision, slides, tiling, train_step, viewer  # noqa: F401  (registers)
from .common import BENCHES


def run_bench(name: str, **kw) -> dict:
    """Run the benchmark ``name`` with keyword overrides of its defaults; InputError for an unknown name."""
    if name not in BENCHES:
        raise InputError(f"unknown benchmark '{name}'; available: {', '.join(sorted(BENCHES))}")
    return BENCHES[name](**kw)


__all__ = ["BENCHES", "run_bench"]
