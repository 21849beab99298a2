"""JSON round-trip shared by the model configs stored in the weights cards."""

from __future__ import annotations

from dataclasses import asdict


class ConfigDict:
    """Mixin for config dataclasses: tuples are stored as JSON lists and read back as tuples; keys the
    dataclass does not know (from newer or older cards) are ignored, missing ones take the defaults."""

    @classmethod
    def from_dict(cls, d: dict):
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in dict(d).items() if k in cls.__dataclass_fields__}
        )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
