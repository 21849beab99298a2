"""Memory estimates and the refusal of runs that cannot fit, before any work starts."""

from __future__ import annotations

import os

from .errors import InputError


def available_memory_bytes() -> int:
    """Physical memory available now (Linux ``MemAvailable``; total pages elsewhere)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def require_memory(need: int, what: str, advice: str, fraction: float = 0.7) -> None:
    """Raise :class:`InputError` when ``need`` bytes exceed ``fraction`` of the available memory:
    ``"<what> needs ~X GB, Y GB available; <advice>"``."""
    have = available_memory_bytes()
    if need > fraction * have:
        raise InputError(f"{what} needs ~{need / 2**30:.1f} GB, {have / 2**30:.1f} GB available; {advice}")


def detect_bytes(
    shape_yx, level_mpp: float, tile_px: int, channels: int, cell_area_um2: float = 50.0, bytes_per_cell: int = 400
) -> int:
    """Upper estimate for tiled detection of an ``(H, W)`` level at ``level_mpp`` µm/px: one tile's maps
    (``channels`` float32 maps of ``tile_px``², a few copies) plus the cells of a slide covered edge to
    edge by dense tissue (one cell per ``cell_area_um2`` µm²), each holding its position, class
    probabilities and feature vector (and a concatenation copy)."""
    h, w = (int(s) for s in shape_yx)
    cells = h * w * float(level_mpp) ** 2 / cell_area_um2
    return int(4 * tile_px**2 * (channels + 3) * 4 + cells * bytes_per_cell)


def enhance_bytes(n_cells: int, width: int, heads: int, layers: int, neighbours: int, attention: bool = False) -> int:
    """Estimate for the neighbour-sparse enhancer over ``n_cells``: neighbour lists (int32 index, float32
    distance, bool), about ten ``(N, width)`` float32 activations, and with ``attention`` the per-layer
    ``(N, heads, K)`` weights plus the edge lists drawn from them (measured 2.3 GB at 10⁶ cells, K = 64,
    width 64, without attention)."""
    per = neighbours * 9 + width * 4 * 10
    if attention:
        per += layers * heads * neighbours * 4 * 2 + neighbours * 24
    return int(n_cells) * per


def explain_bytes(read_yx, channels: int, factor: float, n_maps: int, out_yx, full_yx=None) -> int:
    """Upper estimate for explaining an image: the level read ``read_yx`` (``channels`` uint8, an RGB
    copy, float32 and the float64 resize input), the model-scale float image (``factor`` model pixels
    per read pixel; float64 resize output + float32), ``n_maps`` float64 maps and blending weights at the
    model grid, the maps at the output grid ``out_yx`` (float64 resize + float32 result); with
    ``full_yx`` (writing overlays) the image they are drawn on (``full_yx`` pixels) read again plus float64 overlay arrays of one
    map at the output grid."""
    read = int(read_yx[0]) * int(read_yx[1])
    model = read * float(factor) ** 2
    out = int(out_yx[0]) * int(out_yx[1])
    need = read * (channels + 3 + 12 + 24) + model * (24 + 12) + model * 8 * (n_maps + 1) + out * 12 * n_maps
    if full_yx is not None:
        need += int(full_yx[0]) * int(full_yx[1]) * (channels + 3) + out * 3 * 8 * 4
    return int(need)
