"""Write outputs under a temporary name and move them into place, so nothing half-written looks complete."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


@contextmanager
def atomic_path(target: str | Path, overwrite: bool = True):
    """Yield a temporary sibling path; on success it is renamed to ``target``, on error removed.

    Works for files and directories (e.g. zarr stores). With ``overwrite=False`` an existing target
    raises InputError before anything is written.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists; choose another output or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    _remove(tmp)
    try:
        yield tmp
        if target.exists() and target.is_dir() and tmp.is_dir():
            _remove(target)
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
