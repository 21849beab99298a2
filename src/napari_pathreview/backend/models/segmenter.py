"""Nucleus / tissue segmenter: a small U-Net with optional ASPP bottleneck and FPN decoder.

Two heads at full resolution:

- ``logits`` ``(B, K, H, W)``: foreground logits. ``K = 1`` for one class (sigmoid: "is foreground"),
  ``K = len(classes) + 1`` for several classes (softmax over background + classes).
- ``distance`` ``(B, 1, H, W)``: logits of the normalised distance map (distance to the instance's
  border divided by its maximum, in [0, 1] after a sigmoid); its peaks seed the watershed that splits
  touching instances (see ``backend.segmentation.label_instances``).

Small enough to train on a CPU (widths 16-32-64-128, ~0.5 M parameters) and channels_last friendly
(plain convolutions, batch norm, bilinear upsampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigDict
from .detector import conv_block, decode, decoder_blocks, encode, encoder_blocks


@dataclass
class SegmenterConfig(ConfigDict):
    """Architecture of the segmenter.

    widths: channels per encoder level (the first at full resolution); ``len(widths) - 1`` poolings, so
    input sides must be multiples of ``2 ** (len(widths) - 1)`` (:attr:`Segmenter.stride`; the
    pipelines pad for this). aspp: atrous spatial pyramid pooling at the bottleneck with dilation
    ``aspp_rates``; aspp_pool: add DeepLab's image-pooling branch (a whole-input mean, so a tile's
    output depends on the tile: off by default so tiled and whole-image inference agree); decoder: ``"unet"`` (upsample + skip concatenation) or ``"fpn"`` (lateral 1x1,
    top-down sum, all levels upsampled and summed); fpn_dim: FPN channels.
    """

    in_channels: int = 3
    classes: tuple = ("nucleus",)
    widths: tuple = (16, 32, 64, 128)
    aspp: bool = True
    aspp_rates: tuple = (2, 4, 6)
    aspp_pool: bool = False
    decoder: str = "unet"
    fpn_dim: int = 32

    @property
    def out_channels(self) -> int:
        """Foreground channels: 1 (binary, sigmoid) or classes + background (softmax)."""
        return 1 if len(self.classes) == 1 else len(self.classes) + 1


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3): 1x1, dilated 3x3 per rate, optional image pooling -> 1x1.

    (B, C, h, w) -> (B, C, h, w).
    """

    def __init__(self, channels: int, rates=(2, 4, 6), image_pool: bool = False):
        super().__init__()

        def cbr(k, d):
            return nn.Sequential(
                nn.Conv2d(channels, channels, k, padding=d * (k // 2), dilation=d, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )

        self.branches = nn.ModuleList([cbr(1, 1)] + [cbr(3, r) for r in rates])
        self.pool = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True)) if image_pool else None
        n_in = len(rates) + 1 + int(image_pool)
        self.project = nn.Sequential(
            nn.Conv2d(channels * n_in, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x) for b in self.branches]
        if self.pool is not None:
            feats.append(self.pool(x.mean((2, 3), keepdim=True)).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(feats, 1))


class Segmenter(nn.Module):
    """forward(x: (B, C_in, H, W) normalised image, H and W multiples of ``stride``) ->
    ``{"logits": (B, K, H, W), "distance": (B, 1, H, W)}`` (both logits)."""

    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        if cfg.decoder not in ("unet", "fpn"):
            raise ValueError(f"decoder must be 'unet' or 'fpn', got {cfg.decoder!r}")
        self.cfg = cfg
        w = cfg.widths
        self.down = encoder_blocks(cfg.in_channels, w)
        self.aspp = ASPP(w[-1], cfg.aspp_rates, cfg.aspp_pool) if cfg.aspp else nn.Identity()
        if cfg.decoder == "unet":
            self.up = decoder_blocks(w)
            head_in = w[0]
        else:
            d = cfg.fpn_dim
            self.lateral = nn.ModuleList([nn.Conv2d(c, d, 1) for c in w])
            self.smooth = nn.ModuleList(
                [
                    nn.Sequential(nn.Conv2d(d, d, 3, padding=1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True))
                    for _ in w
                ]
            )
            self.fuse = conv_block(d, d)
            head_in = d
        self.logits = nn.Conv2d(head_in, cfg.out_channels, 1)
        self.distance = nn.Conv2d(head_in, 1, 1)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.cfg.widths) - 1)

    def forward(self, x: torch.Tensor) -> dict:
        skips = encode(self.down, x)
        skips[-1] = self.aspp(skips[-1])
        if self.cfg.decoder == "unet":
            x = decode(self.up, skips)
        else:
            top = self.lateral[-1](skips[-1])
            pyramid = [self.smooth[-1](top)]
            for i in range(len(skips) - 2, -1, -1):
                top = self.lateral[i](skips[i]) + F.interpolate(
                    top, size=skips[i].shape[-2:], mode="bilinear", align_corners=False
                )
                pyramid.append(self.smooth[i](top))
            size = skips[0].shape[-2:]
            x = self.fuse(
                sum(
                    F.interpolate(p, size=size, mode="bilinear", align_corners=False) if p.shape[-2:] != size else p
                    for p in pyramid
                )
            )
        return {"logits": self.logits(x), "distance": self.distance(x)}


def build_segmenter(cfg: SegmenterConfig | dict | None = None) -> Segmenter:
    """Factory used by the weights registry, training and tests (``cfg`` a config or its dict)."""
    if isinstance(cfg, dict):
        cfg = SegmenterConfig.from_dict(cfg)
    return Segmenter(cfg or SegmenterConfig())
