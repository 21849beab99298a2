"""Errors the backend raises on purpose, and the cancel / progress conventions.

Every long backend function takes two optional keyword arguments:

- ``progress(i, n, message)``: called after step ``i`` of ``n`` (tiles, epochs, images);
- ``cancel``: a ``threading.Event``; when set, the function raises :class:`Cancelled` at its next step.

Widgets forward these to a napari progress bar and a Cancel button; the CLI prints progress to stderr.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

ProgressFn = Callable[[int, int, str], None]


class InputError(ValueError):
    """Bad user input: the message names the input and the problem and says what to do.

    The CLI turns it into exit code 2 with one line on stderr; widgets show it as a notification.
    """


class Cancelled(Exception):
    """The user cancelled a running job; nothing partial was presented as complete."""


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled by the user")


def report(progress: ProgressFn | None, i: int, n: int, message: str = "") -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(i, n, message)
