"""Augmentations for H&E tiles (numpy, channel-last uint8 or float in [0, 1])."""

from __future__ import annotations

import numpy as np

# Ruifrok & Johnston H&E-DAB stain vectors (rows: H, E, DAB), as in skimage.color.rgb2hed.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED[2] = np.cross(_RGB_FROM_HED[0], _RGB_FROM_HED[1])
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def hed_jitter(img: np.ndarray, rng: np.random.Generator, sigma: float = 0.05, bias: float = 0.05) -> np.ndarray:
    """Stain jitter in HED optical-density space: each stain scaled by 1±sigma and shifted by ±bias.

    img: (H, W, 3) float in [0, 1]. Returns the same shape, clipped to [0, 1].
    """
    od = -np.log(np.clip(img, 1e-6, 1.0))
    hed = od.reshape(-1, 3) @ _HED_FROM_RGB
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3)
    beta = rng.uniform(-bias, bias, 3)
    hed = hed * alpha + beta
    out = np.exp(-(hed @ _RGB_FROM_HED)).reshape(img.shape)
    return np.clip(out, 0, 1).astype(np.float32)


def pale_nuclei(
    img: np.ndarray, fg: np.ndarray, rng: np.random.Generator, low: float = 0.35, high: float = 0.8, rim_px: float = 3.0
) -> np.ndarray:
    """Vesicular-nucleus augmentation: the stain (optical density, every channel, so the hue stays) inside
    the foreground scaled by one factor in [low, high], fully from ``rim_px`` pixels inside each
    nucleus' border and ramping to 1 at the border, so nuclei keep a darker rim and get a pale centre;
    background pixels are unchanged.

    img: (H, W, 3) float in [0, 1]; fg: (H, W) foreground in [0, 1] (soft at resized borders).
    """
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(fg > 0.5)
    w = np.clip(depth / rim_px, 0.0, 1.0)[..., None]
    od = -np.log(np.clip(img, 1e-6, 1.0)) * (1.0 - (1.0 - rng.uniform(low, high)) * w)
    return np.where(w > 0, np.clip(np.exp(-od), 0, 1), img).astype(np.float32)


def brightness_contrast(img: np.ndarray, rng: np.random.Generator, b: float = 0.1, c: float = 0.15) -> np.ndarray:
    """Random brightness (±b) and contrast (×1±c) around the mean; img float in [0, 1]."""
    mean = img.mean()
    out = (img - mean) * rng.uniform(1 - c, 1 + c) + mean + rng.uniform(-b, b)
    return np.clip(out, 0, 1).astype(np.float32)


def random_dihedral(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply the same random flip / 90° rotation to every (H, W, ...) array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(0, 1))
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out


# ---- segmentation augmentations (HSV, blur, noise, grid distortion, Laplacian-pyramid blending) -----


def hsv_jitter(
    img: np.ndarray, rng: np.random.Generator, h: float = 0.03, s: float = 0.15, v: float = 0.1
) -> np.ndarray:
    """Random hue shift (±h of the circle), saturation (×1±s) and value (×1±v); img (H, W, 3) float [0, 1]."""
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(np.clip(img, 0, 1))
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-h, h)) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - s, 1 + s), 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(1 - v, 1 + v), 0, 1)
    return hsv2rgb(hsv).astype(np.float32)


def gaussian_blur(
    img: np.ndarray, rng: np.random.Generator, max_sigma: float = 1.2, min_sigma: float = 0.3
) -> np.ndarray:
    """Gaussian blur with sigma uniform in [min_sigma, max_sigma] pixels over Y and X; img (H, W, C) float."""
    from scipy.ndimage import gaussian_filter

    s = rng.uniform(min_sigma, max_sigma)
    return gaussian_filter(img, sigma=(s, s, 0)).astype(np.float32)


def jpeg_artefacts(img: np.ndarray, rng: np.random.Generator, min_quality: int = 30, max_quality: int = 90):
    """The image JPEG-compressed and decoded in memory (PIL, 4:2:0 chroma subsampling) at a quality
    uniform in [min_quality, max_quality]: blocking, ringing and colour bleeding like a scanner's or a
    slide server's compression. img (H, W, 3) float in [0, 1] -> the same shape, float32 in [0, 1]."""
    import io

    from PIL import Image

    q = int(rng.integers(min_quality, max_quality + 1))
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    return (np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255.0).reshape(img.shape)


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, max_std: float = 0.03) -> np.ndarray:
    """Additive Gaussian noise with std uniform in [0, max_std], clipped to [0, 1]."""
    return np.clip(img + rng.normal(0, rng.uniform(0, max_std), img.shape), 0, 1).astype(np.float32)


