"""SC-CAM sub-categories: k-means on pooled features of the crops where a class is present."""

from __future__ import annotations

import numpy as np

from .config import WeakConfig
from .crops import random_crops


def sub_categories(model, samples, cfg: WeakConfig, n_classes: int, rng, device, normalisation: dict, n: int = 2048):
    """SC-CAM clustering: k-means (``n_sub`` clusters) per class on pooled features of positive crops
    (pixels normalised with ``normalisation``, as the model was trained).

    Returns the per-class ``KMeans`` objects (None where too few crops) for :func:`sub_labels`.
    """
    import torch

    x, y = random_crops(samples, n, cfg.crop, n_classes, rng, normalisation)
    feats = []
    with torch.no_grad():
        for i in range(0, n, 256):
            feats.append(model.features(torch.from_numpy(x[i : i + 256]).to(device)).mean((2, 3)).cpu().numpy())
    feats = np.concatenate(feats)
    kms = []
    for k in range(n_classes):
        pos = feats[y[:, k] > 0]
        kms.append(kmeans(pos, cfg.n_sub, seed=cfg.seed) if len(pos) >= 4 * cfg.n_sub else None)
    return kms


class kmeans:
    """Lloyd's k-means with k-means++ seeding (numpy). ``kmeans(x (N, D), k)``; ``.centres`` ``(k, D)``;
    ``.predict(x)`` -> ``(N,)`` nearest centre."""

    def __init__(self, x: np.ndarray, k: int, iters: int = 30, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = np.asarray(x, np.float64)
        c = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d = np.min(((x[:, None] - np.array(c)[None]) ** 2).sum(-1), 1)
            c.append(x[rng.choice(len(x), p=d / d.sum()) if d.sum() > 0 else rng.integers(len(x))])
        self.centres = np.array(c)
        for _ in range(iters):
            a = self.predict(x)
            new = np.array([x[a == j].mean(0) if np.any(a == j) else self.centres[j] for j in range(k)])
            if np.allclose(new, self.centres):
                break
            self.centres = new

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64)[:, None] - self.centres[None]) ** 2).sum(-1).argmin(1)


def sub_labels(model, x, y, kms, n_sub: int):
    """``(B, K * n_sub)`` sub-category targets: 1 at the cluster of each present class."""
    import torch

    with torch.no_grad():
        pooled = model.features(x).mean((2, 3)).cpu().numpy()
    out = np.zeros((len(y), len(kms) * n_sub), np.float32)
    yn = y.cpu().numpy()
    for k, km in enumerate(kms):
        rows = np.nonzero(yn[:, k] > 0)[0]
        if km is None or not len(rows):
            continue
        out[rows, k * n_sub + km.predict(pooled[rows])] = 1.0
    return torch.from_numpy(out).to(x.device)
