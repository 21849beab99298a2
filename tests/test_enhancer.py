"""Cell-relationship enhancer: sparse = dense attention, scale, graphs, evaluation JSON, CLI."""

import json
import resource
import time

import numpy as np
import pytest
import torch

from napari_pathreview.backend.graphs import feature_similarity_graph, knn_graph, radius_graph
from napari_pathreview.backend.models.enhancer import EnhancerConfig, build_enhancer, build_neighbours


def _random_cells(n, seed=0, side_um=200.0, k=4, f=32):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n, f)).astype(np.float32),
        rng.dirichlet(np.ones(k), n).astype(np.float32),
        rng.random((n, 2)) * side_um,
    )


def _model(**kw):
    torch.manual_seed(0)
    m = build_enhancer(EnhancerConfig(**kw)).eval()
    for p in m.head.parameters():  # the residual head starts at zero; make the test see the layers
        torch.nn.init.normal_(p, std=0.2)
    return m


@pytest.mark.parametrize("position", ["relative", "sinusoidal", "both", "none"])
@pytest.mark.parametrize("radius", [30.0, None])
def test_sparse_equals_dense_on_small_inputs(position, radius):
    feats, probs, pos = _random_cells(150)
    m = _model(position=position, radius_um=radius, max_neighbours=1000)
    with torch.no_grad():
        a = m(feats, probs, pos, mode="sparse", chunk=37, return_attention=True, aux=True)
        b = m(feats, probs, pos, mode="dense", return_attention=True, aux=True)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a["aux_logits"], b["aux_logits"]))
    ea, eb = a["attention"], b["attention"]
    oa, ob = np.lexsort((ea.dst, ea.src)), np.lexsort((eb.dst, eb.src))
    assert (ea.src[oa] == eb.src[ob]).all() and (ea.dst[oa] == eb.dst[ob]).all()
    assert np.allclose(ea.weights[:, :, oa], eb.weights[:, :, ob], atol=1e-6)
    assert ea.weights.shape[:2] == (2, 4)
    if radius is not None:  # the distance mask: nobody attends beyond the radius
        d = np.linalg.norm(pos[ea.src] - pos[ea.dst], axis=1)
        assert d.max() <= radius + 1e-6 and len(ea.src) < 150 * 150
    # each cell's attention sums to 1 per layer and head
    sums = np.zeros((2, 4, 150))
    np.add.at(sums, (slice(None), slice(None), ea.src), ea.weights)
    assert np.allclose(sums, 1, atol=1e-5)


def test_capped_neighbour_lists_match_dense_with_the_same_mask():
    feats, probs, pos = _random_cells(200, seed=1)
    m = _model(radius_um=60.0, max_neighbours=8)
    nb = build_neighbours(pos, 60.0, 8)
    assert nb.valid.sum(1).max() == 8 and (nb.idx[:, 0] == np.arange(200)).all()
    with torch.no_grad():
        a = m(feats, probs, pos, neighbours=nb, mode="sparse")["logits"]
        b = m(feats, probs, pos, neighbours=nb, mode="dense")["logits"]
    assert torch.allclose(a, b, atol=1e-5)


def test_batched_images_do_not_see_each_other():
    feats, probs, pos = _random_cells(120, seed=2)
    m = _model()
    groups = np.r_[np.zeros(60, int), np.ones(60, int)]
    with torch.no_grad():
        together = m(feats, probs, pos, groups=groups)["logits"]
        apart = torch.cat(
            [
                m(feats[:60], probs[:60], pos[:60], mode="sparse")["logits"],
                m(feats[60:], probs[60:], pos[60:], mode="sparse")["logits"],
            ]
        )
    assert torch.allclose(together, apart, atol=1e-5)


