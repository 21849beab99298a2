"""Cell points <-> dense maps: training targets from annotated points, and points from predicted maps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def point_targets(
    shape: tuple[int, int],
    yx: np.ndarray,
    labels: np.ndarray,
    sigma: float = 2.0,
    class_radius: float = 4.0,
    crowding: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense training targets for the point detector.

    Args:
        shape: (H, W) of the image in pixels.
        yx: (N, 2) annotated centres (row, col), pixels.
        labels: (N,) class index per point, -1 for nuclei without class.
        sigma: Gaussian sigma of the objectness peak, pixels.
        class_radius: pixels closer than this to their nearest annotated centre get its class.
        crowding: when > 0, each point's sigma is at most ``crowding`` x the distance to its nearest
            neighbour (pixels), so that touching nuclei keep separate peaks with a dip between them
            (0: one sigma for all).

    Returns:
        objectness (H, W) float32 in [0, 1]: the nearest centre's Gaussian (the max over Gaussians
        when all share one sigma), exactly 1 at each centre's pixel;
        classes (H, W) int64, the nearest labelled point's class, -1 (ignored) elsewhere or where the
        nearest point has no class.
    """
    from scipy import ndimage

    h, w = shape
    obj = np.zeros((h, w), np.float32)
    cls = np.full((h, w), -1, np.int64)
    if len(yx) == 0:
        return obj, cls
    pix = np.clip(np.round(yx).astype(np.int64), 0, [h - 1, w - 1])
    seeds = np.zeros((h, w), bool)
    seeds[pix[:, 0], pix[:, 1]] = True
    owner = np.full((h, w), -1, np.int64)
    owner[pix[:, 0], pix[:, 1]] = np.arange(len(pix))
    dist, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    nearest = owner[iy, ix]
    sig = np.full(len(pix), float(sigma))
    if crowding > 0 and len(pix) > 1:
        from scipy.spatial import cKDTree

        nn = cKDTree(yx).query(yx, k=2)[0][:, 1]
        sig = np.maximum(np.minimum(sig, crowding * nn), 1.0)
    obj = np.exp(-(dist**2) / (2 * sig[nearest] ** 2)).astype(np.float32)
    near = dist <= class_radius
    cls[near] = labels[nearest[near]]
    return obj, cls


@dataclass
class CellPoints:
    """Detected (or annotated) cells of one image.

    yx: (N, 2) float, pixels of the input image (row, col); mpp: microns per pixel of those pixels;
    labels: (N,) int class index; scores: (N,) objectness in [0, 1]; probs: (N, K) class probabilities;
    features: (N, F) feature-map vectors at the points (for the enhancer), or None; threshold: the
    score every detected cell passed (the image's own under an adaptive rule), None when not detected;
    adapted: the detector's batch-norm statistics were the image's own (test-time adaptation).
    """

    yx: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    probs: np.ndarray
    classes: list
    mpp: float | None = None
    features: np.ndarray | None = None
    source: str = ""
    colors: dict = field(default_factory=dict)
    threshold: float | None = None
    adapted: bool = False

    def __len__(self) -> int:
        return len(self.yx)

    @classmethod
    def empty(cls, classes, feature_dim: int = 0, **kw) -> CellPoints:
        k = len(classes)
        return cls(
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.float32),
            np.zeros((0, k), np.float32),
            list(classes),
            features=np.zeros((0, feature_dim), np.float32) if feature_dim else None,
            **kw,
        )

    def select(self, keep: np.ndarray) -> CellPoints:
        """Subset by boolean mask or index array."""
        return CellPoints(
            self.yx[keep],
            self.labels[keep],
            self.scores[keep],
            self.probs[keep],
            self.classes,
            self.mpp,
            None if self.features is None else self.features[keep],
            self.source,
            self.colors,
            self.threshold,
            self.adapted,
        )

    @staticmethod
    def concat(parts: list[CellPoints]) -> CellPoints:
        first = parts[0]
        feats = None if first.features is None else np.concatenate([p.features for p in parts])
        return CellPoints(
            np.concatenate([p.yx for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.probs for p in parts]),
            first.classes,
            first.mpp,
            feats,
            first.source,
            first.colors,
            first.threshold,
            first.adapted,
        )

    def table(self) -> dict:
        """Column table (class, score, p_<class>) for a napari features table, CSV or GeoJSON."""
        names = np.array(self.classes, dtype=object)
        t = {"class": names[self.labels] if len(self) else np.zeros(0, object), "score": self.scores.astype(np.float32)}
        for k, c in enumerate(self.classes):
            t[f"p_{c}"] = self.probs[:, k].astype(np.float32)
        return t


def find_peaks(objectness: np.ndarray, threshold: float, min_distance: int) -> np.ndarray:
    """Local maxima of an objectness map (H, W) in [0, 1] -> (N, 2) int (row, col) pixels."""
    from skimage.feature import peak_local_max

    return peak_local_max(
        objectness, min_distance=max(1, int(min_distance)), threshold_abs=threshold, exclude_border=False
    ).astype(np.int64)


def sample_bilinear(fmap: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """Bilinear samples of a (C, H, W) map at (N, 2) float pixel positions -> (N, C)."""
    c, h, w = fmap.shape
    if len(yx) == 0:
        return np.zeros((0, c), fmap.dtype)
    y = np.clip(yx[:, 0], 0, h - 1)
    x = np.clip(yx[:, 1], 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (y - y0)[:, None], (x - x0)[:, None]
    f = lambda a, b: fmap[:, a, b].T
    return (
        (1 - wy) * (1 - wx) * f(y0, x0) + (1 - wy) * wx * f(y0, x1) + wy * (1 - wx) * f(y1, x0) + wy * wx * f(y1, x1)
    ).astype(fmap.dtype)
