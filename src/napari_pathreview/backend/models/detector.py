"""Point detector: a small U-Net that predicts cell-centre objectness, a class map and a feature map.

The feature map is what the cell-relationship enhancer samples at each detected point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigDict

DEFAULT_CLASSES = ("epithelial", "inflammatory", "fibroblast", "others")


@dataclass
class DetectorConfig(ConfigDict):
    """Architecture of the detector.

    widths: channels per encoder level (the first is full resolution); ``len(widths) - 1`` poolings,
    so input sides must be multiples of ``2 ** (len(widths) - 1)`` (the pipelines pad for this).
    """

    in_channels: int = 3
    classes: tuple = DEFAULT_CLASSES
    widths: tuple = (16, 32, 64, 128)
    feature_dim: int = 32


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def encoder_blocks(in_channels: int, widths) -> nn.ModuleList:
    """U-Net encoder: one conv block per level, ``widths[0]`` channels at full resolution."""
    w = widths
    return nn.ModuleList([conv_block(in_channels, w[0])] + [conv_block(w[i - 1], w[i]) for i in range(1, len(w))])


def decoder_blocks(widths) -> nn.ModuleList:
    """U-Net decoder: one conv block per upsampling, from the coarsest level back to ``widths[0]``."""
    w = widths
    return nn.ModuleList([conv_block(w[i] + w[i - 1], w[i - 1]) for i in range(len(w) - 1, 0, -1)])


def encode(down: nn.ModuleList, x: torch.Tensor) -> list:
    """Skips of every level, finest first: (B, widths[i], H / 2**i, W / 2**i)."""
    skips = []
    for i, block in enumerate(down):
        if i:
            x = F.max_pool2d(x, 2)
        x = block(x)
        skips.append(x)
    return skips


def decode(up: nn.ModuleList, skips: list) -> torch.Tensor:
    """Bilinear upsampling + skip concatenation from ``skips[-1]`` -> (B, widths[0], H, W)."""
    x = skips[-1]
    for block, skip in zip(up, reversed(skips[:-1])):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = block(torch.cat([x, skip], 1))
    return x


class PointDetector(nn.Module):
    """U-Net with three heads.

    forward(x: (B, C_in, H, W) normalised image) -> dict:
        objectness: (B, 1, H, W) logits of "a cell centre is here" (Gaussian target, sigma ~2 px);
        class_logits: (B, K, H, W) per-pixel class logits;
        features: (B, F, H, W) feature map (full resolution) for the enhancer.
    """

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.down = encoder_blocks(cfg.in_channels, w)
        self.up = decoder_blocks(w)
        self.features = nn.Sequential(nn.Conv2d(w[0], cfg.feature_dim, 1), nn.ReLU(inplace=True))
        self.objectness = nn.Conv2d(cfg.feature_dim, 1, 1)
        self.class_head = nn.Conv2d(cfg.feature_dim, len(cfg.classes), 1)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.cfg.widths) - 1)

    def forward(self, x: torch.Tensor) -> dict:
        f = self.features(decode(self.up, encode(self.down, x)))
        return {"objectness": self.objectness(f), "class_logits": self.class_head(f), "features": f}


def build_detector(cfg: DetectorConfig | dict | None = None) -> PointDetector:
    """Factory used by the weights registry, training and tests."""
    if isinstance(cfg, dict):
        cfg = DetectorConfig.from_dict(cfg)
    return PointDetector(cfg or DetectorConfig())


def deepen_detector(
    model: PointDetector, channels: int, skip_mean: torch.Tensor, skip_std: torch.Tensor
) -> PointDetector:
    """The detector with one more, coarser encoder level of ``channels`` (twice the receptive field's
    reach), computing what ``model`` computes until it is trained.

    The new decoder block passes the old coarsest skip through: 3×3 convs that are the identity on it,
    batch norms that carry the skip's own per-channel statistics ``skip_mean`` / ``skip_std`` ((C,) each,
    C = ``widths[-1]``; measured on training images, so batch statistics in training leave it nearly
    unchanged), and the new level's contribution starts at ~1e-3 of a unit weight. The old decoder blocks
    move down one index.
    """
    cfg = model.cfg
    new = build_detector(
        DetectorConfig(
            in_channels=cfg.in_channels,
            classes=tuple(cfg.classes),
            widths=tuple(cfg.widths) + (channels,),
            feature_dim=cfg.feature_dim,
        )
    )
    sd = new.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith("up."):
            i, rest = k.split(".", 2)[1:]
            k = f"up.{int(i) + 1}.{rest}"
        sd[k] = v.detach().clone()
    c, idx = cfg.widths[-1], torch.arange(cfg.widths[-1])
    w_in = torch.randn(c, channels + c, 3, 3) * 1e-3
    w_in[:, channels:] = 0.0
    w_in[idx, channels + idx, 1, 1] = 1.0
    w_out = torch.zeros(c, c, 3, 3)
    w_out[idx, idx, 1, 1] = 1.0
    sd["up.0.0.weight"], sd["up.0.3.weight"] = w_in, w_out
    std = skip_std.float().clamp(min=1e-2)
    for j in (1, 4):  # conv, BN, ReLU, conv, BN, ReLU
        sd[f"up.0.{j}.weight"], sd[f"up.0.{j}.bias"] = std.clone(), skip_mean.float().clone()
        sd[f"up.0.{j}.running_mean"] = skip_mean.float().clone()
        sd[f"up.0.{j}.running_var"] = std**2 - new.up[0][j].eps
    new.load_state_dict(sd)
    return new
