"""Pipelines: image in, plain results out. The widgets, the CLI and the tests call these same functions.

Every pipeline takes its input, one options dataclass (which model, scale, device, precision, decoding
overrides), ``progress(i, n, message)``, ``cancel`` and a ``name`` for messages; the ``*_files``
variants run it over many slides as one idempotent job each, ``*_files(inputs, out, options, batch,
progress, cancel)`` with ``batch`` a :class:`BatchOptions` (workers, scheduler, overwrite; see
``backend.batch``). ``level`` / ``region`` in the options read part of a slide (``views``).
"""

from ..batch import BatchOptions
from .detect import DetectOptions, detect, detect_files
from .enhance import EnhanceOptions, enhance, enhance_files
from .explain import ExplainOptions, explain, explain_files, explain_memory_check
from .models import CLASSIFIER_TASKS, at_precision, common_card, get_classifier, get_model, get_models
from .segment import SegmentOptions, segment, segment_file, segment_files
from .weak import WeakOptions, weak_cells

__all__ = [
    "BatchOptions",
    "CLASSIFIER_TASKS",
    "DetectOptions",
    "EnhanceOptions",
    "ExplainOptions",
    "SegmentOptions",
    "WeakOptions",
    "at_precision",
    "common_card",
    "detect",
    "detect_files",
    "enhance",
    "enhance_files",
    "explain",
    "explain_files",
    "explain_memory_check",
    "get_classifier",
    "get_model",
    "get_models",
    "segment",
    "segment_file",
    "segment_files",
    "weak_cells",
]
