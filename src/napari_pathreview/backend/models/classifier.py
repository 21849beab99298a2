"""Image classifier: a plain CNN with a global-average-pooling head (CAM-ready).

Layout (all in :attr:`Classifier.features`, an ``nn.Sequential`` of Conv2d / BatchNorm2d / ReLU /
MaxPool2d / :class:`SqueezeExcite` only, so LRP can walk it layer by layer)::

    stem   Conv3x3 stride 2 -> BN -> ReLU                       (B, w0, H/2, W/2)
    stage  [Conv3x3 -> BN -> ReLU] x depth [-> SE] [-> MaxPool 2]  per width
    pool   global average                                       (B, C)
    head   Linear (softmax / sigmoid logits) or ArcFace (scaled cosine logits)

Output stride :attr:`Classifier.stride` = ``2 ** len(widths)`` (16 for four widths): a CAM cell covers
16 x 16 model pixels. ``in_channels``: 3 (H&E RGB) or 4 (red/green/blue/yellow fluorescence).
``multilabel``: logits are read with a sigmoid per class instead of a softmax. ``head="arcface"``: an
embedding layer + normalised class centres (additive angular margin in training, see
``backend.losses.arcface_loss``); :meth:`Classifier.embed` exports the unit embedding for
nearest-neighbour look-up (:func:`nearest_neighbours`). ``decoder``: a small auto-encoder decoder that
reconstructs the input from the features (the dual loss' regulariser).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigDict


@dataclass
class ClassifierConfig(ConfigDict):
    """Architecture of the classifier (stored in the model card)."""

    classes: tuple = ("benign", "malignant")
    in_channels: int = 3
    widths: tuple = (16, 32, 64, 128)
    depth: int = 2
    se: bool = False
    multilabel: bool = False
    head: str = "linear"
    embed_dim: int = 64
    arcface_s: float = 16.0
    arcface_m: float = 0.5
    decoder: bool = False
    dropout: float = 0.0


class SqueezeExcite(nn.Module):
    """Channel gate ``x * sigmoid(fc2(relu(fc1(gap(x)))))``; x ``(B, C, H, W)`` -> same shape."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1, self.fc2 = nn.Linear(channels, hidden), nn.Linear(hidden, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, 1, 1)`` gate values in (0, 1)."""
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return g[:, :, None, None]

    def forward(self, x):
        return x * self.gate(x)


class ArcFaceHead(nn.Module):
    """Embedding ``Linear(C, D)`` + class centres ``(K, D)``; logits = ``s * cos(angle)`` ``(B, K)``."""

    def __init__(self, channels: int, n_classes: int, embed_dim: int, s: float, m: float):
        super().__init__()
        self.embedding = nn.Linear(channels, embed_dim)
        self.centres = nn.Parameter(torch.randn(n_classes, embed_dim) * 0.1)
        self.s, self.m = float(s), float(m)

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``(B, D)`` from pooled features ``(B, C)``."""
        return F.normalize(self.embedding(pooled), dim=1)

    def cosine(self, pooled: torch.Tensor) -> torch.Tensor:
        """``cos(angle)`` between embedding and each class centre, ``(B, K)`` in [-1, 1]."""
        return self.embed(pooled) @ F.normalize(self.centres, dim=1).t()

    def forward(self, pooled):
        return self.s * self.cosine(pooled)


def _block(cin: int, cout: int, stride: int = 1) -> list:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)]


class Classifier(nn.Module):
    """CNN + GAP classifier. ``forward(x)``: ``(B, in_channels, H, W)`` normalised -> logits ``(B, K)``.

    Any ``H, W`` works (fully convolutional up to the pooling); sides that are multiples of
    :attr:`stride` keep CAM cells aligned with pixels.
    """

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        w = list(cfg.widths)
        layers = _block(cfg.in_channels, w[0], stride=2)
        cin = w[0]
        for i, c in enumerate(w):
            for _ in range(cfg.depth):
                layers += _block(cin, c)
                cin = c
            if cfg.se:
                layers.append(SqueezeExcite(c))
            if i < len(w) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(cfg.dropout)
        n = len(cfg.classes)
        if cfg.head == "arcface":
            self.head = ArcFaceHead(cin, n, cfg.embed_dim, cfg.arcface_s, cfg.arcface_m)
        elif cfg.head == "linear":
            self.head = nn.Linear(cin, n)
        else:
            raise ValueError(f"unknown head {cfg.head!r}: use 'linear' or 'arcface'")
        self.decoder = _decoder(cin, cfg.in_channels, len(w)) if cfg.decoder else None
        self.stride = 2 ** len(w)
        self.out_channels = cin

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature maps before the pooling, ``(B, C, H / stride, W / stride)``."""
        return self.features(x)

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` features -> ``(B, K)`` logits (GAP then head)."""
        return self.head(self.drop(self.flatten(self.pool(f))))

    def forward(self, x):
        return self.logits_from_features(self.forward_features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding for nearest-neighbour look-up, ``(B, D)`` unit norm (ArcFace) or ``(B, C)`` GAP."""
        pooled = self.flatten(self.pool(self.forward_features(x)))
        if isinstance(self.head, ArcFaceHead):
            return self.head.embed(pooled)
        return F.normalize(pooled, dim=1)

    def reconstruct(self, f: torch.Tensor, size: tuple) -> torch.Tensor:
        """Decoder output ``(B, in_channels, *size)`` from features ``f`` (needs ``decoder=True``)."""
        if self.decoder is None:
            raise ValueError("this classifier has no decoder (config decoder=False)")
        return F.interpolate(self.decoder(f), size=size, mode="bilinear", align_corners=False)

    def lrp_sequence(self) -> list:
        """Modules whose composition equals :meth:`forward` in eval mode (linear head only), for LRP."""
        if not isinstance(self.head, nn.Linear):
            raise ValueError("LRP needs the linear head; this model has an ArcFace head")
        return list(self.features) + [self.pool, self.flatten, self.head]

    def cam_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K, C)`` weights and ``(K,)`` bias of the linear head (CAM = weights @ features)."""
        if not isinstance(self.head, nn.Linear):
            raise ValueError("CAM needs the linear GAP head; use Grad-CAM for an ArcFace head")
        return self.head.weight, self.head.bias


def _decoder(cin: int, cout: int, n_up: int) -> nn.Sequential:
    layers, c = [], cin
    for _ in range(n_up):
        nxt = max(16, c // 2)
        layers += [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(c, nxt, 3, padding=1),
            nn.ReLU(),
        ]
        c = nxt
    layers.append(nn.Conv2d(c, cout, 1))
    return nn.Sequential(*layers)


def build_classifier(cfg: ClassifierConfig | dict | None = None) -> Classifier:
    """A :class:`Classifier` from a config (dataclass or card dict); defaults: 2 classes, RGB."""
    if cfg is None:
        cfg = ClassifierConfig()
    elif isinstance(cfg, dict):
        cfg = ClassifierConfig.from_dict(cfg)
    return Classifier(cfg)


def nearest_neighbours(database: torch.Tensor, query: torch.Tensor, k: int = 1):
    """Cosine nearest neighbours. database ``(N, D)``, query ``(M, D)`` -> (similarity, index) ``(M, k)``."""
    db, q = F.normalize(database, dim=1), F.normalize(query, dim=1)
    sim = q @ db.t()
    return sim.topk(min(k, db.shape[0]), dim=1)
