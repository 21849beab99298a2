"""Training batches for the detector: random crops centred on annotated cells (rarer classes drawn
more often), with dihedral, stain and optional scale jitter, blur and JPEG artefacts, as normalised
tensors.

Coordinates are pixels at the model's mpp; CRCHisto, the data set the shipped detector learnt, is at
``CRCHISTO_MPP`` µm per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CRCHISTO_MPP = 0.55


@dataclass
class CropAugment:
    """What each training crop (float (H, W, 3) in [0, 1]) may go through after its flip / rotation, in
    this order (each drawn with probability ``p`` unless noted):

    ``stain``: HED optical-density jitter (``augment.hed_jitter``: each stain's density scaled by
    1 ± ``stain``, shifted by ± 0.05; probability 0.8), then brightness / contrast (probability 0.8);
    ``blur``: Gaussian blur of sigma uniform in [0, ``blur``] pixels at the model's mpp (0: off);
    ``jpeg``: JPEG re-compression at a quality uniform in [``jpeg``, 90] (0: off).
    The defaults (0.05, off, off) are the shipped recipe's."""

    stain: float = 0.05
    blur: float = 0.0
    jpeg: int = 0
    p: float = 0.5

    def __call__(self, im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from ..augment import brightness_contrast, gaussian_blur, hed_jitter, jpeg_artefacts

        if rng.random() < 0.8:
            im = hed_jitter(im, rng, sigma=self.stain)
        if rng.random() < 0.8:
            im = brightness_contrast(im, rng)
        if self.blur > 0 and rng.random() < self.p:
            im = gaussian_blur(im, rng, max_sigma=self.blur, min_sigma=0.0)
        if self.jpeg > 0 and rng.random() < self.p:
            im = jpeg_artefacts(im, rng, min_quality=self.jpeg)
        return im


def _crop_batches(
    samples,
    targets,
    rng,
    n_crops: int,
    crop: int,
    batch_size: int,
    class_freq: np.ndarray,
    scale_jitter: float = 0.0,
    augment: CropAugment | None = None,
):
    """Random crops centred on annotated cells, rarer classes drawn more often (cells without a class
    as often as the commonest class); dihedral, then ``augment`` (default ``CropAugment()``).

    ``scale_jitter`` j > 0: each crop is read at a random zoom s, log-uniform in [1 - j, 1 + j] (a
    ``crop / s`` px window resampled to ``crop`` px: image and Gaussian targets bilinear, class map nearest),
    so nuclei appear up to j larger or smaller than at the model's mpp.
    """
    from skimage.transform import resize

    from ..augment import random_dihedral

    augment = augment or CropAugment()

    centres = []
    weights = []
    inv = 1.0 / np.maximum(class_freq, 1)
    for si, s in enumerate(samples):
        for p, lab in zip(s.yx, s.labels):
            centres.append((si, p[0], p[1]))
            weights.append(inv[lab] if lab >= 0 else inv.min())
    weights = np.asarray(weights) / np.sum(weights)
    picks = rng.choice(len(centres), size=n_crops, p=weights)
    batch = []
    for k in picks:
        si, cy, cx = centres[k]
        img, (obj, cls) = samples[si].image, targets[si]
        h, w = img.shape[:2]
        out_cs = min(crop, h, w)
        zoom = float(np.exp(rng.uniform(np.log(1 - scale_jitter), np.log(1 + scale_jitter)))) if scale_jitter else 1.0
        cs = min(max(8, int(round(out_cs / zoom))), h, w)
        y0 = int(np.clip(cy - cs / 2 + rng.integers(-cs // 4, cs // 4 + 1), 0, h - cs))
        x0 = int(np.clip(cx - cs / 2 + rng.integers(-cs // 4, cs // 4 + 1), 0, w - cs))
        sl = (slice(y0, y0 + cs), slice(x0, x0 + cs))
        im, ob, cl = img[sl].astype(np.float32) / 255.0, obj[sl], cls[sl]
        if cs != out_cs:
            im = resize(im, (out_cs, out_cs), order=1, anti_aliasing=cs > out_cs).astype(np.float32)
            ob = resize(ob, (out_cs, out_cs), order=1, anti_aliasing=False).astype(ob.dtype)
            cl = resize(cl, (out_cs, out_cs), order=0, anti_aliasing=False, preserve_range=True).astype(cl.dtype)
        im, ob, cl = random_dihedral([im, ob, cl], rng)
        im = augment(im, rng)
        batch.append((im, ob, cl))
        if len(batch) == batch_size:
            yield batch
            batch = []


def _to_tensors(batch, card, device):
    import torch

    mean = np.asarray(card.normalisation["mean"], np.float32)
    std = np.asarray(card.normalisation["std"], np.float32)
    x = torch.from_numpy(np.stack([(b[0] - mean) / std for b in batch]).transpose(0, 3, 1, 2).copy())
    obj = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
    cls = torch.from_numpy(np.stack([b[2] for b in batch]))
    return (x.to(device).contiguous(memory_format=torch.channels_last), obj.to(device), cls.to(device))
