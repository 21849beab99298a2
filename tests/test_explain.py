"""Heat maps: LRP conservation per rule, CAM = GAP-weighted features, class-specific maps on real GlaS
images, tiled explanation, attention rollout on a real ViT forward, faithfulness curves, CLI explain."""

import json

import numpy as np
import pytest
import torch

from napari_pathreview.backend import explain as ex
from napari_pathreview.backend.classification import normalise, pad_for_model, to_model_scale
from napari_pathreview.backend.models.classifier import ClassifierConfig, build_classifier
from napari_pathreview.backend.pipelines import get_classifier
from napari_pathreview.backend.slides import open_slide

RULES = ("epsilon", "gamma", "a1b0", "a2b1")


@pytest.fixture(scope="module")
def glas_images(shared_data):
    d = shared_data / "glas" / "images"
    return {"benign": d / "testA_2.jpg", "malignant": d / "testA_22.jpg"}


@pytest.fixture(scope="module")
def shipped():
    return get_classifier("classifier-glas", "cpu")


@pytest.fixture(scope="module")
def real_input(shipped, glas_images):
    model, card = shipped
    img = to_model_scale(open_slide(glas_images["malignant"]), card)[64:192, 112:272]  # 128 x 160 model px
    return normalise(pad_for_model(img, card)[None], card), img


def _bn_model(se: bool):
    """A classifier with BatchNorm whose running statistics and affine parameters are far from identity."""
    torch.manual_seed(1)
    m = build_classifier(ClassifierConfig(widths=(8, 16, 16), depth=1, se=se))
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(4, 3, 48, 48) * 2 + 0.3)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(-1.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return m.eval()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("se", [False, True])
def test_lrp_conserves_relevance_on_a_batchnorm_model(rule, se):
    model = _bn_model(se)
    x = torch.randn(1, 3, 48, 64)
    for target in (0, 1):
        r, logits = ex.lrp_relevance(model, x, target, rule, eps=1e-6)
        assert r.shape == x.shape[1:]
        assert float(r.sum()) == pytest.approx(float(logits[target]), rel=1e-3, abs=1e-4)


@pytest.fixture(scope="module")
def shipped_f64(shipped, real_input):
    """The shipped model and input in float64: LRP-0-like rules cancel large +/- relevances, and
    float32 rounding would hide whether the rule itself conserves."""
    import copy

    return copy.deepcopy(shipped[0]).double(), real_input[0].double()


@pytest.mark.parametrize("rule", RULES)
def test_lrp_conserves_relevance_on_the_shipped_model_and_a_real_image(shipped_f64, rule):
    model, x = shipped_f64
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) and not model.training
    eps = 1e-9  # epsilon -> 0: the epsilon rule conserves only in this limit (a larger eps absorbs)
    r, logits = ex.lrp_relevance(model, x, 1, rule, eps=eps)
    assert float(r.sum()) == pytest.approx(float(logits[1]), rel=1e-4)
    r0, _ = ex.lrp_relevance(model, x, 0, rule, eps=eps)
    assert float(r0.sum()) == pytest.approx(float(logits[0]), rel=1e-4)


def test_lrp_rules_differ_and_epsilon_absorbs(shipped, real_input):
    model, _ = shipped
    x, _ = real_input
    maps = {rule: ex.lrp_relevance(model, x, 1, rule)[0].sum(0) for rule in RULES}
    for a in RULES:
        for b in RULES:
            if a < b:
                assert not torch.allclose(maps[a], maps[b]), (a, b)
    noisy = ex.lrp_relevance(model, x, 1, "epsilon", eps=1e-6)[0]
    assert maps["epsilon"].abs().sum() < noisy.abs().sum()  # eps damps the +/- cancellation noise


def test_cam_equals_the_gap_weighted_feature_sum(shipped, real_input):
    model, _ = shipped
    x, _ = real_input
    maps, logits = ex.cam_lowres(model, x, [0, 1])
    with torch.no_grad():
        f = model.forward_features(x)[0]  # (C, h, w)
    w, b = model.head.weight, model.head.bias
    manual = torch.stack([(w[k][:, None, None] * f).sum(0) for k in (0, 1)])
    assert torch.allclose(maps, manual, atol=1e-5)
    # GAP commutes with the linear head: the mean of the CAM plus the bias is the logit
    assert torch.allclose(maps.mean((1, 2)) + b, logits, atol=1e-4)
    up, _ = ex.cam(model, x, [1])
    assert up.shape[-2:] == x.shape[-2:]


