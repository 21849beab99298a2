"""A small Vision Transformer (patch 16, class token) sized for a CPU, returning its attention maps.

``forward(x)``: ``(B, C, S, S)`` normalised, ``S = img_size`` -> logits ``(B, K)`` from the class
token. ``forward(x, return_attention=True)`` also returns a list (one per layer) of attention weights
``(B, heads, 1 + N, 1 + N)`` with ``N = (S / 16) ** 2`` patch tokens; token 0 is the class token.
``backend.explain.attention_rollout`` turns them into a patch heat map (Abnar & Zuidema 2020).
The original work used dim 768, 12 heads, 12 layers; the defaults here are 96 / 4 / 4.
``stem="conv"`` replaces the single 16 x 16 patch convolution by four 3 x 3 stride-2 convolutions
(BN + ReLU) and a 1 x 1 projection (Xiao et al. 2021, "Early convolutions help transformers see
better"): the same 16-pixel token grid, so rollout maps keep their layout; it trains from few images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import ConfigDict


@dataclass
class ViTConfig(ConfigDict):
    """Architecture of the ViT (stored in the model card)."""

    classes: tuple = ("benign", "malignant")
    in_channels: int = 3
    img_size: int = 224
    patch: int = 16
    dim: int = 96
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    multilabel: bool = False
    dropout: float = 0.0
    stem: str = "patch"


def conv_stem(cin: int, dim: int, patch: int) -> nn.Sequential:
    """3 x 3 stride-2 Conv-BN-ReLU layers down to stride ``patch`` (a power of two), then a 1 x 1
    projection to ``dim``: ``(B, cin, S, S)`` -> ``(B, dim, S / patch, S / patch)``."""
    n = patch.bit_length() - 1
    if 2**n != patch:
        raise ValueError(f"the conv stem needs a power-of-two patch, got {patch}")
    layers, c = [], cin
    for i in range(n):
        nxt = max(16, dim // 2 ** (n - 1 - i))
        layers += [nn.Conv2d(c, nxt, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(nxt), nn.ReLU()]
        c = nxt
    return nn.Sequential(*layers, nn.Conv2d(c, dim, 1))


class Block(nn.Module):
    """Pre-norm transformer block; ``forward(x (B, T, D))`` -> (x, attention ``(B, heads, T, T)``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x)), attn


class ViT(nn.Module):
    """Patch embedding (conv 16x16 stride 16, or the conv stem) + class token + learned positions + blocks +
    linear head."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        if cfg.img_size % cfg.patch or cfg.dim % cfg.heads:
            raise ValueError("img_size must be a multiple of patch and dim a multiple of heads")
        self.cfg = cfg
        self.grid = cfg.img_size // cfg.patch
        if cfg.stem == "conv":
            self.patch_embed = conv_stem(cfg.in_channels, cfg.dim, cfg.patch)
        elif cfg.stem == "patch":
            self.patch_embed = nn.Conv2d(cfg.in_channels, cfg.dim, cfg.patch, stride=cfg.patch)
        else:
            raise ValueError(f"unknown ViT stem {cfg.stem!r}: use 'patch' or 'conv'")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid**2, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, len(cfg.classes))

    def forward(self, x, return_attention: bool = False):
        if x.shape[-2:] != (self.cfg.img_size, self.cfg.img_size):
            raise ValueError(f"ViT input must be {self.cfg.img_size} x {self.cfg.img_size}, got {tuple(x.shape[-2:])}")
        tok = self.patch_embed(x).flatten(2).transpose(1, 2)
        tok = torch.cat([self.cls_token.expand(len(x), -1, -1), tok], 1) + self.pos
        attns = []
        for blk in self.blocks:
            tok, a = blk(tok)
            attns.append(a)
        logits = self.head(self.norm(tok[:, 0]))
        return (logits, attns) if return_attention else logits


def build_vit(cfg: ViTConfig | dict | None = None) -> ViT:
    """A :class:`ViT` from a config (dataclass or card dict)."""
    if cfg is None:
        cfg = ViTConfig()
    elif isinstance(cfg, dict):
        cfg = ViTConfig.from_dict(cfg)
    return ViT(cfg)
