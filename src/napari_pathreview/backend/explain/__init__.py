"""Heat maps of classifier decisions: CAM, Grad-CAM, LRP (epsilon, gamma, alpha-beta) and ViT attention rollout.

Every method takes one normalised input ``x`` ``(1, C, H, W)`` (model scale) and class indices
``targets`` and returns ``(maps (n_targets, H, W) float tensor at x's pixel grid, logits (K,))``:
``cam`` and ``gradcam`` (:mod:`.cam`), ``lrp-*`` (:mod:`.lrp`), ``rollout`` (:mod:`.rollout`); which
apply to a model: :mod:`.methods`.

:func:`explain_image` (:mod:`.images`) runs a method over an image or slide: resampled to the model's
scale, explained tile by tile when larger than the model's input, blended with a Hann window, resized
back to the input's pixel grid. :func:`faithfulness` (:mod:`.faithfulness`) scores a map by
deletion/insertion curves against random maps; :mod:`.files` writes maps and overlays.

Arrows: ``explain`` -> ``classification`` (model-scale input, probabilities), never back.
"""

from ..errors import InputError
from .cam import cam, cam_lowres, default_gradcam_layer, gradcam
from .faithfulness import curve_auc, deletion_curves, faithfulness
from .files import display_range, heat_rgb, write_explanation
from .images import MAX_PIXELS, ExplainResult, explain_array, explain_image, target_indices
from .lrp import lrp, lrp_relevance
from .methods import LRP_RULES, METHODS, method_fn, methods_for
from .rollout import attention_rollout, rollout

_targets = target_indices  # the name backend.pipelines imports

__all__ = [
    "InputError",
    "LRP_RULES",
    "MAX_PIXELS",
    "METHODS",
    "ExplainResult",
    "attention_rollout",
    "cam",
    "cam_lowres",
    "curve_auc",
    "default_gradcam_layer",
    "deletion_curves",
    "display_range",
    "explain_array",
    "explain_image",
    "faithfulness",
    "gradcam",
    "heat_rgb",
    "lrp",
    "lrp_relevance",
    "method_fn",
    "methods_for",
    "rollout",
    "target_indices",
    "write_explanation",
]
