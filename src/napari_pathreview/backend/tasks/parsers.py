"""Text -> value for training options that take more than a number (``option(parse=...)``).

Each raises ``ValueError`` with a message naming the accepted values; the CLI shows it as the
argument's error.
"""

from __future__ import annotations


def _ints(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        return ()


def widths(text: str) -> tuple:
    """Encoder channels per level: two or more positive integers, ``"32,64,128,256"``."""
    w = _ints(text)
    if len(w) < 2 or min(w) < 1:
        raise ValueError(f"widths must be two or more positive integers like 32,64,128,256, got {text!r}")
    return w


def per_grid(text: str) -> tuple:
    """Tiles per image from the whole image, the 2x2 and the 3x3 tiling: ``"1,4,4"``."""
    k = _ints(text)
    if len(k) != 3 or min(k) < 0 or sum(k) == 0:
        raise ValueError(f"per-grid must be three counts like 1,4,4 (not all 0), got {text!r}")
    return k


def train_tile(text: str) -> int:
    """A training tile side in pixels: a multiple of 32 from 64 up."""
    t = _ints(text)
    if len(t) != 1 or t[0] < 64 or t[0] % 32:
        raise ValueError(f"tile must be a multiple of 32 from 64 up, like 256 or 384, got {text!r}")
    return t[0]


def count(text: str) -> int:
    """A whole number from 1 up."""
    k = _ints(text)
    if len(k) != 1 or k[0] < 1:
        raise ValueError(f"expected a whole number from 1 up, got {text!r}")
    return k[0]


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -1.0


def scale_jitter(text: str) -> float:
    """A zoom fraction in [0, 0.5)."""
    j = _fraction(text)
    if not 0.0 <= j < 0.5:
        raise ValueError(f"scale-jitter must be a fraction from 0 up to 0.5, got {text!r}")
    return j


def pale_nuclei(text: str) -> float:
    """A probability in [0, 1]."""
    p = _fraction(text)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"pale-nuclei must be a probability from 0 to 1, got {text!r}")
    return p