def grid_distortion(
    arrays: list[np.ndarray],
    rng: np.random.Generator,
    steps: int = 5,
    limit: float = 0.3,
    orders: list[int] | None = None,
) -> list[np.ndarray]:
    """The same random grid distortion of every (H, W[, C]) array (albumentations' GridDistortion).

    The image is cut into ``steps`` x ``steps`` cells whose sides are stretched by 1±``limit`` (smoothly
    interpolated between grid lines). ``orders``: interpolation order per array (1 = linear, default;
    0 = nearest, for label images).
    """
    from scipy.ndimage import map_coordinates

    h, w = arrays[0].shape[:2]

    def axis_map(n: int) -> np.ndarray:
        cells = rng.uniform(1 - limit, 1 + limit, steps)
        knots = np.r_[0, np.cumsum(cells)] / cells.sum() * (n - 1)
        return np.interp(np.arange(n), np.linspace(0, n - 1, steps + 1), knots)

    yy, xx = np.meshgrid(axis_map(h), axis_map(w), indexing="ij")
    out = []
    for k, a in enumerate(arrays):
        order = 1 if orders is None else orders[k]
        if a.ndim == 2:
            out.append(map_coordinates(a, [yy, xx], order=order, mode="reflect").astype(a.dtype))
        else:
            out.append(
                np.stack(
                    [map_coordinates(a[..., c], [yy, xx], order=order, mode="reflect") for c in range(a.shape[2])], -1
                ).astype(a.dtype)
            )
    return out


def _gauss_pyramid(a: np.ndarray, levels: int) -> list[np.ndarray]:
    from skimage.transform import pyramid_reduce

    pyr = [a]
    for _ in range(levels - 1):
        pyr.append(pyramid_reduce(pyr[-1], channel_axis=-1 if pyr[-1].ndim == 3 else None))
    return pyr


def _expand(a: np.ndarray, shape) -> np.ndarray:
    from skimage.transform import resize

    return resize(a, shape, order=1, mode="reflect", anti_aliasing=False)


def laplacian_blend(a: np.ndarray, b: np.ndarray, alpha: np.ndarray, levels: int = 4) -> np.ndarray:
    """Laplacian-pyramid blending (Burt & Adelson 1983) of two images under a mask.

    a, b: (H, W, C) float in [0, 1] (same shape); alpha: (H, W) float in [0, 1], the weight of ``a``.
    Each band-pass level of ``a`` and ``b`` is mixed with the Gaussian-smoothed ``alpha`` of the same
    level, so the seam is smooth at every scale. The result is clipped per pixel to
    ``[min(a, b), max(a, b)]`` (no ringing beyond either input): (H, W, C) float32 in [0, 1].
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.shape[:2] != np.shape(alpha):
        raise ValueError(f"laplacian_blend: shapes differ: {a.shape}, {b.shape}, mask {np.shape(alpha)}")
    levels = max(1, min(levels, int(np.log2(max(2, min(a.shape[:2])))) - 2))
    ga, gb = _gauss_pyramid(a, levels), _gauss_pyramid(b, levels)
    gm = _gauss_pyramid(np.asarray(alpha, np.float64), levels)
    out = ga[-1] * gm[-1][..., None] + gb[-1] * (1 - gm[-1][..., None])
    for k in range(levels - 2, -1, -1):
        la = ga[k] - _expand(ga[k + 1], ga[k].shape)
        lb = gb[k] - _expand(gb[k + 1], gb[k].shape)
        m = gm[k][..., None]
        out = _expand(out, ga[k].shape) + la * m + lb * (1 - m)
    return np.clip(out, np.minimum(a, b), np.maximum(a, b)).astype(np.float32)


def random_blend_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random half-plane (any angle, any offset through the central half) as a float (H, W) 0/1 mask."""
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    d = (yy - h / 2) * np.sin(theta) + (xx - w / 2) * np.cos(theta) - rng.uniform(-0.25, 0.25) * min(h, w)
    return (d > 0).astype(np.float32)
