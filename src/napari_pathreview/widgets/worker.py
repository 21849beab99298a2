"""Run a backend function off the GUI thread with progress and a working Cancel.

The backend knows nothing of Qt: it takes ``progress(i, n, msg)`` and a ``cancel`` Event. Here it runs
in a plain thread; a napari ``thread_worker`` generator relays its progress through a queue, so the
progress bar moves and Cancel (which sets the Event) stops it at its next step.

Cancel acts at once for the user even when the job's next check is seconds away (one network pass of a
large tile on a CPU): once the Event is set, the relay waits ``grace_s`` for the job to stop, then raises
``Cancelled`` without it. The job, whose result is discarded, ends by itself at its next check.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable


def relay(fn: Callable, cancel: threading.Event, poll_s: float = 0.05, grace_s: float = 0.5):
    """Generator: run ``fn(progress=..., cancel=cancel)`` in a thread, yield (i, n, msg), return its result.

    Re-raises the function's exception (``Cancelled`` after a cancel) in the caller; ``grace_s`` after a
    cancel it raises ``Cancelled`` whether or not the thread has stopped (see the module docstring).
    """
    from ..backend.errors import Cancelled

    events: queue.Queue = queue.Queue()
    box: dict = {}
    cancelled_at = None

    def target():
        try:
            box["value"] = fn(progress=lambda i, n, m="": events.put((i, n, m)), cancel=cancel)
        except BaseException as e:
            box["error"] = e
        finally:
            events.put(None)

    thread = threading.Thread(target=target, daemon=True, name="pathreview-job")
    thread.start()
    try:
        while True:
            if cancel.is_set():
                cancelled_at = cancelled_at if cancelled_at is not None else time.monotonic()
                if time.monotonic() - cancelled_at >= grace_s and thread.is_alive():
                    raise Cancelled("cancelled by the user")  # the thread stops at its own next check
            try:
                item = events.get(timeout=poll_s)
            except queue.Empty:
                yield None
                continue
            if item is None:
                break
            yield item
    finally:
        if thread.is_alive() and not cancel.is_set():  # closed early (the viewer quits): stop and wait
            cancel.set()
            thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def run_sync(fn: Callable, cancel: threading.Event | None = None):
    """The same job without threads (tests, scripts): drains the relay and returns the result."""
    gen = relay(fn, cancel or threading.Event())
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value
