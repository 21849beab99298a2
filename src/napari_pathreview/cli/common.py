"""What every command prints the same way: progress lines and warnings on stderr."""

from __future__ import annotations

import json
import sys

# the docks' words in backend messages -> the command line's flags (widgets.base.gui_words goes the other way)
_CLI_WORDS = (
    (
        r"draw a region in the \w+ dock \(its region row\)",
        "give --region X,Y,W,H (level-0 pixels) or a coarser --level N",
    ),
    (r"a region \(the dock's region row\)", "a region (--region X,Y,W,H, level-0 pixels)"),
    (r"\(the dock's region row\)", "(--region X,Y,W,H, level-0 pixels)"),
    (r"a downsampled copy of the slide \(export one from QuPath or napari\)", "a coarser pyramid --level N"),
    (r"a region at a time \(fewer cells\)", "a region at a time (--region X,Y,W,H: fewer cells)"),
)


def cli_words(message: str) -> str:
    """A backend message in the words of the command line: the docks' region row is ``--region``, a
    coarser copy of the slide ``--level``; one line."""
    import re

    for pattern, words in _CLI_WORDS:
        message = re.sub(pattern, words, message)
    return " ".join(message.split())


WARNED: set[str] = set()


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (ours and the libraries') as one line on stderr: ``pathreview: warning: ...``, each text
    once per run (a slide is opened to check it and again to run it; Python's own once-per-place record
    is reset whenever any library changes the warning filters)."""
    text = "pathreview: warning: " + " ".join(str(message).split())
    if text not in WARNED:
        WARNED.add(text)
        print(text, file=sys.stderr, flush=True)


def progress(i: int, n: int, msg: str) -> None:
    print(f"[{i}/{n}] {msg}", file=sys.stderr, flush=True)


def epoch_line(row: dict) -> None:
    """A training epoch's row as one JSON line on stderr."""
    print(json.dumps(row), file=sys.stderr, flush=True)
