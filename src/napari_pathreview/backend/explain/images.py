"""Explaining an image or a slide: resampled to the model's scale, explained tile by tile when larger than
the model's input, blended with a Hann window, resized back to the input's pixel grid."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..classification.model_input import input_mpp, model_tiles, normalise, pad_for_model, probabilities, to_model_scale
from ..errors import InputError, ProgressFn, check_cancel, report
from ..precision import autocast
from ..slides import Slide
from ..tiling import Stitcher
from .methods import method_fn

# relevance propagation divides by small activations: at bf16 the lrp-epsilon maps of classifier-glas
# correlate r = 0.47 with fp32's (pathreview bench precision), so LRP always runs in float32
FP32_METHODS = ("lrp-epsilon", "lrp-gamma", "lrp-a1b0", "lrp-a2b1")
MAX_PIXELS = 1 << 26  # maps larger than this many input pixels stay at the model grid (see downsample)


def explain_array(
    model,
    card,
    image: np.ndarray,
    method: str,
    targets,
    layer: str | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Explain a model-scale float image ``(H, W, C)`` in [0, 1] -> (maps ``(n, H, W)``, probs ``(K,)``).

    Larger than the model's input (``classification.model_tiles``): tile by tile, maps blended with a
    Hann window and tile probabilities averaged.
    """
    fn = method_fn(method, card)
    dev = next(model.parameters()).device
    tiles = model_tiles(image.shape[:2], card)
    st = Stitcher((len(targets), *image.shape[:2]), "hann")
    probs = 0.0
    for i, t in enumerate(tiles):
        check_cancel(cancel)
        crop = image[t.y0 : t.y1, t.x0 : t.x1]
        x = normalise(pad_for_model(crop, card)[None], card).to(dev)
        with autocast(dev, "fp32" if method in FP32_METHODS else None):
            maps, logits = fn(model, x, list(targets), layer=layer)
        st.add(t, maps[:, : crop.shape[0], : crop.shape[1]].float().cpu().numpy())
        probs = probs + probabilities(logits[None].detach(), card)[0].float().cpu().numpy()
        report(progress, i + 1, len(tiles), f"{method}: tile {i + 1} of {len(tiles)}")
    return st.result(), probs / len(tiles)


@dataclass
class ExplainResult:
    """Heat maps of one image.

    maps: ``(n, H, W)`` float32, one per explained class, on the input's level-0 pixel grid divided by
    ``downsample`` (1 unless the input exceeds ``MAX_PIXELS``); probs ``(K,)`` for all ``classes``;
    targets: names of the explained classes; mpp: µm per input pixel used; units per method (see module).
    """

    maps: np.ndarray
    probs: np.ndarray
    classes: list
    targets: list
    method: str
    model: str
    mpp: float | None
    downsample: float = 1.0
    name: str = "image"
    extra: dict = field(default_factory=dict)


def target_indices(classes, card) -> list[int]:
    """Indices into ``card.classes`` of ``classes`` (names or indices; None, "all" or empty: every class)."""
    names = list(card.classes)
    if classes is None or classes == "all" or (isinstance(classes, (list, tuple)) and not classes):
        return list(range(len(names)))
    out = []
    for c in [classes] if isinstance(classes, (str, int)) else classes:
        if isinstance(c, (int, np.integer)) and 0 <= c < len(names):
            out.append(int(c))
        elif c in names:
            out.append(names.index(c))
        else:
            raise InputError(f"unknown class '{c}' for {card.name}; classes: {', '.join(names)}")
    return out


def explain_image(
    image,
    model,
    card,
    method: str = "gradcam",
    classes=None,
    mpp: float | None = None,
    layer: str | None = None,
    progress: ProgressFn | None = None,
    cancel=None,
    name: str = "image",
) -> ExplainResult:
    """Probabilities + heat maps of an ``(H, W, C)`` array or a Slide, maps at the input's pixel grid."""
    from skimage.transform import resize

    targets = target_indices(classes, card)
    method_fn(method, card)
    if isinstance(image, Slide):
        mpp = mpp or image.mpp
        shape = image.shape
    else:
        shape = np.shape(image)[:2]
    img = to_model_scale(image, card, mpp)
    maps, probs = explain_array(model, card, img, method, targets, layer, progress, cancel)
    down = 1.0
    if shape[0] * shape[1] > MAX_PIXELS:
        down = shape[0] / img.shape[0]
    else:
        maps = resize(maps, (len(targets), *shape), order=1, preserve_range=True, anti_aliasing=False)
    return ExplainResult(
        np.asarray(maps, np.float32),
        probs.astype(np.float32),
        list(card.classes),
        [card.classes[t] for t in targets],
        method,
        card.name,
        input_mpp(card, mpp),
        down,
        name,
    )
