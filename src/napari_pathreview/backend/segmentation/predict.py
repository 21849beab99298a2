"""The segmenter as a ``tiling`` predict function: input-pixel tiles in, blended-ready maps out."""

from __future__ import annotations

import numpy as np

from ..errors import InputError, check_cancel
from ..precision import autocast, current
from ..stain import scale_hematoxylin
from ..tissue import is_background


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def grey_of(b: np.ndarray) -> np.ndarray:
    """``(..., 3)`` float32 RGB -> ``(...)`` their mean, bit-identical to ``b.mean(-1)`` (the same sum in
    the same order, divided by 3) but several times faster than numpy's reduction over a short axis."""
    return (b[..., 0] + b[..., 1] + b[..., 2]) / np.float32(3)


def check_ensemble(models, cards) -> tuple[list, list]:
    """``(models, cards)`` as lists (one model or several), refused unless every card has the first
    one's classes and scale."""
    models, cards = _as_list(models), _as_list(cards)
    if not models or len(models) != len(cards):
        raise InputError("give one card per model")
    c0 = cards[0]
    for c in cards[1:]:
        if list(c.classes) != list(c0.classes) or abs((c.mpp or 0) - (c0.mpp or 0)) > 1e-6:
            raise InputError(
                f"ensemble members differ: {c.name} ({c.classes}, {c.mpp} µm/px) vs "
                f"{c0.name} ({c0.classes}, {c0.mpp} µm/px); combine models of one task and scale"
            )
    return models, cards


def n_fg_channels(card) -> int:
    """Foreground channels of a card's maps: 1 for one class, else classes + background."""
    return 1 if len(card.classes) == 1 else len(card.classes) + 1


class SegmenterPredictor:
    """Model(s) wrapped as a ``tiling`` predict function over input-pixel tiles.

    (B, t, t, C) float32 (raw 0..255 RGB values) -> (B, K + 2, t, t) float32: foreground
    probabilities (K = 1, or classes + background), the normalised distance map, and the tile's grey
    intensity (mean of RGB) passed through so post-processing can measure instances. Each tile is
    resampled by ``scale`` (model pixels per input pixel) before the network and back after; ``tta``
    averages the 4 flips; several models are combined by ``ensemble``: ``"mean"`` of probabilities, or
    ``"union"`` (max: foreground where any model finds it). With ``skip_background`` tiles of bare glass
    (``tissue.is_background``) skip the network: no foreground, distance 0. ``compile``: run the
    network(s) through ``compiled.compile_for_inference`` (faster per tile after a ~20-30 s first call).
    ``h_factor``: hematoxylin scaling of every tile before the network (``stain.scale_hematoxylin``; the
    grey channel passed through stays the input's). ``cancel`` (an Event) is checked before every network
    pass, so a cancel inside a tile of TTA x ensemble passes waits for one pass, not the whole tile.

    ``out_channels``: K + 2; ``batch_size``: tiles per call that suit the device.
    """

    def __init__(
        self,
        models,
        cards,
        scale: float,
        tta: bool = False,
        ensemble: str = "mean",
        skip_background: bool = True,
        compile: bool = False,
        h_factor: float = 1.0,
        cancel=None,
    ):
        import torch

        self.prec = current()  # fixed when the function is made: tiles may run on another thread
        models, cards = check_ensemble(models, cards)
        if compile:
            from ..compiled import compile_for_inference

            models = [compile_for_inference(m) for m in models]
        if ensemble not in ("mean", "union"):
            raise InputError(f"ensemble must be 'mean' or 'union', got {ensemble!r}")
        card = cards[0]
        self.models, self.scale, self.ensemble, self.cancel = models, scale, ensemble, cancel
        self.skip_background, self.h_factor = skip_background, h_factor
        self.mean = torch.tensor(card.normalisation["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(card.normalisation["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.multi = len(card.classes) > 1
        self.flips = [(), (3,), (2,), (2, 3)] if tta else [()]
        self.out_channels = n_fg_channels(card) + 2
        # tiles per forward: batching pays on a GPU (an out-of-memory error halves it, tiling.OomSplitter);
        # on the CPU one tile keeps results independent of how tiles are grouped (bit-identical resumes)
        self.batch_size = 4 if next(models[0].parameters()).device.type == "cuda" else 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        b = np.asarray(batch, np.float32)
        if b.shape[-1] == 1:
            b = np.repeat(b, 3, -1)
        b = b[..., :3]
        if self.skip_background:
            glass = np.array([is_background(t) for t in b])
            if glass.any():
                out = np.zeros((len(b), self.out_channels) + b.shape[1:3], np.float32)
                if self.multi:
                    out[:, 0] = 1.0  # all background
                out[:, -1] = grey_of(b)
                if not glass.all():
                    out[~glass] = self._maps(b[~glass])
                return out
        return self._maps(b)

    def _maps(self, b: np.ndarray) -> np.ndarray:
        """Network maps of non-glass tiles (B, t, t, 3) -> (B, K + 2, t, t), resampled both ways."""
        import torch
        import torch.nn.functional as F

        t_h, t_w = b.shape[1:3]
        grey = grey_of(b)[:, None]
        device = next(self.models[0].parameters()).device
        if self.h_factor != 1.0:
            b = scale_hematoxylin(b, self.h_factor)
        x = (torch.from_numpy(b.transpose(0, 3, 1, 2).copy()) / 255.0 - self.mean) / self.std
        scale = self.scale
        mh, mw = max(8, int(round(t_h * scale))), max(8, int(round(t_w * scale)))
        if (mh, mw) != (t_h, t_w):
            x = F.interpolate(x, size=(mh, mw), mode="bilinear", align_corners=False, antialias=scale < 1)
        outs = []
        with torch.inference_mode():
            for m in self.models:
                outs.append(self._run_one(m, x.to(device)).float().cpu())
        p = torch.stack(outs).mean(0) if self.ensemble == "mean" else torch.stack(outs).amax(0)
        if (mh, mw) != (t_h, t_w):
            p = F.interpolate(p, size=(t_h, t_w), mode="bilinear", align_corners=False)
        return np.concatenate([p.numpy(), grey], 1).astype(np.float32)

    def _run_one(self, model, x):
        """One model's probabilities and sigmoid distance (B, K + 1, h, w), averaged over the flips."""
        import torch
        import torch.nn.functional as F

        s = model.stride
        h, w = x.shape[-2:]
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        acc = None
        for f in self.flips:
            check_cancel(self.cancel)
            xi = torch.flip(x, f) if f else x
            with autocast(xi.device, self.prec):
                out = model(xi.contiguous(memory_format=torch.channels_last))
            logits, distance = out["logits"].float(), out["distance"].float()
            p = torch.softmax(logits, 1) if self.multi else torch.sigmoid(logits)
            p = torch.cat([p, torch.sigmoid(distance)], 1)
            p = torch.flip(p, f) if f else p
            acc = p if acc is None else acc + p
        return (acc / len(self.flips))[..., :h, :w]


def make_predict_fn(models, cards, scale: float, **options) -> SegmenterPredictor:
    """Model(s) as a ``tiling`` predict function; ``options``: ``tta``, ``ensemble``,
    ``skip_background``, ``compile``, ``h_factor``, ``cancel`` (see :class:`SegmenterPredictor`)."""
    return SegmenterPredictor(models, cards, scale, **options)
