"""Reading a model card: the twins of ``detection``'s ``_check_mpp`` and ``DetectParams.from_card``.

Kept apart so that one edit swaps them for the shared ``backend.modelio`` helpers.
"""

from __future__ import annotations

from ..errors import InputError
from ..slides import validate_mpp


def check_mpp(mpp, what: str) -> float:
    """``mpp`` (µm per pixel) checked by ``slides.validate_mpp``; None is refused, naming ``what``."""
    if mpp is None:
        raise InputError(f"{what}: microns per pixel unknown; give --mpp (e.g. 0.5 for 20x, 0.25 for 40x)")
    return validate_mpp(mpp, what)


def from_card(cls, card, **override):
    """An instance of the dataclass ``cls`` from the card's ``params`` (its own fields only), with the
    ``override`` values that are not None."""
    p = {k: v for k, v in (card.params or {}).items() if k in cls.__dataclass_fields__}
    p.update({k: v for k, v in override.items() if v is not None})
    return cls(**p)
