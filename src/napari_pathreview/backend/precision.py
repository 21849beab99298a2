"""Reduced-precision inference: which precision a run uses, and the autocast scope the networks run in.

Only the network runs in reduced precision; decoding, watershed, matching and blending stay float32
(every network output is cast back with ``.float()`` before it leaves the model code).

``auto`` picks the fastest precision that the device runs natively *and* that the model's card records as
verified equal to float32 (``card.training["precision"]["verified"]``, written by
``pathreview bench precision``); anything else runs in float32.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

from .errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
_current: contextvars.ContextVar[str] = contextvars.ContextVar("pathreview_precision", default="fp32")


def check_precision(precision: str | None) -> str:
    """``precision`` lower-cased and validated (None -> fp32); InputError naming the choices otherwise."""
    p = (precision or "fp32").lower()
    if p not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return p


@functools.cache
def native(device_type: str) -> tuple[str, ...]:
    """Reduced precisions that ``device_type`` ('cpu', 'cuda', 'mps') runs natively, fastest first."""
    if device_type == "cuda":
        import torch

        return ("bf16", "fp16") if torch.cuda.is_bf16_supported() else ("fp16",)
    if device_type == "cpu":
        try:
            flags = open("/proc/cpuinfo").read().split()
        except OSError:
            return ()
        return ("bf16",) if ("avx512_bf16" in flags or "amx_bf16" in flags) else ()
    return ()


def verified(card) -> tuple[str, ...]:
    """Precisions the card records as giving outputs equal to float32 (``bench precision``)."""
    rec = (getattr(card, "training", None) or {}).get("precision") or {}
    return tuple(rec.get("verified", ()))


def resolve(precision: str | None, device, card=None) -> str:
    """The precision a run uses: fp32 / bf16 / fp16 as asked, or for ``auto`` the first of ``native(device)``
    that ``verified(card)`` lists (fp32 when none). Asking for fp16 on a CPU is refused (no native fp16)."""
    p = check_precision(precision)
    dev = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    if p == "auto":
        ok = set(verified(card)) if card is not None else set()
        return next((q for q in native(dev) if q in ok), "fp32")
    if p == "fp16" and dev == "cpu":
        raise InputError("fp16 is not a CPU precision; use --precision bf16 (or auto) on the CPU")
    return p


@contextlib.contextmanager
def use(precision: str):
    """Run the networks called inside this block at ``precision`` (fp32 / bf16 / fp16, already resolved)."""
    token = _current.set(check_precision(precision))
    try:
        yield
    finally:
        _current.reset(token)


def current() -> str:
    return _current.get()


def autocast(device, precision: str | None = None):
    """The autocast context for one network call on ``device`` at ``precision`` (default: the one set by
    :func:`use`); a no-op in fp32."""
    import torch

    p = precision or _current.get()
    dev = getattr(device, "type", None) or str(device).split(":")[0]
    if p in ("fp32", "auto") or dev not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(dev, dtype=getattr(torch, _DTYPES[p]))
