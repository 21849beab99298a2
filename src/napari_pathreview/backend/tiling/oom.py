"""Accelerator out-of-memory errors: recognised, memory freed, and a batch halved until it fits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import InputError

PredictFn = Callable[[np.ndarray], np.ndarray]


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (``torch.cuda.OutOfMemoryError`` and its kin)."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class OomSplitter:
    """Wraps a ``predict_fn`` so that an out-of-memory error halves the batch and retries.

    ``limit`` (the largest batch that ran) then caps every later call, so one OOM costs one retry for
    the whole run, not one per batch. A single tile that does not fit raises :class:`InputError`
    naming the tile size and what to do.
    """

    def __init__(self, predict_fn: PredictFn, limit: int | None = None):
        self.predict_fn, self.limit, self.retries = predict_fn, limit, 0
        self.out_channels = getattr(predict_fn, "out_channels", None)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if self.limit is not None and n > self.limit:
            k = self.limit
            return np.concatenate([self(batch[i : i + k]) for i in range(0, n, k)])
        try:
            return np.asarray(self.predict_fn(batch))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        free_accelerator_memory()
        self.retries += 1
        if n == 1:
            raise InputError(
                f"out of accelerator memory on a single {batch.shape[1]}x{batch.shape[2]} tile; "
                "use a smaller --tile or run on the CPU (--device cpu)"
            )
        self.limit = n // 2
        return self(batch)
