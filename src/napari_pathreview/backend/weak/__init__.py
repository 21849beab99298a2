"""Weakly supervised cell types: tile-level labels -> CAM -> pseudo-labels -> U-Net -> a type per cell.

MISSION §4 (the protein-atlas single-cell problem) on CRCHisto H&E. Training sees only *tile labels*:
for a crop, the set of cell types present (derived from the point annotations, which are otherwise not
used). Everything runs at the models' scale, ``WeakConfig.mpp`` (0.55 µm/px, CRCHisto's native grid).

Stage 1, a multi-label CNN on ``crop`` x ``crop`` px crops (:class:`WeakCAMNet`; CAM stride 8):

- ``cam``: plain CAM, BCE on the tile labels;
- ``puzzle``: Puzzle-CAM, the crop also goes through as 2 x 2 tiles; the merged tile CAMs must match
  the full CAM (:func:`puzzle_loss`, L1) and classify the crop as well;
- ``sc``: SC-CAM, k-means on the ``cam`` model's pooled features splits each class into ``n_sub``
  sub-categories; one retraining round (initialised from ``cam``) with parent + sub-category BCE.

CAMs (:func:`cam_probs`) are local logits ``w_k . f(x) + b_k`` (their spatial mean is the crop's logit)
through a sigmoid: per-pixel presence probabilities ``(K, H, W)`` in [0, 1], averaged over TTA (flips,
scales) and over models (ensemble). Pseudo-labels (:func:`pseudo_labels`): 0 = background where every
class is below the threshold ``t``, else ``1 + argmax``; ``t`` is chosen on held-out *train* images by
the tile-level F1 of the classes present in each crop's pseudo-label map (tile labels only).

Stage 2: the segmenter's U-Net (softmax over background + K types) trained on the pseudo-label maps.
A cell's type is the class with the highest mean probability in a ``cell_radius`` px box around it.

Modules: :mod:`.config` (settings), :mod:`.crops` (tile labels, crops), :mod:`.model` (stage-1 net and
losses), :mod:`.subcategories` (SC-CAM k-means), :mod:`.maps` (CAMs, pseudo-labels, U-Net maps, cell types),
:mod:`.scores`, :mod:`.stages` (training each stage), :mod:`.train` (the recipe and its cards),
:mod:`.infer` (loading, running), :mod:`.evaluate`.
"""

from .config import ROW_KEYS, VARIANTS, WeakConfig
from .crops import crop_tensor, grid_crops, normalise, random_crops, tile_labels
from .evaluate import evaluate_weak_cells
from .infer import WeakCellsResult, cam_references, infer, load_weak_cells
from .maps import cam_probs, cell_types, pseudo_labels, seg_probs
from .model import build_weak_cam, puzzle_loss, split_tiles, stage1_loss
from .scores import class_f1, crop_presence_f1, pseudo_agreement, threshold_sweep, tile_presence_f1, type_scores
from .stages import Hooks, WeakData, split_tune, train_stage1, train_stage2
from .subcategories import kmeans, sub_categories, sub_labels
from .train import train_weak_cells

__all__ = [
    "ROW_KEYS",
    "VARIANTS",
    "Hooks",
    "WeakCellsResult",
    "WeakConfig",
    "WeakData",
    "build_weak_cam",
    "cam_probs",
    "cam_references",
    "cell_types",
    "class_f1",
    "crop_presence_f1",
    "crop_tensor",
    "evaluate_weak_cells",
    "grid_crops",
    "infer",
    "kmeans",
    "load_weak_cells",
    "normalise",
    "pseudo_agreement",
    "pseudo_labels",
    "puzzle_loss",
    "random_crops",
    "seg_probs",
    "split_tiles",
    "split_tune",
    "stage1_loss",
    "sub_categories",
    "sub_labels",
    "threshold_sweep",
    "tile_labels",
    "tile_presence_f1",
    "train_stage1",
    "train_stage2",
    "train_weak_cells",
    "type_scores",
]
