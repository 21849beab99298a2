"""Reading zarr stores: OME-Zarr multiscales (NGFF 0.4, or 0.5 under ``"ome"``) with their mpp, or a plain array."""

from __future__ import annotations

import dask.array as da

from ..errors import InputError
from .axes import _arrange, _guess_axes
from .slide import _UNIT_TO_UM, _plausible


def _ngff_multiscales(attrs: dict) -> list | None:
    if "multiscales" in attrs:
        return attrs["multiscales"]
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


def _scale_of(transforms) -> list | None:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and "scale" in t:
            return [float(v) for v in t["scale"]]
    return None


def zarr_translation(path: str) -> tuple[float, float] | None:
    """The (y, x) ``translation`` of an OME-Zarr's full-resolution level (plus the multiscale's own), in its
    scale's units (µm when the store gives its pixel size): where a store cut from a slide's region lies
    on that slide. None for a plain array, a store without one, or anything unreadable."""
    import zarr

    try:
        node = zarr.open(path, mode="r")
        ms = None if hasattr(node, "shape") else _ngff_multiscales(dict(node.attrs))
        if not ms:
            return None
        datasets = sorted(ms[0]["datasets"], key=lambda d: -int(node[d["path"]].shape[-1]))
        shift = [0.0, 0.0]
        found = False
        for transforms in (datasets[0].get("coordinateTransformations"), ms[0].get("coordinateTransformations")):
            for t in transforms or []:
                if isinstance(t, dict) and t.get("type") == "translation" and "translation" in t:
                    tr = [float(v) for v in t["translation"]][-2:]
                    shift = [shift[0] + tr[0], shift[1] + tr[1]]
                    found = True
        return (shift[0], shift[1]) if found and any(shift) else None
    except Exception:
        return None


def _open_zarr(path: str) -> tuple:
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except Exception as e:
        raise InputError(
            f"{path}: cannot open as zarr ({type(e).__name__}: {e}); it needs .zgroup/.zarray "
            "(zarr v2) or zarr.json (zarr v3) metadata - check the path points at the store's root"
        ) from e
    is_labels = False
    try:
        if hasattr(node, "shape"):  # a plain zarr array
            arr = da.from_zarr(node)
            _warn_missing_chunks(node, path)
            return [_arrange(arr, _guess_axes(arr.shape), path)], None, False
        attrs = dict(node.attrs)
        ms = _ngff_multiscales(attrs)
        is_labels = "image-label" in attrs or "image-label" in (attrs.get("ome") or {})
        if not ms:
            arrays = sorted(node.array_keys())
            if len(arrays) == 1:
                arr = da.from_zarr(node[arrays[0]])
                return [_arrange(arr, _guess_axes(arr.shape), path)], None, is_labels
            raise InputError(
                f"{path}: the zarr group has no OME-Zarr 'multiscales' metadata and "
                f"{len(arrays)} arrays; open one array (e.g. {path}/0) or write an OME-Zarr"
            )
        m = ms[0]
        datasets = m["datasets"]
        arrays = [node[d["path"]] for d in datasets]
        axes_meta = m.get("axes")
        ndim = len(arrays[0].shape)
        if axes_meta:
            names = [(a["name"] if isinstance(a, dict) else str(a)).lower() for a in axes_meta]
            types = [(a.get("type") if isinstance(a, dict) else None) for a in axes_meta]
            letters = ""
            for n, t in zip(names, types):
                if n in ("y", "x"):
                    letters += n
                elif t == "channel" or n in ("c", "channel"):
                    letters += "c"
                elif n in ("t", "z"):
                    letters += n
                else:
                    letters += "q"
            units = [(a.get("unit") if isinstance(a, dict) else None) for a in axes_meta]
        else:
            letters = _guess_axes(arrays[0].shape) if ndim <= 3 else "tczyx"[-ndim:]
            units = [None] * ndim
        levels = [_arrange(da.from_zarr(a), letters, path) for a in arrays]
        # largest level first, whatever order the metadata lists them in
        order = sorted(range(len(levels)), key=lambda i: -levels[i].shape[0] * levels[i].shape[1])
        levels, arrays, datasets = ([x[i] for i in order] for x in (levels, arrays, datasets))
        mpp = None
        scale = _scale_of(datasets[0].get("coordinateTransformations"))
        if scale is not None and "x" in letters:
            xi = letters.index("x")
            sx = scale[xi]
            glob = _scale_of(m.get("coordinateTransformations"))
            if glob is not None:
                sx *= glob[xi]
            unit = units[xi]
            factor = _UNIT_TO_UM.get(unit) if unit else None
            if factor is not None:  # without a unit the scale says nothing physical
                mpp = _plausible(sx * factor)
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"{path}: the zarr metadata is broken or incomplete ({type(e).__name__}: {e}); "
            "write it again (e.g. with napari-pathreview's OME-Zarr writer)"
        ) from e
    if not is_labels:
        _warn_missing_chunks(arrays[0], path)
    return levels, mpp, is_labels


def _warn_missing_chunks(arr, path: str) -> None:
    """Warn when chunks of the full-resolution level are not stored and its fill value is 0: they read
    as black. Writers skip chunks that hold only the fill value (so it can be fine), but a partial copy
    looks the same."""
    try:
        fill = arr.fill_value
        n, stored = int(arr.nchunks), int(arr.nchunks_initialized)
    except Exception:
        return
    if stored < n and not fill:
        import warnings

        warnings.warn(
            f"{path}: {n - stored} of {n} chunks of the full-resolution level are not stored and "
            f"read as {fill} (black); fine if its writer skipped empty chunks, otherwise the copy is "
            "incomplete - copy the store again",
            UserWarning,
            stacklevel=3,
        )
