"""Nucleus segmentation on real MoNuSeg data: seams, streaming to OME-Zarr, cancel, augmentation, CLI."""

import csv
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from napari_pathreview.backend.errors import Cancelled, InputError
from napari_pathreview.backend.seg_metrics import aji, dice
from napari_pathreview.backend.segmentation import (
    INCOMPLETE_MARKER,
    MONUSEG_MPP,
    SegmentSettings,
    ZarrTarget,
    distance_target,
    label_instances,
    load_masks_dataset,
    read_table_csv,
    segment,
    segment_to_zarr,
)
from napari_pathreview.backend.slides import open_slide
from napari_pathreview.backend.weights import load_model

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def monuseg(shared_data):
    return shared_data / "monuseg"


@pytest.fixture(scope="module")
def shipped():
    return load_model(None, "segmenter", "cpu")


@pytest.fixture(scope="module")
def sample(monuseg, shipped):
    """The first held-out instance-mask image listed in the shipped card (never trained on)."""
    _, card = shipped
    samples = load_masks_dataset(monuseg, names=card.training["heldout_images"])
    return next(s for s in samples if s.instances)


@pytest.fixture(scope="module")
def whole(sample, shipped):
    model, card = shipped
    return segment(sample.image, model, card, mpp=MONUSEG_MPP, options=SegmentSettings(tile=512, overlap=0))


def test_shipped_model_segments_held_out_nuclei(sample, whole):
    assert whole.labels.shape == sample.labels.shape and whole.mpp == MONUSEG_MPP
    # measured on TCGA-CH-5767 with the shipped default (segmenter-monuseg-wide stage 5, stain-normalised,
    # 2026-12-03): Dice 0.784, AJI 0.558; floors about 0.05 under
    assert dice(whole.labels > 0, sample.labels > 0) >= 0.74
    assert aji(whole.labels, sample.labels) >= 0.51
    n_gt = len(np.unique(sample.labels)) - 1
    assert 0.5 * n_gt <= len(whole) <= 1.5 * n_gt
    t = whole.table
    assert np.array_equal(t["label"], np.arange(1, len(whole) + 1))
    assert np.array_equal(t["area_px"], np.bincount(whole.labels.ravel())[1:])
    assert np.allclose(t["area_um2"], t["area_px"] * MONUSEG_MPP**2)
    grey = sample.image.mean(-1)
    k = int(np.argmax(t["area_px"]))
    assert np.isclose(t["mean_intensity"][k], grey[whole.labels == k + 1].mean(), atol=0.05)


def test_light_model_is_shipped_beside_the_default_and_segments_held_out_nuclei(sample, shipped):
    """The default is ``segmenter-monuseg-wide`` (2x-wide, float16 storage loaded as float32), the model its
    card's tune rule picked; the 1x-wide ``segmenter-monuseg`` is listed after it. Measured on TCGA-CH-5767
    (held out) with the light model: Dice 0.777, AJI 0.522; 320-px tiles vs one tile: Dice 0.992."""
    from napari_pathreview.backend.weights import default_model, list_models

    default, card = shipped
    assert default_model("segmenter") == "segmenter-monuseg-wide" == card.name
    assert tuple(card.config["widths"]) == (32, 64, 128, 256)
    assert all(p.dtype == torch.float32 for p in default.parameters())
    assert [c.name for c in list_models("segmenter")][:2] == ["segmenter-monuseg-wide", "segmenter-monuseg"]
    model, light = load_model("segmenter-monuseg", "segmenter", "cpu")
    assert tuple(light.config["widths"]) == (16, 32, 64, 128)
    assert sample.name in light.training["heldout_images"]
    res = segment(sample.image, model, light, mpp=MONUSEG_MPP)
    assert res.labels.shape == sample.labels.shape
    assert dice(res.labels > 0, sample.labels > 0) >= 0.73
    assert aji(res.labels, sample.labels) >= 0.47
    tiled = segment(sample.image, model, light, mpp=MONUSEG_MPP, options=SegmentSettings(tile=320, overlap=96))
    assert dice(tiled.labels > 0, res.labels > 0) >= 0.99


