"""What every model's inputs share, read from its card: the data's microns per pixel checked, and a
task's parameter dataclass filled from ``card.params``.

No torch here: the checks run before any model is loaded.
"""

from __future__ import annotations

from .errors import InputError
from .slides import validate_mpp


def check_mpp(mpp, what: str) -> float:
    """``mpp`` (µm per pixel) as a validated float; InputError naming ``what`` when it is unknown (None)
    or not a plausible pixel size (``slides.validate_mpp``)."""
    if mpp is None:
        raise InputError(f"{what}: microns per pixel unknown; give --mpp (e.g. 0.5 for 20x, 0.25 for 40x)")
    return validate_mpp(mpp, what)


def from_card(cls, card, **override):
    """An instance of the dataclass ``cls`` from the card's ``params`` (keys ``cls`` does not have are
    ignored), then the ``override`` values that are not None."""
    p = {k: v for k, v in (card.params or {}).items() if k in cls.__dataclass_fields__}
    p.update({k: v for k, v in override.items() if v is not None})
    return cls(**p)
