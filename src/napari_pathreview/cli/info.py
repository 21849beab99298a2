"""``pathreview info``: versions, device, registered models and tasks."""

from __future__ import annotations

import json

from ..backend.tasks import REGISTRY


def tasks_info() -> list[dict]:
    """The registered tasks: name, summary and whether ``train`` / ``evaluate`` offer them."""
    return [
        {"name": t.name, "summary": t.summary, "trainable": t.train is not None, "evaluable": t.evaluate is not None}
        for t in REGISTRY.values()
    ]


def cmd_info(args) -> int:
    import platform

    import torch

    from .. import __version__
    from ..backend.weights import choose_device, list_models

    info = {
        "napari_pathreview": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(choose_device(None)),
        "cuda": torch.cuda.is_available(),
        "models": [
            {"name": c.name, "task": c.task, "classes": c.classes, "mpp": c.mpp, "path": c.path} for c in list_models()
        ],
        "tasks": tasks_info(),
    }
    if args.json:
        print(json.dumps(info))
        return 0
    for k, v in info.items():
        if k not in ("models", "tasks"):
            print(f"{k}: {v}")
    print("models:")
    for m in info["models"]:
        print(f"  {m['name']:<24} {m['task']:<10} mpp={m['mpp']} classes={','.join(m['classes'])}")
    print("tasks:")
    for t in info["tasks"]:
        can = "/".join(w for w, ok in (("train", t["trainable"]), ("evaluate", t["evaluable"])) if ok) or "model only"
        print(f"  {t['name']:<12} {can:<16} {t['summary']}")
    return 0
