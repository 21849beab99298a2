"""Stage 1: the multi-label CAM network (:class:`WeakCAMNet`) and its losses (CAM, Puzzle-CAM, SC-CAM)."""

from __future__ import annotations


def build_weak_cam(cfg: dict | None = None):
    """A :class:`WeakCAMNet` from a card config (``classes``, ``widths``, ``n_sub``)."""
    import torch
    from torch import nn

    from ..models.classifier import ClassifierConfig, build_classifier

    cfg = dict(cfg or {})
    n_sub = int(cfg.pop("n_sub", 0))

    class WeakCAMNet(nn.Module):
        """Multi-label GAP CNN. forward ``(B, 3, H, W)`` -> logits ``(B, K)``; :meth:`cams` -> ``(B, K, H/8, W/8)``
        local logits; optional sub-category head ``(B, K * n_sub)`` (SC-CAM)."""

        def __init__(self):
            super().__init__()
            self.net = build_classifier(ClassifierConfig.from_dict({**cfg, "multilabel": True}))
            self.n_sub = n_sub
            k = len(self.net.cfg.classes)
            self.sub = nn.Linear(self.net.out_channels, k * n_sub) if n_sub else None
            self.stride = self.net.stride

        def features(self, x):
            return self.net.forward_features(x)

        def cams_from_features(self, f):
            w, b = self.net.cam_weights()
            return torch.einsum("kc,bchw->bkhw", w, f) + b[None, :, None, None]

        def cams(self, x):
            return self.cams_from_features(self.features(x))

        def forward(self, x):
            return self.net(x)

    return WeakCAMNet()


def puzzle_loss(full_cam, tile_cams):
    """Puzzle-CAM reconstruction loss: mean ``|relu(full) - relu(merge(tiles))|``.

    full_cam ``(B, K, h, w)``; tile_cams ``(4, B, K, h/2, w/2)`` in order top-left, top-right,
    bottom-left, bottom-right. Zero when the merged tile CAMs equal the full CAM.
    """
    import torch

    top = torch.cat([tile_cams[0], tile_cams[1]], -1)
    bottom = torch.cat([tile_cams[2], tile_cams[3]], -1)
    merged = torch.cat([top, bottom], -2)
    return (torch.relu(full_cam) - torch.relu(merged)).abs().mean()


def split_tiles(x):
    """``(B, C, H, W)`` -> ``(4, B, C, H/2, W/2)``: the 2 x 2 tiles, row-major."""
    import torch

    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    return torch.stack([x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]])


def stage1_loss(model, x, y, variant: str, sub_y=None, alpha: float = 1.0):
    """Loss of one batch. x ``(B, 3, S, S)``, y ``(B, K)`` tile labels, sub_y ``(B, K * n_sub)`` (SC)."""
    import torch
    import torch.nn.functional as F

    f = model.features(x)
    logits = model.net.logits_from_features(f)
    loss = F.binary_cross_entropy_with_logits(logits, y)
    if variant == "puzzle":
        tiles = split_tiles(x)
        tf = model.features(tiles.flatten(0, 1))
        tcam = model.cams_from_features(tf).unflatten(0, (4, x.shape[0]))
        full = model.cams_from_features(f)
        merged_logits = torch.cat([torch.cat([tcam[0], tcam[1]], -1), torch.cat([tcam[2], tcam[3]], -1)], -2)
        loss = loss + F.binary_cross_entropy_with_logits(merged_logits.mean((2, 3)), y)
        loss = loss + alpha * puzzle_loss(full, tcam)
    if variant == "sc" and sub_y is not None:
        pooled = f.mean((2, 3))
        loss = loss + F.binary_cross_entropy_with_logits(model.sub(pooled), sub_y)
    return loss
