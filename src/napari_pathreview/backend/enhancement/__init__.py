"""Cell-relationship enhancement: correct detected cells' classes from their neighbours.

Modules: ``infer`` (run the enhancer on cells), ``data`` (cached detections and their matched targets),
``loss`` (batches and losses), ``scoring``, ``train``, ``evaluate``; options in ``options``.

Training (:func:`train_enhancer`), the default "class-only" mode of the original work:

1. run the detector once on every training image and cache its points, base class probabilities and
   feature vectors (on disk, keyed by the detector weights and the data);
2. match the detected points to the annotations **once** (Hungarian or greedy, within 3.3 µm = 6 px);
3. train the enhancer to predict the matched annotation's class (cross-entropy; unmatched detections and
   detections matched to class-less nuclei are ignored), with Gaussian noise on features and positions.

Second mode (``mode="bipartite"``): the model also predicts a position offset and the loss matches
predictions to annotations inside the loop (``matching.match_cost``), ``L = Σ CE + λ·‖y − ŷ‖₁`` on
coordinates normalised by the image size, as in DETR / the original work.

The detector was trained on the same training images, so its probabilities there are more confident
than on new images. Two counter-measures: (a) the enhancer is **selected** on the detector's held-out
``tune_images`` (listed in its card; the detector never trained on them), never on the validation
split; (b) during training the base probabilities are softened with a random temperature, noised, and
per cell replaced by uniform probabilities (``prob_dropout``), so the model cannot simply copy them.

Evaluation (:func:`evaluate_enhancer`) scores the base classes and the enhanced classes of the *same*
detected points against the annotations, with the detector's metric (see ``metrics.PointScores``).
"""

from .data import CachedImage, _cache_file, _split_cache, _tune_names, assign_targets, cache_detections
from .evaluate import ABLATION, evaluate_enhancer
from .infer import EnhanceResult, _positions_um, enhance_points, features_at_points
from .loss import _batch, _bipartite_loss, _class_weights, _loss, _perturb
from .options import MATCH_RADIUS_UM, EnhancerEvalOptions, EnhancerTrainOptions, EnhancerTrainSetup
from .scoring import _logits_cached, predict_cached, score_cached, search_class_bias
from .train import fit_enhancer, train_enhancer

__all__ = [
    "ABLATION",
    "MATCH_RADIUS_UM",
    "CachedImage",
    "EnhanceResult",
    "EnhancerEvalOptions",
    "EnhancerTrainOptions",
    "EnhancerTrainSetup",
    "_batch",
    "_bipartite_loss",
    "_cache_file",
    "_class_weights",
    "_logits_cached",
    "_loss",
    "_perturb",
    "_positions_um",
    "_split_cache",
    "_tune_names",
    "assign_targets",
    "cache_detections",
    "enhance_points",
    "evaluate_enhancer",
    "features_at_points",
    "fit_enhancer",
    "predict_cached",
    "score_cached",
    "search_class_bias",
    "train_enhancer",
]
