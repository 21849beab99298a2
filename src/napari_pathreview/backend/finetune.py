"""Fine-tuning recipes: a shipped or user model trained further on annotations made in the viewer,
optionally merged with the ``train`` split of a dataset folder (what the Train widget runs; no Qt).

Each ``finetune_*`` takes a :class:`FineTune` (where to write, the model to start from, epochs, lr and
the run's callbacks) and the annotated region(s) as samples at the task's scale (``backend.annotations``),
and returns the new :class:`~.weights.ModelCard`. Unlike ``pathreview train`` there is no held-out tune
split: the annotated regions are all the training data there is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .registry import TrainRun

# ~10x below the learning rates of training from scratch
LEARNING_RATES = {"detector": 2e-4, "segmenter": 2e-4, "enhancer": 1e-4, "classifier": 3e-4}
SAVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}")


@dataclass
class FineTune:
    """One fine-tune: ``run.data`` the optional dataset folder ("" for none), ``run.out`` the new weights
    (OUT.safetensors + OUT.json), ``init`` the weights it starts from, ``epochs`` and learning rate ``lr``."""

    run: TrainRun
    init: Path
    epochs: int
    lr: float

    @property
    def folder(self) -> str:
        return str(self.run.data or "")


def save_path(name: str) -> Path:
    """Where weights saved as ``name`` go (the user weights folder); refuses names that are not a plain
    file name or that a shipped model has."""
    from .weights import SHIPPED_DIR, list_models, user_weights_dir

    name = (name or "").strip()
    if not SAVE_NAME.fullmatch(name):
        raise InputError(f"'save as' name {name!r}: use letters, digits, '.', '_' or '-' (no spaces or '/')")
    if any(c.name == name and Path(c.path).parent == SHIPPED_DIR for c in list_models()):
        raise InputError(f"'{name}' is a shipped model's name; choose another 'save as' name")
    return user_weights_dir() / name


def check_folder(folder: str) -> None:
    """Refuse a dataset folder that is given but absent."""
    if folder and not Path(folder).is_dir():
        raise InputError(f"dataset folder {folder} does not exist")


def detector_crop(samples) -> int:
    """Training crop side: 256 model pixels, or the smallest sample's side when one is smaller."""
    return int(min(256, *(min(s.image.shape[:2]) for s in samples)))


def finetune_detector(ft: FineTune, region, classes: list):
    """Fine-tune a detector on one annotated region (a ``PointsSample`` at the model's mpp) + the folder."""
    from .datasets import load_points_dataset
    from .detection import DetectorTrainOptions, train_detector

    samples = [region]
    if ft.folder:
        samples += load_points_dataset(ft.folder, "train", classes=classes)[0]
    crop = detector_crop(samples)
    r = ft.run
    opts = DetectorTrainOptions(
        epochs=ft.epochs, lr=ft.lr, device=r.device, init=ft.init, crop=crop, tune_images=0, classes=classes
    )
    return train_detector(
        samples, r.out, opts, progress=r.progress, cancel=r.cancel, on_epoch=r.on_epoch, command=r.command
    )[1]


def check_enhancer_classes(names, classes, layer: str, model: str) -> None:
    """Refuse annotated class names the enhancer does not know, or annotations without any class."""
    from .datasets import UNLABELED_NAME

    unknown = sorted(set(names) - set(classes) - {UNLABELED_NAME})
    if unknown:
        raise InputError(
            f"'{layer}' has classes {unknown} that enhancer '{model}' does not know "
            f"({', '.join(classes)}); fix them or start from another enhancer"
        )
    if not any(n in classes for n in names):
        raise InputError(f"'{layer}': no cell has a class; the enhancer learns cell classes")


def finetune_enhancer(ft: FineTune, region, classes: list, det_card):
    """Fine-tune an enhancer on one annotated region (a ``PointsSample`` at its detector's mpp) + the
    folder; ``det_card``: the card of the detector whose cells it corrects."""
    from .datasets import load_points_dataset
    from .enhancement import EnhancerTrainOptions, EnhancerTrainSetup, train_enhancer

    samples = [region]
    if ft.folder:
        samples += load_points_dataset(ft.folder, "train", classes=classes)[0]
    r = ft.run
    setup = EnhancerTrainSetup(
        detector=Path(det_card.path).with_suffix(".safetensors"), init=ft.init, mpp=det_card.mpp, device=r.device
    )
    opts = EnhancerTrainOptions(epochs=ft.epochs, lr=ft.lr)
    return train_enhancer(
        samples, r.out, opts, setup, progress=r.progress, cancel=r.cancel, on_epoch=r.on_epoch, command=r.command
    )[1]


def segmenter_tile(region_shape, data_mpp: float, model_mpp: float) -> int:
    """Training tile for a lone region: its 2x2 grid cells at the model's scale, 64..256 px, a multiple of 32."""
    side = min(region_shape[:2]) / 2 * data_mpp / model_mpp
    return int(np.clip(round(side / 32) * 32, 64, 256))


def finetune_segmenter(ft: FineTune, image, labels, mpp: float, offset, name: str, model_mpp: float):
    """Fine-tune a segmenter on nuclei painted over an image region (``labels``: instance ids at
    ``offset`` (row, col) in ``image`` pixels of ``mpp`` µm) + the folder (read at MoNuSeg's 0.25 µm/px)."""
    from .annotations import mask_sample
    from .segmentation import MONUSEG_MPP, SegmenterTrainOptions, load_masks_dataset, train_segmenter

    data_mpp = MONUSEG_MPP if ft.folder else mpp
    samples = [mask_sample(image, labels, mpp, data_mpp, name=name, offset=offset)]
    tile = 256
    if ft.folder:
        samples += load_masks_dataset(ft.folder, "train")
    else:
        tile = segmenter_tile(samples[0].image.shape, data_mpp, model_mpp)
    opts = SegmenterTrainOptions(
        epochs=ft.epochs, lr=ft.lr, init=ft.init, model_mpp=model_mpp, tile=tile, tune_images=0, report_images=0
    )
    r = ft.run
    return train_segmenter(
        samples,
        r.out,
        opts,
        device=r.device,
        data_mpp=data_mpp,
        progress=r.progress,
        cancel=r.cancel,
        command=r.command,
        on_epoch=r.on_epoch,
    )[1]


def check_classifier_classes(names, classes, model: str, folder: str) -> None:
    """Refuse no training images, classes the classifier does not know, or one class without a folder."""
    if not names:
        raise InputError(
            "give image layers a class in 'image classes', or pick a Shapes layer of rectangles with a 'class' feature"
        )
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise InputError(f"classes {unknown} are not classes of '{model}' ({', '.join(classes)})")
    if len(set(names)) < 2 and not folder:
        raise InputError(f"all training images are '{names[0]}': give images of at least two classes")


def finetune_classifier(ft: FineTune, samples: list):
    """Fine-tune a classifier on labelled regions (``annotations.labelled_region``) + the folder; one
    step per training image and epoch, 2..16."""
    from .classification import ClassifierTrainOptions, load_split, train_classifier

    samples = list(samples)
    if ft.folder:
        samples += load_split(ft.folder, "train")[0]
    steps = int(np.clip(len(samples), 2, 16))
    r = ft.run
    opts = ClassifierTrainOptions(epochs=ft.epochs, lr=ft.lr, init=ft.init, steps_per_epoch=steps)
    return train_classifier(
        samples,
        r.out,
        opts,
        device=r.device,
        progress=r.progress,
        cancel=r.cancel,
        command=r.command,
        on_epoch=r.on_epoch,
    )[1]
