"""Training tiles of a segmenter: the multi-scale tile dataset, its augmentation, batches, the loss."""

from __future__ import annotations

import numpy as np

from .. import augment
from .data import MaskSample, distance_target


def _resize(a: np.ndarray, size: int, order: int = 1) -> np.ndarray:
    from skimage.transform import resize

    if a.shape[0] == size and a.shape[1] == size:
        return a
    down = a.shape[0] > size
    return resize(
        a, (size, size) + a.shape[2:], order=order, mode="reflect", anti_aliasing=down, preserve_range=True
    ).astype(np.float32)


def _cell_start(i: int, g: int, size: int, side: int, rng: np.random.Generator) -> int:
    """Start of cell ``i`` of a ``g``-cell grid along an axis of ``size`` px, jittered by up to a quarter
    of its ``side`` (a random start when ``g == 1``)."""
    if g == 1:
        return int(rng.integers(0, size - side + 1))
    start = i * (size - side) / max(1, g - 1) + rng.integers(-side // 4, side // 4 + 1)
    return int(np.clip(start, 0, size - side))


class MultiScaleTiles:
    """The multi-scale tile dataset (HuBMAP 2021): every image as a whole, as a 2x2 and as a 3x3
    tiling, each cell (jittered by up to a quarter of its side) resized to ``tile`` x ``tile``.

    For MoNuSeg (1000 px at 0.25 µm/px) with ``tile = 256`` the three grids are seen at about 1.0, 0.5
    (the model's scale) and 0.33 µm/px: scale augmentation around the working scale.
    ``per_grid``: cells drawn per image and epoch from each grid (all of them when None).
    Items: (image (t, t, 3) float [0, 1], foreground (t, t) float, distance (t, t) float, instances bool).
    """

    def __init__(self, samples: list[MaskSample], tile: int = 256, grids=(1, 2, 3), per_grid=(1, 4, 4)):
        self.samples, self.tile, self.grids = samples, int(tile), tuple(grids)
        self.per_grid = tuple(per_grid) if per_grid is not None else tuple(g * g for g in grids)
        self.images = [s.image.astype(np.float32) / 255.0 for s in samples]
        self.fg = [(s.labels > 0).astype(np.float32) for s in samples]
        self.dist = [
            distance_target(s.labels) if s.instances else np.zeros(s.labels.shape, np.float32) for s in samples
        ]

    def cells(self, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
        """One epoch's (sample index, y0, x0, side) windows in random order."""
        out = []
        for si, s in enumerate(self.samples):
            h, w = s.image.shape[:2]
            for g, k in zip(self.grids, self.per_grid):
                side = min(h, w) // g
                grid = [(i, j) for i in range(g) for j in range(g)]
                for c in rng.permutation(len(grid))[:k]:
                    i, j = grid[c]
                    y0 = _cell_start(i, g, h, side, rng)
                    x0 = _cell_start(j, g, w, side, rng)
                    out.append((si, y0, x0, side))
        return [out[i] for i in rng.permutation(len(out))]

    def item(self, cell) -> tuple:
        si, y0, x0, side = cell
        sl = (slice(y0, y0 + side), slice(x0, x0 + side))
        t = self.tile
        return (
            np.clip(_resize(self.images[si][sl], t), 0, 1),
            _resize(self.fg[si][sl], t),
            _resize(self.dist[si][sl], t),
            self.samples[si].instances,
        )


def augment_item(item, other, rng: np.random.Generator, p_blend: float = 0.2, p_pale: float = 0.0):
    """Colour / geometry augmentation of one tile, and Laplacian-pyramid blending with ``other``.
    ``p_pale``: probability of paling the tile's nuclei (:func:`augment.pale_nuclei`)."""
    img, fg, dist, inst = item
    if other is not None and rng.random() < p_blend:
        img2, fg2, dist2, inst2 = other
        m = augment.random_blend_mask(img.shape[0], img.shape[1], rng)
        img = augment.laplacian_blend(img, img2, m)
        fg, dist, inst = fg * m + fg2 * (1 - m), dist * m + dist2 * (1 - m), inst and inst2
    if p_pale and rng.random() < p_pale:
        img = augment.pale_nuclei(img, fg, rng)
    img, fg, dist = augment.random_dihedral([img, fg, dist], rng)
    if rng.random() < 0.3:
        img, fg, dist = augment.grid_distortion([img, fg, dist], rng)
    for p, jitter in (
        (0.7, augment.hed_jitter),
        (0.5, augment.hsv_jitter),
        (0.7, augment.brightness_contrast),
        (0.2, augment.gaussian_blur),
        (0.2, augment.gaussian_noise),
    ):
        if rng.random() < p:
            img = jitter(img, rng)
    return np.clip(img, 0, 1).astype(np.float32), fg, dist, inst


def batch_tensors(items, card, device):
    """Augmented items -> (x (B, 3, t, t) normalised as the card says, channels-last; foreground
    (B, t, t); distance (B, t, t); instances (B,) 0/1), on ``device``."""
    import torch

    mean = np.asarray(card.normalisation["mean"], np.float32)
    std = np.asarray(card.normalisation["std"], np.float32)
    x = torch.from_numpy(np.stack([(it[0] - mean) / std for it in items]).transpose(0, 3, 1, 2).copy())
    fg = torch.from_numpy(np.stack([it[1] for it in items]).astype(np.float32))
    dist = torch.from_numpy(np.stack([it[2] for it in items]).astype(np.float32))
    inst = torch.tensor([float(it[3]) for it in items])
    return (x.to(device).contiguous(memory_format=torch.channels_last), fg.to(device), dist.to(device), inst.to(device))


def lovasz_hinge(logits, target):
    """Lovász hinge loss (Berman et al. 2018) of binary logits (B, H, W) vs 0/1 targets, image-averaged
    (``losses.lovasz_hinge`` with each image's pixels as one class)."""
    from ..losses import lovasz_hinge as per_class

    return per_class(logits.flatten(1).T, target.flatten(1).T)


def segmenter_loss(model, batch, lovasz: bool = False):
    """BCE + soft Dice on the foreground (+ Lovász hinge), and BCE on the distance map for tiles whose
    masks hold instances (``mask=binary`` tiles train the foreground only)."""
    import torch
    import torch.nn.functional as F

    x, fg, dist, inst = batch
    out = {k: v.float() for k, v in model(x).items()}  # float32 losses under autocast
    lg = out["logits"][:, 0]
    loss = F.binary_cross_entropy_with_logits(lg, fg)
    p = torch.sigmoid(lg)
    loss = loss + 1.0 - (2 * (p * fg).sum() + 1) / (p.sum() + fg.sum() + 1)
    if lovasz:
        loss = loss + 0.5 * lovasz_hinge(lg, (fg > 0.5).float())
    if inst.any():
        d = F.binary_cross_entropy_with_logits(out["distance"][:, 0], dist, reduction="none")
        w = 1.0 + 4.0 * (fg > 0.5).float()
        loss = loss + ((d * w).mean((1, 2)) * inst).sum() / inst.sum()
    return loss