@pytest.mark.parametrize("method", ["cam", "gradcam", "lrp-epsilon"])
def test_heat_map_on_a_real_glas_image_differs_between_classes(shipped, glas_images, method):
    model, card = shipped
    res = ex.explain_image(open_slide(glas_images["malignant"]), model, card, method)
    assert res.targets == ["benign", "malignant"] and res.maps.shape[1:] == (522, 775)
    a, b = res.maps[0].ravel(), res.maps[1].ravel()
    assert np.isfinite(res.maps).all() and a.std() > 0 and b.std() > 0
    assert np.corrcoef(a, b)[0, 1] < 0.5, "the two classes' maps should not be the same picture"


def test_gradcam_on_any_conv_layer(shipped, real_input):
    model, _ = shipped
    x, _ = real_input
    default, _ = ex.gradcam(model, x, [1])
    early, _ = ex.gradcam(model, x, [1], layer="features.3")
    assert isinstance(dict(model.named_modules())["features.3"], torch.nn.Conv2d)
    assert early.shape == default.shape and not torch.allclose(early, default)
    with pytest.raises(ex.InputError, match="no layer"):
        ex.gradcam(model, x, [1], layer="features.999")


def test_large_image_is_explained_tile_by_tile_and_blended(shipped, glas_images):
    model, card = shipped
    rgb = np.asarray(open_slide(glas_images["malignant"]).levels[0])
    big = np.tile(rgb, (2, 2, 1))  # 1044 x 1550 px -> 522 x 775 model px > one 512 tile
    calls = []
    res = ex.explain_image(
        big, model, card, "cam", classes=["malignant"], mpp=0.62, progress=lambda i, n, m: calls.append((i, n))
    )
    assert calls[-1][0] == calls[-1][1] > 1  # several tiles
    assert res.maps.shape == (1, 1044, 1550) and np.isfinite(res.maps).all()
    assert res.downsample == 1.0 and res.mpp == pytest.approx(0.62)
    assert 0.99 < res.probs.sum() < 1.01


def test_attention_rollout_on_a_real_vit_forward():
    from napari_pathreview.backend.models.vit import ViTConfig, build_vit
    from napari_pathreview.backend.weights import ModelCard

    torch.manual_seed(0)
    cfg = ViTConfig(img_size=64, dim=32, depth=2, heads=2)
    vit = build_vit(cfg).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, attns = vit(x, return_attention=True)
    assert logits.shape == (2, 2) and len(attns) == 2 and attns[0].shape == (2, 2, 17, 17)
    roll = ex.attention_rollout(attns)
    assert roll.shape == (2, 16) and (roll > 0).all() and (roll.sum(1) < 1).all()
    # one layer: rollout = row of 0.5 * (mean attention + identity), normalised
    one = ex.attention_rollout(attns[:1])
    a = attns[0].mean(1)
    expect = (0.5 * (a + torch.eye(17)))[:, 0, 1:]
    assert torch.allclose(one, expect, atol=1e-6)
    card = ModelCard(name="vit-test", task="vit", config=cfg.to_dict(), classes=list(cfg.classes), mpp=1.24)
    img = np.random.default_rng(0).random((100, 150, 3)).astype(np.float32)
    maps, probs = ex.explain_array(vit, card, img, "rollout", [0, 1])
    assert maps.shape == (2, 100, 150) and np.allclose(maps[0], maps[1]) and probs.sum() == pytest.approx(1, abs=1e-5)
    with pytest.raises(ex.InputError, match="does not apply"):
        ex.method_fn("cam", card)


def test_deletion_curve_and_faithfulness_scores(shipped, real_input):
    model, card = shipped
    _, img = real_input
    heat = ex.explain_array(model, card, img, "gradcam", [1])[0][0]
    dele, ins = ex.deletion_curves(model, card, img, heat, 1, steps=4)
    assert dele.shape == ins.shape == (5,)
    assert dele[-1] == pytest.approx(ins[0], abs=1e-5) and dele[0] == pytest.approx(ins[-1], abs=1e-5)
    res = ex.faithfulness(model, card, img, 1, ["cam"], n_random=1, steps=4)
    assert set(res["cam"]) == {"deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc"}
    assert all(0 <= v <= 1 for v in res["cam"].values())


