"""The task registry: a toy task registered in a test (one module: this one) appears in every entry
point — ``pathreview train --help``, ``train toy``, ``evaluate toy``, ``info`` and the Train widget — and
its weights load through ``weights.load_model`` by the card's task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from napari_pathreview.backend.tasks import EvalRun, Task, TrainRun, option, register, unregister


def build_toy(config: dict):
    """A 1 -> 1 linear model: ``y = w x + b``."""
    import torch

    return torch.nn.Linear(1, 1, bias=config.get("bias", True))


@dataclass
class ToyTrainOptions:
    statistic: str = option("mean", "the value the model predicts", choices=("mean", "median"))
    scale: float = option(1.0, "multiply the statistic by this", parse=float)


@dataclass
class ToyEvalOptions:
    tolerance: float = option(0.5, "a value within this of the prediction counts as hit", parse=float)


def _values(folder, split: str) -> np.ndarray:
    return np.loadtxt(Path(folder) / f"{split}.txt", ndmin=1)


def train_toy(run: TrainRun, o: ToyTrainOptions) -> dict:
    """Fit the bias to the ``train`` values' statistic; write OUT.safetensors + OUT.json."""
    import torch

    from napari_pathreview.backend.weights import ModelCard, save_model

    values = _values(run.data, "train")
    target = float(getattr(np, o.statistic)(values) * o.scale)
    model = build_toy({"bias": True})
    with torch.no_grad():
        model.weight.zero_()
        model.bias.fill_(target)
    card = ModelCard(name="", task="toy", config={"bias": True}, classes=["value"], mpp=None)
    card.training = {"command": run.command, "seed": run.seed, "statistic": o.statistic}
    out = save_model(model, card, run.out)
    return {"out": str(out), "target": target}


def evaluate_toy(run: EvalRun, o: ToyEvalOptions) -> dict:
    import torch

    from napari_pathreview.backend.weights import load_model

    model, card = load_model(run.weights, "toy", device="cpu")
    with torch.no_grad():
        pred = float(model(torch.zeros(1, 1))[0, 0])
    values = _values(run.data, run.split)
    return {"prediction": pred, "hit_rate": float(np.mean(np.abs(values - pred) <= o.tolerance)), "n": len(values)}


def describe_toy(res: dict) -> list[str]:
    return [f"prediction {res['prediction']:.3f}  hit rate {res['hit_rate']:.3f}  values {res['n']}"]


@pytest.fixture
def toy_task():
    task = register(
        Task(
            name="toy",
            summary="a toy task registered by a test",
            builder=f"{__name__}:build_toy",
            train=f"{__name__}:train_toy",
            train_options=ToyTrainOptions,
            evaluate=f"{__name__}:evaluate_toy",
            eval_options=ToyEvalOptions,
            describe=f"{__name__}:describe_toy",
        )
    )
    yield task
    unregister("toy")


@pytest.fixture
def toy_data(tmp_path):
    folder = tmp_path / "toy-data"
    folder.mkdir()
    np.savetxt(folder / "train.txt", [1.0, 2.0, 3.0, 10.0])
    np.savetxt(folder / "validation.txt", [2.0, 2.4, 5.0])
    (folder / "dataset.json").write_text('{"mpp": 1.0}')  # train / evaluate refuse a folder of unknown scale
    return folder


def test_the_toy_task_is_a_train_and_evaluate_sub_command(toy_task, capsys):
    from napari_pathreview.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "toy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", "toy", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--statistic {mean,median}" in out and "(default: 1.0)" in out
    assert "--amp" not in out and "--tolerance" not in out
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "toy", "--help"])
    assert e.value.code == 0 and "--tolerance" in capsys.readouterr().out


def test_train_then_evaluate_the_toy_task_from_the_cli(toy_task, toy_data, tmp_path, capsys):
    from napari_pathreview.cli import main

    out = tmp_path / "w" / "toy-model"
    argv = ["train", "toy", "--data", str(toy_data), "--out", str(out), "--statistic", "median", "--scale", "0.8"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res == {"out": str(out) + ".safetensors", "target": pytest.approx(2.0)}
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["task"] == "toy" and card["name"] == "toy-model" and card["training"]["statistic"] == "median"
    assert out.with_suffix(".safetensors").stat().st_size > 0

    weights = str(out) + ".safetensors"
    assert main(["evaluate", "toy", "--data", str(toy_data), "--weights", weights, "--tolerance", "0.5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "prediction 2.000  hit rate 0.667  values 3"
    assert json.loads(lines[-1]) == {"prediction": pytest.approx(2.0), "hit_rate": pytest.approx(2 / 3), "n": 3}


def test_the_toy_task_refuses_another_tasks_option(toy_task, toy_data, tmp_path, capsys):
    from napari_pathreview.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "toy", "--data", str(toy_data), "--out", str(tmp_path / "w"), "--amp"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "train toy" in err[0] and "--amp" in err[0]
    assert not (tmp_path / "w.json").exists()


def test_info_lists_the_registered_tasks(toy_task, capsys):
    from napari_pathreview.cli import main

    assert main(["info", "--json"]) == 0
    tasks = {t["name"]: t for t in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tasks"]}
    assert tasks["toy"] == {"name": "toy", "summary": toy_task.summary, "trainable": True, "evaluable": True}
    assert {"detector", "segmenter", "enhancer", "classifier", "vit", "weak-cells"} <= set(tasks)
    assert tasks["weak-cam"]["trainable"] is False
    assert main(["info"]) == 0
    assert any(line.split()[:2] == ["toy", "train/evaluate"] for line in capsys.readouterr().out.splitlines())


def test_the_train_widget_lists_the_toy_task_as_not_trainable_from_the_viewer(toy_task, make_napari_viewer, open_dock):
    from napari_pathreview.backend.errors import InputError

    w = open_dock(make_napari_viewer(), "train")
    names = w.task_names()
    assert names[:4] == ["detector", "segmenter", "enhancer", "classifier"] and "toy" in names
    assert not w.kind.model().item(names.index("toy")).isEnabled()
    w.kind.setCurrentText("toy")
    assert w.task == "toy" and "pathreview train toy" in w.status.text() and w.plot.metric_key == "loss"
    with pytest.raises(InputError, match="not trainable from the viewer"):
        w.job()
    w.kind.setCurrentText("detector")
    assert w.plot.metric_key == "det_f1" and w.status.text() == ""


def test_every_shipped_card_builds_through_the_registry():
    from napari_pathreview.backend.weights import build_model, list_models

    for card in list_models():
        assert build_model(card) is not None, card.name


def test_a_card_of_an_unknown_task_is_refused_in_one_line():
    from napari_pathreview.backend.errors import InputError
    from napari_pathreview.backend.weights import ModelCard, build_model

    with pytest.raises(InputError, match="unknown task 'nope'"):
        build_model(ModelCard(name="x", task="nope", config={}, classes=[], mpp=None))
