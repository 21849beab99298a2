"""Few-shot adaptation of the detector (``train_detector`` with ``init`` on one field): nuclei without
types train it, a batch without a labelled pixel has no class term (no NaN), the recipe's defaults apply
only to a fine-tune on few images, batch-norm statistics and decoding stay ``init``'s, the distillation
anchor pulls the class head back to ``init``'s, and ``bench few-shot`` builds MoNuSeg's points itself."""

import csv

import numpy as np
import pytest

from napari_pathreview.backend.errors import InputError


def _unlabeled_field(sample, side=128):
    """A corner of a CRCHisto image with its nuclei annotated without types (label -1)."""
    keep = (sample.yx < side).all(1)
    return type(sample)(
        sample.name, "train", sample.image[:side, :side], sample.yx[keep], -np.ones(int(keep.sum()), np.int64)
    )


def test_batch_without_labelled_pixels_has_no_class_term_and_a_finite_loss():
    import torch

    from napari_pathreview.backend.detection import detector_loss
    from napari_pathreview.backend.models.detector import DetectorConfig, build_detector

    torch.manual_seed(0)
    model = build_detector(DetectorConfig(classes=("a", "b"), widths=(8, 16)))
    x = torch.randn(2, 3, 32, 32)
    obj = torch.zeros(2, 1, 32, 32)
    obj[:, 0, 16, 16] = 1.0
    cls = -torch.ones(2, 32, 32, dtype=torch.long)
    loss = detector_loss(model, (x, obj, cls), torch.zeros(2))  # all-zero class weights: CE would be NaN
    assert torch.isfinite(loss)
    loss.backward()
    assert model.class_head.weight.grad is None  # the class head got no signal at all
    cls[:, 14:18, 14:18] = 1
    assert float(detector_loss(model, (x, obj, cls), torch.ones(2)).detach()) > float(loss.detach())  # + class term


def test_few_shot_recipe_only_for_a_fine_tune_on_few_images():
    from napari_pathreview.backend.detection import DetectorTrainOptions
    from napari_pathreview.backend.detection.few_shot import FEW_SHOT_IMAGES, FewShotRecipe
    from napari_pathreview.backend.detection.train import _recipe

    r = FewShotRecipe()
    one = _recipe(DetectorTrainOptions(init="detector-crchisto"), None, 1)
    assert one.few_shot and one.freeze_bn and one.distill == r.distill and one.lr == r.lr
    assert one.epochs == r.epochs and one.crops_per_image * 1 // one.batch_size == r.steps_per_epoch
    mine = _recipe(DetectorTrainOptions(init="detector-crchisto", epochs=2, lr=1e-5, distill=0.0), None, 1)
    assert (mine.epochs, mine.lr, mine.distill) == (2, 1e-5, 0.0)  # what is given is kept
    for o, n in ((DetectorTrainOptions(), 1), (DetectorTrainOptions(init="detector-crchisto"), FEW_SHOT_IMAGES + 1)):
        full = _recipe(o, None, n)  # from scratch, or a fine-tune on many images: the shipped recipe
        assert not full.few_shot and not full.freeze_bn and full.distill == 0.0
        assert (full.epochs, full.crops_per_image, full.lr) == (30, 4, None)


def test_distillation_anchor_is_zero_at_init_and_grows_as_the_class_head_moves():
    import torch

    from napari_pathreview.backend.detection.few_shot import ClassAnchor
    from napari_pathreview.backend.models.detector import DetectorConfig, build_detector

    torch.manual_seed(0)
    model = build_detector(DetectorConfig(classes=("a", "b", "c"), widths=(8, 16))).eval().requires_grad_(False)
    anchor = ClassAnchor(model, 1.0)
    x, obj = torch.randn(1, 3, 32, 32), torch.rand(1, 1, 32, 32)
    assert float(anchor.loss(x, model(x)["class_logits"], obj)) == pytest.approx(0.0, abs=1e-6)
    logits = model(x)["class_logits"] + torch.tensor([2.0, 0.0, -2.0])[None, :, None, None]
    assert float(anchor.loss(x, logits, obj)) > 0.1
    assert float(anchor.loss(x, logits, torch.zeros_like(obj))) == 0.0  # only pixels at nuclei count


