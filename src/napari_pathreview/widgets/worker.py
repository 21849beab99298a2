"""Run a backend function off the GUI thread with progress and a working Cancel.

The backend knows nothing of Qt: it takes ``progress(i, n, msg)`` and a ``cancel`` Event. Here it runs
in a plain thread; a napari ``thread_worker`` generator relays its progress through a queue, so the
progress bar moves and Cancel (which sets the Event) stops it at its next step.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable


def relay(fn: Callable, cancel: threading.Event, poll_s: float = 0.05):
    """Generator: run ``fn(progress=..., cancel=cancel)`` in a thread, yield (i, n, msg), return its result.

    Re-raises the function's exception (``Cancelled`` after a cancel) in the caller.
    """
    events: queue.Queue = queue.Queue()
    box: dict = {}

    def target():
        try:
            box["value"] = fn(progress=lambda i, n, m="": events.put((i, n, m)), cancel=cancel)
        except BaseException as e:  # noqa: BLE001  re-raised below, in the worker
            box["error"] = e
        finally:
            events.put(None)

    thread = threading.Thread(target=target, daemon=True, name="pathreview-job")
    thread.start()
    try:
        while True:
            try:
                item = events.get(timeout=poll_s)
            except queue.Empty:
                yield None
                continue
            if item is None:
                break
            yield item
    finally:
        if thread.is_alive():
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
