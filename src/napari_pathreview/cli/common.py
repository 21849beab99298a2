"""What every command prints the same way: progress lines and warnings on stderr."""

from __future__ import annotations

import json
import sys


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (ours and the libraries') as one line on stderr: ``pathreview: warning: ...``."""
    print("pathreview: warning: " + " ".join(str(message).split()), file=sys.stderr, flush=True)


def progress(i: int, n: int, msg: str) -> None:
    print(f"[{i}/{n}] {msg}", file=sys.stderr, flush=True)


def epoch_line(row: dict) -> None:
    """A training epoch's row as one JSON line on stderr."""
    print(json.dumps(row), file=sys.stderr, flush=True)
