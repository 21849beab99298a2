"""Registry of model weights: shipped safetensors + JSON cards, user weights, safe loading, device choice.

Loading never unpickles: weights are safetensors, or ``torch.load(weights_only=True)`` for user
``.pt`` / ``.pth`` checkpoints (a checkpoint that would run code is refused).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InputError
from .registry import task_for_card

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"

DEFAULT_COLORS = {
    "epithelial": "#e6194b",
    "inflammatory": "#3cb44b",
    "fibroblast": "#4363d8",
    "others": "#f58231",
    "unlabeled": "#a9a9a9",
    "benign": "#3cb44b",
    "malignant": "#e6194b",
    "nucleus": "#ffe119",
}
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


def class_colors(classes) -> dict:
    """A colour per class name (hex), stable across widgets and exports."""
    return {c: DEFAULT_COLORS.get(c, PALETTE[i % len(PALETTE)]) for i, c in enumerate(classes)}


@dataclass
class ModelCard:
    """What a weights file is: task, architecture config, classes, scale and how it was made.

    mpp: microns per pixel the model was trained at; pipelines resample input to it.
    params: task-specific inference parameters tuned on held-out data (thresholds, distances in µm).
    """

    name: str
    task: str
    config: dict
    classes: list
    mpp: float | None
    in_channels: int = 3
    normalisation: dict = field(default_factory=lambda: {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    params: dict = field(default_factory=dict)
    colors: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    licence: str = ""
    path: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("path")
        return json.dumps(d, indent=2)

    @classmethod
    def from_file(cls, path: Path) -> ModelCard:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read the model card ({e})") from None
        known = set(cls.__dataclass_fields__)
        missing = {"name", "task", "config", "classes", "mpp"} - set(d)
        if missing:
            raise InputError(f"{path}: model card lacks {sorted(missing)}")
        card = cls(**{k: v for k, v in d.items() if k in known})
        check_card_values(card, path)
        card.path = str(path)
        if not card.colors:
            card.colors = class_colors(card.classes)
        return card


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_card_values(card: ModelCard, path) -> None:
    """Refuse (InputError naming the card and the field) values no model could have been trained with:
    a pixel size that is not a plausible positive number, classes that are not a list of names, a
    normalisation with a non-positive or non-finite spread, thresholds outside [0, 1], tiles or widths
    that are not positive whole numbers (within 1..16384)."""
    from .slides import validate_mpp

    where = f"{path}: model card"
    for key, kind in (("name", str), ("task", str), ("config", dict), ("normalisation", dict), ("params", dict)):
        if not isinstance(getattr(card, key), kind):
            raise InputError(f"{where} '{key}' must be {'a text' if kind is str else 'an object'}")
    if not isinstance(card.in_channels, int) or isinstance(card.in_channels, bool) or not 1 <= card.in_channels <= 64:
        raise InputError(f"{where} 'in_channels' is {card.in_channels!r}; it must be a whole number from 1 to 64")
    if card.mpp is not None:
        if not _finite(card.mpp):
            raise InputError(f"{where} 'mpp' is {card.mpp!r}; it must be microns per pixel, e.g. 0.5")
        validate_mpp(card.mpp, f"{where} 'mpp'")
    if not isinstance(card.classes, list) or not card.classes or not all(isinstance(c, str) for c in card.classes):
        raise InputError(f"{where} 'classes' must be a list of class names, got {card.classes!r:.80}")
    if len(card.classes) > 1000:
        raise InputError(f"{where} has {len(card.classes)} classes; at most 1000")
    norm = card.normalisation or {}
    for key in ("mean", "std"):
        vals = norm.get(key, [0.5])
        if not isinstance(vals, list) or not all(_finite(v) for v in vals):
            raise InputError(f"{where} normalisation '{key}' must be a list of numbers, got {vals!r:.80}")
    if any(v <= 0 for v in norm.get("std", [1.0])):
        raise InputError(f"{where} normalisation 'std' must be positive, got {norm['std']}")
    _check_params(card.params or {}, card.config, where)


def _check_params(params: dict, config: dict, where: str) -> None:
    for key in ("threshold", "marker_threshold"):
        v = params.get(key)
        if v is not None and (not _finite(v) or not 0.0 <= v <= 1.0):
            raise InputError(f"{where} '{key}' is {v!r}; it must be a probability from 0 to 1")
    thresholds = params.get("thresholds")
    if thresholds is not None and (
        not isinstance(thresholds, list) or not all(_finite(v) and 0.0 <= v <= 1.0 for v in thresholds)
    ):
        raise InputError(f"{where} 'thresholds' must be probabilities from 0 to 1, got {thresholds!r:.80}")
    sizes = [("tile", params.get("tile"))] + [("widths", w) for w in config.get("widths") or []]
    for key, v in sizes:
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 16384):
            raise InputError(f"{where} '{key}' has {v!r}; it must be a whole number from 1 to 16384")


def user_weights_dir() -> Path:
    """Folder of the user's own weights (``$PATHREVIEW_WEIGHTS`` or ~/.napari-pathreview/weights)."""
    return Path(os.environ.get("PATHREVIEW_WEIGHTS", Path.home() / ".napari-pathreview" / "weights"))


# where a task ships more than one model: the default, the one its model card's selection rule picked
DEFAULT_NAMES = {"segmenter": "segmenter-monuseg-wide"}


def list_models(task: str | None = None) -> list[ModelCard]:
    """Cards of shipped and user weights, shipped first (each task's default before its other models)."""
    cards = []
    for folder in (SHIPPED_DIR, user_weights_dir()):
        if folder.is_dir():
            paths = sorted(folder.glob("*.json"))
            if folder == SHIPPED_DIR:
                paths.sort(key=lambda p: p.stem not in DEFAULT_NAMES.values())
            for p in paths:
                try:
                    c = ModelCard.from_file(p)
                except InputError:
                    continue
                if task is None or c.task == task:
                    cards.append(c)
    return cards


