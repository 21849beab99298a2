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


def detect_bytes(shape_yx, level_mpp: float, tile_px: int, channels: int, cell_area_um2: float = 50.0,
                 bytes_per_cell: int = 400) -> int:
    """Upper estimate for tiled detection of an ``(H, W)`` level at ``level_mpp`` µm/px: one tile's maps
    (``channels`` float32 maps of ``tile_px``², a few copies) plus the cells of a slide covered edge to
    edge by dense tissue (one cell per ``cell_area_um2`` µm²), each holding its position, class
    probabilities and feature vector (and a concatenation copy)."""
    h, w = (int(s) for s in shape_yx)
    cells = h * w * float(level_mpp) ** 2 / cell_area_um2
    return int(4 * tile_px ** 2 * (channels + 3) * 4 + cells * bytes_per_cell)


def enhance_bytes(n_cells: int, width: int, heads: int, layers: int, neighbours: int,
                  attention: bool = False) -> int:
    """Estimate for the neighbour-sparse enhancer over ``n_cells``: neighbour lists (int32 index, float32
    distance, bool), about ten ``(N, width)`` float32 activations, and with ``attention`` the per-layer
    ``(N, heads, K)`` weights plus the edge lists drawn from them (measured 2.3 GB at 10⁶ cells, K = 64,
    width 64, without attention)."""
    per = neighbours * 9 + width * 4 * 10
    if attention:
        per += layers * heads * neighbours * 4 * 2 + neighbours * 24
    return int(n_cells) * per
