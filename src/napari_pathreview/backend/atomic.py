"""Write outputs under a temporary name and move them into place, so nothing half-written looks complete;
and refuse to write over what the user owns.

Rules (see docs/reliability.md): a command never writes over its own input (not even with
``--overwrite``), and never over an existing file it did not write unless ``--overwrite`` is given. What
pathreview wrote is recorded per output in the batch records (``backend.batch``), not guessed.
"""

from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


@contextmanager
def atomic_path(target: str | Path, overwrite: bool = True):
    """Yield a temporary sibling path; on success it is renamed to ``target``, on error removed.

    Works for files and directories (e.g. zarr stores). With ``overwrite=False`` an existing target
    raises InputError before anything is written. The temporary name is unique per call
    (``.NAME.<pid>-<random>.partial``), so two writers of one target never share it.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists; choose another output or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        yield tmp
        if target.exists() and (target.is_dir() or tmp.is_dir()):
            _remove(target)  # a folder is replaced whole, and a file by a folder (or back)
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def writable_folder(folder: str | Path, option: str = "--out") -> Path:
    """Create ``folder`` if needed and check files can be written in it, before any work (InputError)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; give {option} a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"{folder}: cannot create this folder ({e.strerror}); give {option} a folder you can write to"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            f"{folder}: cannot write in this folder (permission denied); give {option} a folder you can write to"
        )
    return folder


def _real(p: str | Path) -> Path:
    return Path(os.path.realpath(os.fspath(p)))


def same_or_nested(a: str | Path, b: str | Path) -> bool:
    """True when paths ``a`` and ``b`` name the same file (symlinks and hard links followed) or one
    holds the other (a folder and something inside it)."""
    ra, rb = _real(a), _real(b)
    if ra == rb or ra in rb.parents or rb in ra.parents:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_input_as_output(target: str | Path, inputs) -> None:
    """InputError when writing ``target`` would replace, or write inside, one of ``inputs``.

    Never lifted by ``--overwrite``: a command's input is the user's and is read while it runs."""
    for i in inputs:
        if same_or_nested(target, i):
            raise InputError(
                f"{target}: is the input {i} (or holds it, or lies inside it); pathreview never "
                "writes over its input, not even with --overwrite - choose another --out"
            )


def refuse_foreign(target: str | Path, owned: bool = False, overwrite: bool = False) -> None:
    """InputError when ``target`` exists and was not written by pathreview (``owned`` False) and
    ``overwrite`` is not given: a file beside the slide (a QuPath export, a hand-corrected table) is the
    user's."""
    if not overwrite and not owned and os.path.lexists(target):
        raise InputError(
            f"{target}: already exists and was not written by this pathreview job (or was changed "
            "since); pass --overwrite to replace it, or choose another --out"
        )