def test_inference_path_equals_the_autograd_path_on_many_cells():
    """Inference (numpy gathers, in-place residuals, row-blocked feed-forward, spatial order, chunks of
    2048) gives the logits of the differentiable path over one unsorted chunk, with the shipped model."""
    from napari_pathreview.backend.weights import load_model

    m, _ = load_model(None, "enhancer", "cpu")
    rng = np.random.default_rng(5)
    n = 9000
    pos = rng.random((n, 2)).astype(np.float32) * np.sqrt(n * 75.6)
    feats = rng.normal(0, 1, (n, 32)).astype(np.float32)
    probs = rng.dirichlet(np.ones(4), n).astype(np.float32)
    with torch.no_grad():
        fast = m(feats, probs, pos, chunk=2048)["logits"]
    slow = m(feats, probs, pos, chunk=n)["logits"].detach()  # autograd on: index_select, no sorting
    assert torch.allclose(fast, slow, atol=1e-4), (fast - slow).abs().max()
    assert (fast.argmax(1) == slow.argmax(1)).float().mean() == 1.0


def test_untrained_enhancer_reproduces_the_base_classes():
    feats, probs, pos = _random_cells(300, seed=3)
    m = build_enhancer(EnhancerConfig()).eval()
    with torch.no_grad():
        out = m(feats, probs, pos)["logits"]
    assert (out.argmax(1).numpy() == probs.argmax(1)).all()


@pytest.mark.slow
def test_1e5_cells_run_sparse_in_bounded_memory():
    """Time and memory at 10^5 cells (CRCHisto density, ~60 neighbours each); printed, not asserted."""
    n = 100_000
    rng = np.random.default_rng(0)
    pos = rng.random((n, 2)) * np.sqrt(n / 0.004)  # ~0.004 cells / µm² as in CRCHisto
    feats, probs = rng.random((n, 32)).astype(np.float32), rng.dirichlet(np.ones(4), n).astype(np.float32)
    m = build_enhancer(EnhancerConfig()).eval()
    rss0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.time()
    nb = build_neighbours(pos, 70.0, 64)
    with torch.inference_mode():
        out = m(feats, probs, pos, neighbours=nb, chunk=8192)["logits"]
    dt, rss = time.time() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"\n1e5 cells: {dt:.1f} s, {nb.valid.sum(1).mean():.1f} neighbours/cell, "
        f"peak RSS {rss / 1e6:.2f} GB (+{(rss - rss0) / 1e6:.2f} GB)"
    )
    assert out.shape == (n, 4) and torch.isfinite(out).all()


# ---------------------------------------------------------------- graphs on hand-made cases


def _pairs(e):
    return sorted(zip(e.src.tolist(), e.dst.tolist()))


def test_knn_graph_hand_case():
    yx = np.array([[0, 0], [0, 1], [0, 3], [10, 0]], float)
    e = knn_graph(yx, 1)
    assert _pairs(e) == [(0, 1), (1, 0), (2, 1), (3, 0)]
    assert np.allclose(e.weight[np.argsort(e.src)], [1, 1, 2, 10])
    e2 = knn_graph(yx, 2)
    assert len(e2.src) == 8 and (e2.src != e2.dst).all()
    assert _pairs(knn_graph(yx, 10)) == sorted((i, j) for i in range(4) for j in range(4) if i != j)
    assert len(knn_graph(yx[:1], 3).src) == 0


def test_knn_graph_with_duplicate_positions_never_links_a_cell_to_itself():
    yx = np.array([[5, 5], [5, 5], [5, 5], [9, 9]], float)
    e = knn_graph(yx, 2)
    assert (e.src != e.dst).all() and np.bincount(e.src).tolist() == [2, 2, 2, 2]


def test_radius_graph_hand_case():
    yx = np.array([[0, 0], [0, 1], [0, 3], [10, 0]], float)
    assert _pairs(radius_graph(yx, 2.5)) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert len(radius_graph(yx, 0.5).src) == 0


