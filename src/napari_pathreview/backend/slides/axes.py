"""Axis order of stored arrays: extra singleton axes indexed away, the channel axis moved last."""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da

from ..errors import InputError


def _arrange(arr, axes: str, source: str):
    """Index away singleton extra axes and move the channel axis last; returns (Y, X) or (Y, X, C).

    ``axes`` is a lower-case string, one letter per dimension: ``y`` and ``x`` are space, ``c`` / ``s``
    are channels; anything else (``t``, ``z``, ``q``, ``i``...) must have size 1.
    """
    axes = axes.lower()
    if len(axes) != arr.ndim or "y" not in axes or "x" not in axes:
        raise InputError(
            f"{source}: cannot tell the image axes (shape {tuple(arr.shape)}, axes {axes!r}); "
            "save it as a 2-D RGB or grey image (Y, X[, C])"
        )
    chan = [i for i, a in enumerate(axes) if a in "cs" and arr.shape[i] > 1]
    others = [i for i, a in enumerate(axes) if a not in "yxcs" and arr.shape[i] > 1]
    if not chan and len(others) == 1 and axes[others[0]] in "qi" and arr.shape[others[0]] <= 4:
        chan, others = others, []  # an unnamed small axis is the channels
    if others or len(chan) > 1:
        raise InputError(
            f"{source}: has more than one plane (shape {tuple(arr.shape)}, axes {axes!r}); "
            "pathreview reads 2-D slides only: export a single plane (Y, X[, C])"
        )
    index = []
    keep = []
    for i, a in enumerate(axes):
        if a in "yx" or (chan and i == chan[0]):
            index.append(slice(None))
            keep.append(i)
        else:
            index.append(0)
    if any(not isinstance(ix, slice) for ix in index):
        arr = arr[tuple(index)]
    kept_axes = [axes[i] for i in keep]
    order = [kept_axes.index("y"), kept_axes.index("x")]
    if chan:
        order.append(keep.index(chan[0]))
    if order != list(range(len(order))):
        arr = da.transpose(arr, order)
    return arr


def _guess_axes(shape: Sequence[int]) -> str:
    nd = len(shape)
    if nd == 2:
        return "yx"
    if nd == 3:
        if shape[-1] <= 4:
            return "yxc"
        if shape[0] <= 4:
            return "cyx"
        return "yxc" if shape[-1] < shape[0] else "cyx"  # the smaller end is the channels
    return "tczyx"[-nd:] if nd <= 5 else "q" * (nd - 2) + "yx"