def test_cli_explain_writes_heat_maps(glas_images, tmp_path):
    import tifffile

    from napari_pathreview.cli import main

    out = tmp_path / "maps"
    rc = main(
        [
            "explain",
            str(glas_images["benign"]),
            "--model",
            "classifier-glas",
            "--method",
            "lrp-a1b0",
            "--classes",
            "malignant",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    tif = out / "testA_2.lrp-a1b0.malignant.tif"
    assert tif.is_file() and (out / "testA_2.lrp-a1b0.malignant.png").is_file()
    assert tifffile.imread(tif).shape == open_slide(glas_images["benign"]).shape  # the input's pixel grid
    meta = json.loads((out / "testA_2.lrp-a1b0.json").read_text())
    assert meta["explained"] == ["malignant"] and set(meta["probabilities"]) == {"benign", "malignant"}


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["explain", "no-such.png", "--out", "X"], "no such file"),
        (["explain", "IMG", "--method", "rollout", "--out", "X"], "does not apply"),
        (["explain", "IMG", "--classes", "tumour", "--out", "X"], "unknown class"),
    ],
)
def test_cli_explain_bad_input_is_exit_2_with_one_line(glas_images, tmp_path, capsys, argv, needle):
    from napari_pathreview.cli import main

    argv = [str(glas_images["benign"]) if a == "IMG" else str(tmp_path / "o") if a == "X" else a for a in argv]
    assert main(argv + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_rollout_with_the_shipped_vit_on_a_real_image_is_tiled_and_aligned(glas_images):
    from napari_pathreview.backend.pipelines import ExplainOptions, explain

    calls = []
    res = explain(
        open_slide(glas_images["malignant"]),
        ExplainOptions(weights="vit-glas", method="rollout", device="cpu"),
        progress=lambda i, n, m: calls.append(n),
    )
    assert res.maps.shape == (2, 522, 775) and np.allclose(res.maps[0], res.maps[1])
    assert calls[-1] > 1  # 192-px ViT tiles over the 261 x 388 model-scale image
    assert (res.maps > 0).all() and res.probs.argmax() == 1  # testA_22 is malignant


def test_pyramid_is_read_at_the_model_scale_level_and_maps_come_back_at_level_0(shipped, glas_images):
    import dask.array as da

    from napari_pathreview.backend.slides import Slide

    model, card = shipped
    flat = open_slide(glas_images["malignant"], mpp=0.62)
    a = np.asarray(flat.levels[0])
    pyr = Slide(
        levels=[da.from_array(a), da.from_array(a[::2, ::2]), da.from_array(a[::4, ::4])], mpp=0.62, path="", name="pyr"
    )
    assert to_model_scale(pyr, card).shape == to_model_scale(flat, card).shape == (261, 388, 3)
    r_pyr, r_flat = (ex.explain_image(s, model, card, "cam", classes=["malignant"]) for s in (pyr, flat))
    assert r_pyr.maps.shape == r_flat.maps.shape == (1, 522, 775)
    assert abs(float(r_pyr.probs[1] - r_flat.probs[1])) < 0.05 and r_pyr.probs.argmax() == 1


def test_cli_explain_writes_heat_maps_on_the_fixture_images(mini_labels, tmp_path, capsys):
    """The same contract on the repository's fixture images (fresh clone): maps on the input's pixel grid,
    an overlay, the probabilities; bad input exit 2 with one line."""
    import tifffile

    from napari_pathreview.cli import main

    img = mini_labels / "images" / "TCGA-A7-A13E.jpg"
    out = tmp_path / "maps"
    assert (
        main(["explain", str(img), "--mpp", "1.24", "--method", "gradcam", "--out", str(out), "--device", "cpu"]) == 0
    )
    meta = json.loads((out / "TCGA-A7-A13E.gradcam.json").read_text())
    assert set(meta["probabilities"]) == {"benign", "malignant"}
    assert abs(sum(meta["probabilities"].values()) - 1) < 1e-4
    for c in meta["explained"]:
        assert tifffile.imread(out / f"TCGA-A7-A13E.gradcam.{c}.tif").shape == open_slide(img).shape
        assert (out / f"TCGA-A7-A13E.gradcam.{c}.png").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "explain",
                str(img),
                "--mpp",
                "1.24",
                "--classes",
                "tumour",
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown class" in err


def test_overlays_are_drawn_on_the_level_that_covers_the_maps_never_level_0_of_a_big_slide():
    """A map at the model grid of a big pyramid: its overlay is drawn on the smallest covering level, read
    every s-th pixel (never the 8192² level 0, whose chunks raise if computed)."""
    import dask.array as da

    from napari_pathreview.backend.explain.files import overlay_source

    def boom(block):
        raise AssertionError("level 0 was read")

    level0 = da.zeros((8192, 8192, 3), np.uint8, chunks=1024).map_blocks(boom, dtype=np.uint8)
    level1 = da.ones((2048, 2048, 3), np.uint8, chunks=512)
    level2 = da.full((512, 512, 3), 2, np.uint8, chunks=512)
    src, shape = overlay_source([level0, level1, level2], (900.4, 700))
    assert shape == (1024, 1024) and int(np.asarray(src).max()) == 1  # level 1 every 2nd pixel
    src, shape = overlay_source([level0, level1, level2], (512, 300))
    assert shape == (512, 512) and int(np.asarray(src)[0, 0, 0]) == 2
    src, shape = overlay_source([level1], (4000, 4000))  # nothing covers: level 0 as it is
    assert shape == (2048, 2048)