def test_feature_similarity_graph_hand_case():
    yx = np.array([[0, 0], [0, 1], [0, 2], [0, 3]], float)
    f = np.array([[1, 0], [1, 0.1], [0, 1], [2, 0]], float)  # cos(0,1)=0.995, cos(0,3)=1, cos(*,2)~0
    e = feature_similarity_graph(f, 0.97, yx=yx, k=3)
    assert _pairs(e) == [(0, 1), (0, 3), (1, 3)]
    assert np.allclose(e.weight[[0, 1]], [1 / np.sqrt(1.01), 1.0], atol=1e-6)
    # candidates limited by position: with k=1, 0-3 are not neighbours in space
    assert _pairs(feature_similarity_graph(f, 0.97, yx=yx, k=1)) == [(0, 1)]
    assert _pairs(feature_similarity_graph(f, 0.97, yx=yx, radius=1.5)) == [(0, 1)]
    # no positions: candidates are the nearest in feature space
    assert _pairs(feature_similarity_graph(f, 0.97, k=2)) == [(0, 1), (0, 3), (1, 3)]
    assert _pairs(feature_similarity_graph(f, 0.999, yx=yx, k=3)) == [(0, 3)]


def test_attention_edges_top_k_and_threshold():
    feats, probs, pos = _random_cells(80, seed=4)
    m = _model(radius_um=80.0)
    with torch.no_grad():
        att = m(feats, probs, pos, return_attention=True)["attention"]
    e = att.edges(top_k=3)
    assert np.bincount(e.src, minlength=80).max() <= 3 and (e.src != e.dst).all()
    w = att.select(-1)
    for s in range(5):  # the 3 kept are the strongest of that cell's (non-self) edges
        mine = (att.src == s) & (att.dst != s)
        assert np.allclose(np.sort(e.weight[e.src == s]), np.sort(w[mine])[-3:])
    assert (att.edges(threshold=0.05, head=1).weight >= 0.05).all()
    assert set(att.edges(sources=[2, 7]).src.tolist()) <= {2, 7}


# ---------------------------------------------------------------- with the shipped models, on real data