def default_model(task: str) -> str:
    """Name of the shipped default model for a task."""
    for c in list_models(task):
        if Path(c.path).parent == SHIPPED_DIR:
            return c.name
    raise InputError(f"no shipped {task} weights; train one with `pathreview train {task}`")


def resolve(ref: str | Path, task: str | None = None) -> tuple[Path, ModelCard]:
    """Find the weights file and card for a registered name or a path."""
    p = Path(ref)
    if p.suffix in (".safetensors", ".pt", ".pth", ".json") or p.exists():
        weights = p.with_suffix(".safetensors") if p.suffix == ".json" else p
        if not weights.exists():
            raise InputError(f"{weights}: weights file not found")
        card_path = weights.with_suffix(".json")
        if weights.suffix in (".pt", ".pth") and not card_path.exists():
            card = _card_from_checkpoint(weights)
        else:
            if not card_path.exists():
                raise InputError(f"{weights}: no model card {card_path.name} beside it")
            card = ModelCard.from_file(card_path)
    else:
        found = [c for c in list_models() if c.name == str(ref)]
        if not found:
            names = ", ".join(c.name for c in list_models(task)) or "none"
            raise InputError(f"unknown model '{ref}'; registered: {names}")
        card = found[-1]
        weights = Path(card.path).with_suffix(".safetensors")
    if task is not None and card.task != task:
        raise InputError(f"{weights}: is a {card.task} model, not a {task}")
    return weights, card


def _torch_load_safe(path: Path) -> dict:
    """``torch.load(weights_only=True)`` of a checkpoint; a pickle of other objects (that could run code)
    or an unreadable file is one InputError naming the file and the fix. Torch's warnings while it reads
    (e.g. "Detected pickle protocol 4" for a plain ``pickle.dump``) are held: a refusal already says what
    is wrong, and a file that loads needs no word about its pickle protocol."""
    import pickle
    import re
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\.?\s*\n|$)", str(e))
        detail = " ".join(found.group(1).split())[:120] if found else "objects other than tensors"
        raise InputError(
            f"{path}: refused to load: a pickle checkpoint that could run code when loaded ({detail}); "
            "convert it to safetensors, or save only its state_dict (tensors) with torch.save"
        ) from None
    except Exception as e:  # truncated or not a torch file
        raise InputError(f"{path}: not a readable torch checkpoint ({type(e).__name__}); save it again") from None


def _card_from_checkpoint(path: Path) -> ModelCard:
    ckpt = _torch_load_safe(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("card"), dict):
        raise InputError(f"{path}: checkpoint has no 'card' entry and no .json card beside it")
    known = set(ModelCard.__dataclass_fields__)
    card = ModelCard(**{k: v for k, v in ckpt["card"].items() if k in known})
    card.path = str(path)
    return card


def read_state_dict(weights: Path) -> dict:
    """Tensors of a weights file (safetensors or weights-only torch checkpoint)."""
    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{weights}: corrupt safetensors file ({e})") from None
    ckpt = _torch_load_safe(weights)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise InputError(f"{weights}: no state_dict in checkpoint")
    return sd


def build_model(card: ModelCard):
    """Instantiate the architecture a card describes (no weights): the builder of the registered task
    whose models carry ``card.task`` (``backend.tasks``)."""
    try:
        build = task_for_card(card.task).function("builder")
    except InputError:
        raise InputError(f"{card.path or card.name}: unknown task '{card.task}'") from None
    try:
        return build(card.config)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, RuntimeError) as e:
        raise InputError(f"{card.path or card.name}: card config does not fit the {card.task} ({e})") from None


def reference(ref: str | Path, task: str | None = None) -> str:
    """What a card should record to find a model again (the inverse of :func:`resolve`): its registered
    name when that name resolves to the same file, else the weights file's absolute path."""
    weights, card = resolve(ref, task)
    weights = weights.resolve()
    try:
        if resolve(card.name, task)[0].resolve() == weights:
            return card.name
    except InputError:
        pass
    return str(weights)


def load_model(ref: str | Path | None = None, task: str | None = None, device=None):
    """Load a model by registered name or path -> (model in eval mode on device, card)."""
    if ref is None:
        if task is None:
            raise InputError("give a model name or a task")
        ref = default_model(task)
    weights, card = resolve(ref, task)
    model = build_model(card)
    sd = read_state_dict(weights)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise InputError(
            f"{weights}: weights do not match the card's architecture ({'; '.join(lines[1:3])[:200]})"
        ) from None
    return model.to(choose_device(device)).eval(), card


def save_model(model, card: ModelCard, path: str | Path) -> Path:
    """Write ``path.safetensors`` + ``path.json`` atomically (temporary names, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    card.name = card.name or path.name
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out_w, out_j = path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")
    for target, write in ((out_w, lambda f: save_file(sd, f)), (out_j, lambda f: Path(f).write_text(card.to_json()))):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{target.name}.", suffix=".partial")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out_w


def choose_device(name: str | None = None):
    """torch.device: the one named, else CUDA, else MPS, else CPU. Unknown or absent -> InputError."""
    import torch

    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device '{name}'; use auto, cpu, cuda or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{name}' asked for but no CUDA GPU is available; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device '{name}' asked for but MPS is not available; use --device cpu")
    return dev


def available_devices() -> list[str]:
    """Device names a selector should offer: auto, cpu, and any accelerator present."""
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append("mps")
    return out