def test_tiled_inference_has_no_seams(sample, shipped, whole):
    """Overlapping 320-px tiles (2 x 2 over the ~510 model-px image, seams through its centre; the default
    tile is 512) vs one tile covering the whole image. Measured with the default model (its stain factor
    for this image, 1.68, computed once for the image and applied to every tile): Dice 0.993, AJI 0.950
    (the 1x-wide model: 0.992, 0.955; with 256-px tiles 0.988 — too little context per tile — and
    most of its disagreement lies along the image's own right and bottom borders, not on the seams)."""
    model, card = shipped
    tiled = segment(sample.image, model, card, mpp=MONUSEG_MPP, options=SegmentSettings(tile=320, overlap=96))
    assert dice(tiled.labels > 0, whole.labels > 0) >= 0.99
    # instances: marker seeds near the distance threshold flip with tiny probability changes
    assert aji(tiled.labels, whole.labels) >= 0.9


@pytest.mark.slow
def test_compiled_segmenter_gives_the_eager_result(sample, shipped, whole):
    """``compile=True`` (torch.compile, frozen weights) on the CPU: same maps to float rounding, same labels."""
    model, card = shipped
    comp = segment(
        sample.image, model, card, mpp=MONUSEG_MPP, options=SegmentSettings(tile=512, overlap=0, compile=True)
    )
    assert np.abs(comp.prob - whole.prob).max() < 1e-4
    assert np.abs(comp.distance - whole.distance).max() < 1e-4
    assert dice(comp.labels > 0, whole.labels > 0) > 0.999 and abs(len(comp) - len(whole)) <= 1


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(sample, shipped, whole, monkeypatch):
    def broken_compile(model, **kw):
        def run(*a, **k):
            raise RuntimeError("no C compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model, card = shipped
    with pytest.warns(RuntimeWarning, match="no C compiler found"):
        res = segment(
            sample.image, model, card, mpp=MONUSEG_MPP, options=SegmentSettings(tile=512, overlap=0, compile=True)
        )
    assert np.array_equal(res.labels, whole.labels) and np.array_equal(res.prob, whole.prob)


@pytest.mark.slow
def test_segment_to_zarr_equals_in_memory_segment(sample, shipped, tmp_path):
    model, card = shipped
    slide = open_slide(_png(sample, tmp_path), mpp=MONUSEG_MPP)
    opts = SegmentSettings(tile=256, overlap=32)
    mem = segment(slide, model, card, options=opts)
    out = segment_to_zarr(slide, tmp_path / "seg.zarr", model, card, options=opts)
    store = open_slide(out)
    assert store.is_labels and store.mpp == pytest.approx(MONUSEG_MPP) and len(store.levels) >= 2
    assert np.array_equal(np.asarray(store.levels[0]), mem.labels)
    table = read_table_csv(out / "instances.csv")
    assert np.array_equal(table["label"], mem.table["label"])
    assert np.allclose(table["centroid_y"], mem.table["centroid_y"], atol=1e-3)
    # bands of 300 rows with 40 µm of context: same foreground, same instances but at band cuts
    out2 = segment_to_zarr(slide, ZarrTarget(tmp_path / "banded.zarr", band=300), model, card, options=opts)
    banded = np.asarray(open_slide(out2).levels[0])
    assert np.array_equal(banded > 0, mem.labels > 0)
    assert aji(banded, mem.labels) >= 0.97
    # and in 3 x 4 blocks (strips of 334 columns, bands of 300 rows): the band kept in memory is a strip
    # wide; same foreground, each instance labelled once, centroids in the table where the labels are
    out3 = segment_to_zarr(slide, ZarrTarget(tmp_path / "blocks.zarr", band=300, strip=334), model, card, options=opts)
    blocks = np.asarray(open_slide(out3).levels[0])
    assert np.array_equal(blocks > 0, mem.labels > 0)
    assert aji(blocks, mem.labels) >= 0.95
    t3 = read_table_csv(out3 / "instances.csv")
    assert np.array_equal(np.sort(t3["label"]), np.unique(blocks)[1:])
    k = len(t3["label"]) // 2
    yy, xx = np.nonzero(blocks == t3["label"][k])
    assert abs(yy.mean() - t3["centroid_y"][k]) < 1e-2 and abs(xx.mean() - t3["centroid_x"][k]) < 1e-2
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def _png(sample, tmp_path):
    from skimage.io import imsave

    p = tmp_path / f"{sample.name}.png"
    imsave(p, sample.image, check_contrast=False)
    return p


def test_cancelled_segment_to_zarr_leaves_no_complete_looking_store(sample, shipped, tmp_path):
    model, card = shipped
    cancel = threading.Event()
    seen = []

    def progress(i, n, msg):
        seen.append((i, n))
        if i == 2:
            cancel.set()

    out = tmp_path / "seg.zarr"
    with pytest.raises(Cancelled):
        segment_to_zarr(
            sample.image,
            out,
            model,
            card,
            mpp=MONUSEG_MPP,
            options=SegmentSettings(tile=128, overlap=16),
            progress=progress,
            cancel=cancel,
        )
    assert seen[-1][0] == 2 < seen[-1][1]
    assert not out.exists()
    left = list(tmp_path.iterdir())
    assert all((p / INCOMPLETE_MARKER).exists() for p in left), left  # nothing, or marked incomplete
    with pytest.raises(InputError):
        open_slide(out)


def test_watershed_splits_touching_nuclei_given_true_maps(sample):
    gt = sample.labels
    lab = label_instances((gt > 0).astype(np.float32), distance_target(gt), 0.5, 0.5)
    assert dice(lab > 0, gt > 0) == 1.0
    merged = label_instances((gt > 0).astype(np.float32), np.zeros(gt.shape, np.float32), 0.5, 0.5)
    assert aji(lab, gt) >= 0.85 > aji(merged, gt)  # the distance map is what splits touching nuclei


def test_laplacian_blend_is_a_valid_image_between_its_two_inputs(monuseg):
    from skimage.io import imread

    from napari_pathreview.backend.augment import laplacian_blend, random_blend_mask

    names = [r["image"] for r in csv.DictReader(open(monuseg / "splits.csv"))][:2]
    a, b = (imread(monuseg / "images" / f"{n}.png")[:256, :256, :3].astype(np.float32) / 255 for n in names)
    m = random_blend_mask(256, 256, np.random.default_rng(3))
    out = laplacian_blend(a, b, m, levels=4)
    assert out.shape == a.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert (out >= np.minimum(a, b) - 1e-6).all() and (out <= np.maximum(a, b) + 1e-6).all()
    from scipy.ndimage import distance_transform_edt

    far_a = distance_transform_edt(m) > 24
    far_b = distance_transform_edt(1 - m) > 24
    assert np.abs(out - a)[far_a].mean() < 0.02 and np.abs(out - b)[far_b].mean() < 0.02
    seam = ~far_a & ~far_b
    assert np.abs(out - a)[seam].mean() > 0.01 and np.abs(out - b)[seam].mean() > 0.01  # a smooth mix


def test_model_variants_forward_shapes():
    from napari_pathreview.backend.models.segmenter import SegmenterConfig, build_segmenter

    x = torch.rand(2, 3, 64, 64)
    for cfg in (dict(decoder="fpn"), dict(aspp=False), dict(classes=["a", "b", "c"], decoder="fpn")):
        m = build_segmenter(cfg).eval()
        out = m(x.contiguous(memory_format=torch.channels_last))
        k = SegmenterConfig.from_dict(cfg).out_channels
        assert out["logits"].shape == (2, k, 64, 64) and out["distance"].shape == (2, 1, 64, 64)


def _cli(*args):
    p = subprocess.run(
        [sys.executable, "-m", "napari_pathreview.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    return p.returncode, p.stdout, p.stderr


@pytest.mark.slow
def test_evaluate_segmenter_cli_json(monuseg, sample, tmp_path):
    ds = tmp_path / "ds"
    for sub in ("images", "masks"):
        (ds / sub).mkdir(parents=True)
        shutil.copy(monuseg / sub / f"{sample.name}.png", ds / sub)
    (ds / "splits.csv").write_text(f"image,split,mask\n{sample.name},validation,instance\n")
    (ds / "dataset.json").write_text('{"mpp": 0.25}')
    rc, out, err = _cli("evaluate", "segmenter", "--data", ds, "--json", "--device", "cpu")
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert {"dice", "aji", "pq", "per_image", "n_images"} <= set(res) and res["n_images"] == 1
    assert res["per_image"][0]["image"] == sample.name and 0.7 <= res["dice"] <= 1 and 0 < res["aji"] < 1
    rc, out, err = _cli("evaluate", "segmenter", "--data", ds, "--split", "test", "--json")
    assert rc == 2 and "splits present: validation" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_segment_cli_writes_labels_store_and_rejects_bad_input(tmp_path):
    from napari_pathreview._sample_data import SAMPLE_TILE

    rc, out, err = _cli(
        "segment",
        SAMPLE_TILE,
        "--out",
        tmp_path / "s.zarr",
        "--mpp",
        "0.25",
        "--tile",
        "256",
        "--overlap",
        "0.25",
        "--device",
        "cpu",
        "--compile",
    )
    assert rc == 0, err
    store = open_slide(tmp_path / "s.zarr")
    assert store.is_labels and store.shape == (512, 512) and int(np.asarray(store.levels[0]).max()) > 20
    _, card = load_model(None, "segmenter", "cpu")
    meta = json.loads((tmp_path / "s.zarr" / "pathreview.json").read_text())
    assert meta["params"]["stain_reference"] == card.params["stain_reference"] is not None
    rc, out, err = _cli(
        "segment",
        SAMPLE_TILE,
        "--out",
        tmp_path / "u.zarr",
        "--mpp",
        "0.25",
        "--tile",
        "256",
        "--overlap",
        "0.25",
        "--device",
        "cpu",
        "--no-stain-norm",
    )
    assert rc == 0, err
    assert json.loads((tmp_path / "u.zarr" / "pathreview.json").read_text())["params"]["stain_reference"] is None
    rc, out, err = _cli("segment", tmp_path / "nope.png", "--out", tmp_path / "t.zarr")
    assert rc == 2 and "nope.png" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t.zarr").exists()
    rc, out, err = _cli("segment", SAMPLE_TILE, "--out", tmp_path / "s.zarr", "--mpp", "0.25")
    assert rc == 2 and "already exists" in err


@pytest.mark.parametrize("per_grid,sides", [((1, 4, 4), {1000: 1, 500: 4, 333: 4}), ((0, 4, 0), {500: 4})])
def test_multiscale_tiles_draw_the_asked_grids(monuseg, per_grid, sides):
    from napari_pathreview.backend.segmentation import MultiScaleTiles

    s = load_masks_dataset(monuseg, "train")[0]
    ds = MultiScaleTiles([s], tile=64, per_grid=per_grid)
    cells = ds.cells(np.random.default_rng(0))
    got = {side: sum(c[3] == side for c in cells) for side in {c[3] for c in cells}}
    assert got == sides
    img, fg, dist, inst = ds.item(cells[0])
    assert img.shape == (64, 64, 3) and fg.shape == dist.shape == (64, 64) and inst == s.instances
    assert all(0 <= c[1] <= 1000 - c[3] and 0 <= c[2] <= 1000 - c[3] for c in cells)


@pytest.mark.slow
def test_training_tile_sets_the_recorded_working_scale(monuseg, tmp_path):
    """``tile`` fixes the model's scale: 256-px crops of MoNuSeg (0.25 µm/px) in a 2x2 grid are 128-px cells,
    so 96-px training tiles are at 0.25 * 128 / 96 = 0.333 µm/px; inference resamples to it and maps back;
    fine-tuning keeps it."""
    from dataclasses import replace

    from napari_pathreview.backend.segmentation import SegmenterTrainOptions, train_segmenter

    crops = [
        replace(s, image=s.image[:256, :256], labels=s.labels[:256, :256])
        for s in load_masks_dataset(monuseg, "train")[:4]
    ]
    opts = SegmenterTrainOptions(
        epochs=1, tile=96, batch_size=4, widths=(8, 16, 32, 64), tune_images=1, report_images=0
    )
    model, card = train_segmenter(crops, tmp_path / "w", opts)
    assert card.mpp == 0.333 and card.training["tile"] == 96
    assert (tmp_path / "w.safetensors").is_file()
    _, saved = load_model(tmp_path / "w.safetensors", "segmenter", "cpu")
    assert saved.mpp == 0.333
    res = segment(crops[0].image, model, card, mpp=MONUSEG_MPP)
    assert res.labels.shape == (256, 256) and res.mpp == MONUSEG_MPP
    # fine-tuned on smaller crops at its own tile, it keeps its scale (the crops alone would give 0.26)
    small = [replace(s, image=s.image[:200, :200], labels=s.labels[:200, :200]) for s in crops]
    opts = SegmenterTrainOptions(
        epochs=1, tile=96, batch_size=4, init=tmp_path / "w.safetensors", tune_images=1, report_images=0
    )
    _, tuned = train_segmenter(small, tmp_path / "w2", opts)
    assert tuned.mpp == 0.333


@pytest.mark.slow
def test_stain_normalised_training_records_its_reference_and_inference_applies_it(monuseg, tmp_path):
    """``stain_norm``: the fitted images' median hematoxylin level is recorded in the card; a fine-tune of
    such a model keeps normalising, to its base's level; inference scales each image to it (and not without it)."""
    from dataclasses import replace

    from napari_pathreview.backend.segmentation import SegmenterTrainOptions, SegmentParams, train_segmenter
    from napari_pathreview.backend.stain import hematoxylin_factor, hematoxylin_level, scale_hematoxylin

    crops = [
        replace(s, image=s.image[:256, :256], labels=s.labels[:256, :256])
        for s in load_masks_dataset(monuseg, "train")[:5]
    ]
    opts = SegmenterTrainOptions(
        epochs=1, batch_size=4, widths=(8, 16, 32, 64), tune_images=1, report_images=0, stain_norm=True
    )
    model, card = train_segmenter(crops, tmp_path / "w", opts)
    fitted = [s for s in crops if s.name not in card.training["tune_images"]]
    assert card.params["stain_reference"] == pytest.approx(np.median([hematoxylin_level(s.image) for s in fitted]))
    assert card.training["stain_norm"] is True
    _, saved = load_model(tmp_path / "w.safetensors", "segmenter", "cpu")
    assert saved.params["stain_reference"] == card.params["stain_reference"]
    # a fine-tune on other images (here: one, paler) keeps the level its base learnt
    pale = [replace(crops[0], image=scale_hematoxylin(crops[0].image, 0.5).round().astype(np.uint8))]
    opts = SegmenterTrainOptions(
        epochs=1, batch_size=4, init=tmp_path / "w.safetensors", tune_images=0, report_images=0
    )
    _, tuned = train_segmenter(pale, tmp_path / "w2", opts)
    assert tuned.params["stain_reference"] == card.params["stain_reference"] and tuned.training["stain_norm"]
    ref = card.params["stain_reference"]
    img = max((s.image for s in crops), key=lambda im: abs(np.log(hematoxylin_factor(im, ref))))
    assert abs(np.log(hematoxylin_factor(img, ref))) > 0.1
    normed = segment(img, model, card, mpp=MONUSEG_MPP)
    plain = segment(
        img, model, card, mpp=MONUSEG_MPP, params=replace(SegmentParams.from_card(card), stain_reference=None)
    )
    assert normed.params["stain_reference"] == ref and plain.params["stain_reference"] is None
    assert not np.allclose(normed.prob, plain.prob, atol=1e-3)


def test_pale_nuclei_lightens_nucleus_centres_keeps_rims_and_background(monuseg):
    """On a real MoNuSeg tile: optical density inside nuclei drops by the drawn factor at their centres,
    less at the rim, and the hue (ratio of channel densities) and every background pixel stay."""
    from scipy import ndimage

    from napari_pathreview.backend.augment import pale_nuclei

    s = load_masks_dataset(monuseg, "train")[0]
    img = s.image[:256, :256].astype(np.float32) / 255
    fg = (s.labels[:256, :256] > 0).astype(np.float32)
    out = pale_nuclei(img, fg, np.random.default_rng(0), low=0.5, high=0.5, rim_px=3.0)
    od = lambda x: -np.log(np.clip(x, 1e-6, 1.0))
    depth = ndimage.distance_transform_edt(fg > 0.5)
    centre, rim = depth >= 3, (depth > 0) & (depth < 1.5)
    assert np.array_equal(out[fg == 0], img[fg == 0])
    assert np.allclose(od(out)[centre], 0.5 * od(img)[centre], atol=1e-3)
    assert od(out)[rim].mean() > 0.6 * od(img)[rim].mean()
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