@pytest.fixture
def one_val_image(crchisto, tmp_path):
    import csv
    import shutil

    rows = [r for r in csv.DictReader(open(crchisto / "points.csv")) if r["split"] == "validation"]
    name = sorted({r["image"] for r in rows}, key=lambda s: (len(s), s))[0]
    (tmp_path / "ds" / "images").mkdir(parents=True)
    shutil.copy(crchisto / "images" / f"{name}.png", tmp_path / "ds" / "images")
    with open(tmp_path / "ds" / "points.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if r["image"] == name)
    (tmp_path / "ds" / "dataset.json").write_text('{"mpp": 0.55}')
    return tmp_path / "ds"


def test_evaluate_enhancer_json_has_the_detector_keys(one_val_image, monkeypatch, tmp_path, capsys):
    from napari_pathreview.backend.detection import evaluate_detector
    from napari_pathreview.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["evaluate", "enhancer", "--data", str(one_val_image), "--json", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    det = evaluate_detector(one_val_image, "validation", device="cpu")
    assert set(res["base"]) == set(det) == set(res["enhanced"])
    assert res["base"]["mF1"] == pytest.approx(det["mF1"])  # base = the detector on the same points
    assert res["base"]["detection"] == res["enhanced"]["detection"]  # same points, only classes differ
    assert res["base"]["n_images"] == 1 and set(res["enhanced"]["classes"]) == set(det["classes"])


def test_enhance_command_writes_csv_and_geojson(val_sample, tmp_path, capsys):
    from skimage.io import imsave

    from napari_pathreview.cli import main

    sample, classes = val_sample
    imsave(tmp_path / "tile.png", sample.image, check_contrast=False)
    assert (
        main(
            ["enhance", str(tmp_path / "tile.png"), "--out", str(tmp_path / "out"), "--mpp", "0.55", "--device", "cpu"]
        )
        == 0
    )
    doc = json.loads((tmp_path / "out" / "tile.geojson").read_text())
    assert len(doc["features"]) > 100 and "+enhancer" in doc["properties"]["source"]
    assert {f["properties"]["classification"]["name"] for f in doc["features"]} <= set(classes)
    lines = (tmp_path / "out" / "tile.csv").read_text().splitlines()
    assert len(lines) == len(doc["features"]) + 1 and (tmp_path / "out" / "tile.base.csv").exists()


@pytest.mark.parametrize(
    "opts",
    [
        {"mode": "class", "aux_loss": True, "schedule": "step", "matching": "greedy"},
        {"mode": "bipartite", "matching": "hungarian", "schedule": "cosine-restarts"},
        {"mode": "bipartite", "matching": "greedy"},
    ],
)
def test_training_modes_run_and_select_on_held_out_images(one_val_image, monkeypatch, tmp_path, opts):
    from napari_pathreview.backend import enhancement as E
    from napari_pathreview.backend import pipelines

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    det, card = pipelines.get_model(None, "detector", "cpu")
    cache, classes = E.cache_detections(one_val_image, "validation", det, card)
    E.assign_targets(cache, 6.0, opts["matching"])
    assert (cache[0].target >= 0).sum() > 50
    opt = E.EnhancerTrainOptions(epochs=2, **opts)
    cfg = EnhancerConfig(classes=tuple(classes), position_head=opts["mode"] == "bipartite", layers=1)
    model, res, tune = E.fit_enhancer(cache, cache, classes, cfg, opt, E.EnhancerTrainSetup(mpp=0.55))
    assert len(res.history) == 2 and np.isfinite([h["loss"] for h in res.history]).all()
    assert set(tune) == {"base", "enhanced"} and 0 <= tune["enhanced"]["mF1"] <= 1


def test_an_enhancer_trained_on_a_detector_file_finds_it_from_another_folder(val_sample, tmp_path, monkeypatch):
    """`train enhancer --detector runs/mine.safetensors`: the card records the file's absolute path (a
    registered detector keeps its name), so evaluate / enhance load the right detector from any folder."""
    import shutil

    from napari_pathreview.backend import pipelines
    from napari_pathreview.backend.enhancement import EnhancerTrainOptions, EnhancerTrainSetup, train_enhancer
    from napari_pathreview.backend.weights import resolve

    weights, _ = resolve("detector-crchisto", "detector")
    (tmp_path / "runs").mkdir()
    for ext in (".safetensors", ".json"):
        shutil.copy(weights.with_suffix(ext), tmp_path / "runs" / f"mine{ext}")
    sample, _ = val_sample
    crop = type(sample)(
        sample.name,
        sample.split,
        sample.image[:256, :256],
        sample.yx[(sample.yx < 256).all(1)],
        sample.labels[(sample.yx < 256).all(1)],
    )
    monkeypatch.chdir(tmp_path)
    one_epoch = EnhancerTrainOptions(epochs=1)
    _, card = train_enhancer(
        [crop], "runs/enh", one_epoch, EnhancerTrainSetup(detector="runs/mine.safetensors", mpp=0.55, device="cpu")
    )
    assert card.params["detector"] == str(tmp_path / "runs" / "mine.safetensors")
    _, named = train_enhancer(
        [crop], "runs/enh2", one_epoch, EnhancerTrainSetup(detector="detector-crchisto", mpp=0.55, device="cpu")
    )
    assert named.params["detector"] == "detector-crchisto"
    _, by_file = train_enhancer(
        [crop], "runs/enh3", one_epoch, EnhancerTrainSetup(detector=weights, mpp=0.55, device="cpu")
    )
    assert by_file.params["detector"] == "detector-crchisto"  # the shipped file is the registered model
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = pipelines.enhance(
        crop.image,
        options=pipelines.EnhanceOptions(weights=str(tmp_path / "runs" / "enh.safetensors"), mpp=0.55, device="cpu"),
    )
    assert len(res.enhanced) > 20 and res.enhanced.classes == card.classes