def test_unlabeled_folder_fine_tunes_keeping_init_classes_statistics_and_decoding(val_sample, tmp_path):
    from skimage.io import imsave

    from napari_pathreview.backend.detection import DetectorTrainOptions, train_detector
    from napari_pathreview.backend.weights import load_model

    sample, _ = val_sample
    field = _unlabeled_field(sample)
    (tmp_path / "d" / "images").mkdir(parents=True)
    imsave(tmp_path / "d" / "images" / "field.png", field.image, check_contrast=False)
    with open(tmp_path / "d" / "points.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "split", "x", "y", "label"])
        w.writerows(["field", "train", x, y, "unlabeled"] for y, x in field.yx)
    base_model, base = load_model("detector-crchisto", "detector", "cpu")
    opts = DetectorTrainOptions(init="detector-crchisto", seed=0, device="cpu", epochs=1, crops_per_image=8, crop=64)
    model, card = train_detector(tmp_path / "d", tmp_path / "ft", opts)
    assert card.classes == base.classes and card.training["few_shot"] and card.training["freeze_bn"]
    assert np.isfinite(card.training["history"][0]["loss"])
    for k in ("threshold", "min_distance_um", "smooth_um"):
        assert card.params[k] == base.params[k]
    new, old = model.state_dict(), base_model.state_dict()
    stats = [k for k in old if k.endswith(("running_mean", "running_var"))]
    assert stats and all(np.allclose(new[k].cpu(), old[k].float().cpu()) for k in stats)
    moved = [k for k in old if k.endswith("weight") and not np.allclose(new[k].cpu(), old[k].float().cpu())]
    assert moved  # the weights did learn


def _mini_monuseg(root, counts):
    from skimage.io import imsave

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = [["image", "split", "mask"]]
    for i, n in enumerate(counts):
        m = np.zeros((44, 44), np.uint16)
        for k in range(n):  # 3x3 nuclei centred at (4 + 8 * (k // 5), 4 + 8 * (k % 5))
            cy, cx = 4 + 8 * (k // 5), 4 + 8 * (k % 5)
            m[cy - 1 : cy + 2, cx - 1 : cx + 2] = k + 1
        imsave(root / "masks" / f"img{i}.png", m, check_contrast=False)
        imsave(root / "images" / f"img{i}.png", np.full((44, 44, 3), 200, np.uint8), check_contrast=False)
        rows.append([f"img{i}", "train", "instance"])
    with open(root / "splits.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def test_bench_builds_centroid_points_and_picks_the_median_field(tmp_path):
    from napari_pathreview.bench.few_shot import field_sample, monuseg_points

    _mini_monuseg(tmp_path, [3, 7, 5])
    cents, field = monuseg_points(tmp_path)
    assert field == "img2" and sorted(len(c) for c in cents.values()) == [3, 5, 7]
    assert np.allclose(cents["img0"], [[4, 4], [4, 12], [4, 20]])
    s = field_sample(tmp_path, field, cents[field], 0.5)  # 0.25 -> 0.5 µm/px: half size
    assert s.image.shape == (22, 22, 3) and (s.labels == -1).all()
    assert np.allclose(s.yx[0], [(4 + 0.5) / 2 - 0.5] * 2)


def test_bench_refuses_without_the_data(tmp_path, monkeypatch):
    from napari_pathreview.bench import run_bench

    monkeypatch.setenv("PATHREVIEW_DATA", str(tmp_path))
    with pytest.raises(InputError, match="bench few-shot needs MoNuSeg"):
        run_bench("few-shot")
