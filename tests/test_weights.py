import os
import pickle

import pytest
import torch

from napari_pathreview.backend.errors import InputError
from napari_pathreview.backend.models.detector import DetectorConfig, build_detector
from napari_pathreview.backend.weights import ModelCard, choose_device, load_model, save_model


def _small_card(name="tiny"):
    cfg = DetectorConfig(widths=(8, 16), feature_dim=8)
    return build_detector(cfg), ModelCard(
        name=name, task="detector", config=cfg.to_dict(), classes=list(cfg.classes), mpp=0.5
    )


def test_safetensors_round_trip(tmp_path):
    model, card = _small_card()
    path = save_model(model, card, tmp_path / "tiny")
    assert path.name == "tiny.safetensors" and (tmp_path / "tiny.json").exists()
    assert not list(tmp_path.glob("*.partial"))
    loaded, c2 = load_model(path, "detector", "cpu")
    x = torch.rand(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x)["objectness"], loaded(x)["objectness"])
    assert c2.mpp == 0.5 and c2.classes == card.classes


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    model, card = _small_card()
    card_d = {k: v for k, v in card.__dict__.items() if k != "path"}
    torch.save(
        {"state_dict": model.state_dict(), "card": card_d, "x": _Payload(marker)},
        ckpt,
        pickle_protocol=pickle.DEFAULT_PROTOCOL,
    )
    with pytest.raises(InputError, match="refused"):
        load_model(ckpt, "detector", "cpu")
    assert not marker.exists()
    control = tmp_path / "control"  # the payload really runs code when unpickled
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()


def test_weights_only_checkpoint_loads(tmp_path):
    model, card = _small_card()
    card_d = {k: v for k, v in card.__dict__.items() if k != "path"}
    torch.save({"state_dict": model.state_dict(), "card": card_d}, tmp_path / "ok.pt")
    loaded, c = load_model(tmp_path / "ok.pt", "detector", "cpu")
    assert c.task == "detector"


def test_mismatched_weights_give_clear_error(tmp_path):
    model, card = _small_card()
    save_model(model, card, tmp_path / "w")
    card.config["widths"] = [8, 16, 32]
    (tmp_path / "w.json").write_text(card.to_json())
    with pytest.raises(InputError, match="do not match"):
        load_model(tmp_path / "w.safetensors", "detector", "cpu")
    (tmp_path / "w.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="corrupt"):
        load_model(tmp_path / "w.safetensors", "detector", "cpu")


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            choose_device("cuda")
    with pytest.raises(InputError):
        choose_device("tpu9")


def test_every_shipped_model_states_its_training_data_licence():
    """Weights inherit their training data's terms; a shipped card with no licence would hide them."""
    from napari_pathreview.backend.weights import SHIPPED_DIR, list_models

    shipped = [c for c in list_models() if os.path.dirname(c.path) == str(SHIPPED_DIR)]
    assert len(shipped) >= 10
    for card in shipped:
        assert card.licence.startswith(("research use only", "CC BY-NC-SA 4.0")), card.name
    det = next(c for c in shipped if c.name == "detector-crchisto")
    assert "CRCHisto" in det.licence


@pytest.mark.parametrize(
    "change,message",
    [
        ({"mpp": 0}, "'mpp'"),
        ({"mpp": "abc"}, "'mpp' is 'abc'"),
        ({"mpp": -0.55}, "'mpp'"),
        ({"classes": "x"}, "'classes' must be a list"),
        ({"classes": [f"c{i}" for i in range(10**4)]}, "at most 1000"),
        ({"normalisation": {"mean": [0.5] * 3, "std": [0.0] * 3}}, "'std' must be positive"),
        ({"params": {"threshold": float("nan")}}, "'threshold' is nan"),
        ({"params": {"threshold": 2}}, "probability from 0 to 1"),
        ({"params": {"tile": 0}}, "'tile' has 0"),
        ({"params": {"tile": -5}}, "'tile' has -5"),
        ({"config": {"widths": [32, 10**7]}}, "'widths' has 10000000"),
    ],
)
def test_a_card_with_impossible_values_is_refused_in_one_line(tmp_path, capsys, change, message):
    """Issue 31: card values no model was trained with are refused on load (exit 2, one line naming the card
    and the field), not reported as an internal error or used to compute nonsense."""
    import json
    import shutil

    from napari_pathreview.backend.errors import InputError
    from napari_pathreview.backend.weights import SHIPPED_DIR, ModelCard
    from napari_pathreview.cli import main

    card = json.loads((SHIPPED_DIR / "detector-crchisto.json").read_text())
    for k, v in change.items():
        card[k] = {**card[k], **v} if isinstance(v, dict) and k != "normalisation" else v
    shutil.copy(SHIPPED_DIR / "detector-crchisto.safetensors", tmp_path / "bad.safetensors")
    (tmp_path / "bad.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        ModelCard.from_file(tmp_path / "bad.json")
    img = SHIPPED_DIR.parent / "sample_data" / "monuseg_tile.png"
    rc = main(
        [
            "detect",
            str(img),
            "--out",
            str(tmp_path / "o"),
            "--mpp",
            "0.5",
            "--weights",
            str(tmp_path / "bad.safetensors"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.json: model card" in err[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
