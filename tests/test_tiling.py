"""Tiling: plans, blending windows, tiled inference (in memory and into zarr)."""

from __future__ import annotations

import math
import threading

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage

from napari_pathreview.backend.errors import Cancelled, InputError
from napari_pathreview.backend.tiling import (
    BandWrite,
    Stitcher,
    TileFeed,
    TileSpec,
    blend_window,
    iter_tiles,
    map_tiles,
    pad_to,
    plan_tiles,
    predict_tiled,
    predict_tiled_to_zarr,
)


@pytest.fixture(scope="module")
def real_image(sample_he) -> np.ndarray:
    """The bundled real H&E MoNuSeg crop, mirrored out to (1000, 1000, 3) uint8."""
    return np.pad(sample_he, ((0, 488), (0, 488), (0, 0)), mode="reflect")


def identity(batch: np.ndarray) -> np.ndarray:
    """(B, h, w, C) -> (B, C, h, w)."""
    return batch.transpose(0, 3, 1, 2)


def box_blur(batch: np.ndarray) -> np.ndarray:
    """5x5 box blur of each channel, reflect border: (B, h, w, C) -> (B, C, h, w)."""
    return ndimage.uniform_filter(batch, size=(1, 5, 5, 1), mode="reflect").transpose(0, 3, 1, 2)


@pytest.mark.parametrize(
    "shape,tile,overlap",
    [
        ((100, 100), 64, 16),
        ((257, 513), 64, 8),
        ((1000, 700), 256, 32),
        ((64, 65), 64, 0),
        ((30, 40), 64, 16),
        ((30, 200), 64, 16),
    ],
)
def test_plan_covers_without_padding(shape, tile, overlap):
    tiles = plan_tiles(shape, tile, overlap)
    cover = np.zeros(shape, int)
    for t in tiles:
        cover[t.slices] += 1
    assert cover.min() >= 1
    assert [t.index for t in tiles] == list(range(len(tiles)))
    n = [1 if s <= tile else math.ceil((s - overlap) / (tile - overlap)) for s in shape]
    assert len(tiles) == n[0] * n[1]
    for t in tiles:  # inside the image, full size unless the image is smaller than a tile
        assert 0 <= t.y0 and t.y1 <= shape[0] and 0 <= t.x0 and t.x1 <= shape[1]
        assert t.shape == (min(tile, shape[0]), min(tile, shape[1]))
    for axis, size in enumerate(shape):  # neighbours overlap by at least the requested overlap
        starts = sorted({(t.y0, t.x0)[axis] for t in tiles})
        if len(starts) > 1:
            assert np.diff(starts).max() <= tile - overlap
            assert starts[-1] + tile == size


@pytest.mark.parametrize("args", [(64, 64), (64, -1), (8, 2), (64, 70)])
def test_plan_rejects_bad_arguments(args):
    with pytest.raises(InputError):
        plan_tiles((100, 100), *args)


@pytest.mark.parametrize("kind", ["hann", "gaussian", "constant"])
def test_blend_window_positive(kind):
    win = blend_window(64, 48, kind)
    assert win.shape == (64, 48) and win.dtype == np.float32
    assert win.min() >= 1e-6 and win.max() <= 1.0
    assert np.allclose(win, win[::-1]) and np.allclose(win, win[:, ::-1])
    if kind != "constant":  # centre weighs more than the edges
        assert win[32, 24] > 10 * win[0, 0]
    with_border = blend_window(64, 64, "hann", border=8)
    assert np.all(with_border[8:56, 8:56] == 1.0)
    with pytest.raises(InputError):
        blend_window(8, 8, "cubic")


def test_pad_to_and_iter_tiles():
    img = np.arange(30 * 40 * 3, dtype=np.float32).reshape(30, 40, 3)
    padded, crop = pad_to(img, 64, 32)
    assert padded.shape == (64, 40, 3)
    assert np.array_equal(padded[crop], img)
    assert np.array_equal(padded[30], img[28])  # reflect
    same, _ = pad_to(img, 10, 10)
    assert same is img
    tiles = plan_tiles((30, 40), 16, 4)
    crops = list(iter_tiles(da.from_array(img, chunks=(7, 9, 3)), tiles))
    assert all(np.array_equal(c, img[t.slices]) for t, c in crops)


@pytest.mark.parametrize(
    "shape,tile,overlap,window,batch",
    [
        ((100, 100), 64, 16, "hann", 1),
        ((257, 513), 64, 8, "gaussian", 3),
        ((30, 40), 64, 16, "hann", 2),
        ((30, 130), 64, 16, "constant", 4),
    ],
)
def test_identity_reproduces_real_image(real_image, shape, tile, overlap, window, batch):
    img = real_image[: shape[0], 100 : 100 + shape[1]]
    out = predict_tiled(img, identity, TileSpec(tile, overlap, window, batch_size=batch), 3)
    assert out.shape == (3, *shape) and out.dtype == np.float32
    np.testing.assert_allclose(out, img.transpose(2, 0, 1).astype(np.float32), atol=1e-5 * 255)


def test_dask_input_and_2d_image(real_image):
    gray = real_image[:200, :150, 0]
    out = predict_tiled(da.from_array(gray, chunks=50), identity, TileSpec(64, 16), 1)
    np.testing.assert_allclose(out[0], gray, atol=1e-3)


def test_box_blur_matches_whole_image(real_image):
    # Measured (300x300 crop, tile 64, overlap 16): hann max |error| 0.055 grey levels (of 255) over
    # the whole image on a MoNuSeg image, 0.18 on the bundled sample's sharper 40x crop; constant window
    # (plain averaging) 7.9 at the seams. Pixels
    # >= 3 px from every interior tile edge are exact (< 1e-3) with any window.
    img = real_image[:300, :300].astype(np.float32)
    whole = box_blur(img[None])[0]
    hann = predict_tiled(img, box_blur, TileSpec(64, 16, "hann"), 3)
    const = predict_tiled(img, box_blur, TileSpec(64, 16, "constant"), 3)
    err_hann, err_const = np.abs(hann - whole), np.abs(const - whole)
    assert err_hann.max() < 0.25
    assert err_hann.max() < err_const.max() / 10
    near_edge = np.zeros((300, 300), bool)
    for t in plan_tiles((300, 300), 64, 16):
        for y in (t.y0, t.y1):
            if 0 < y < 300:
                near_edge[max(0, y - 3) : y + 3, t.x0 : t.x1] = True
        for x in (t.x0, t.x1):
            if 0 < x < 300:
                near_edge[t.y0 : t.y1, max(0, x - 3) : x + 3] = True
    assert near_edge.mean() < 0.5
    assert err_const[:, ~near_edge].max() < 1e-3


def test_cancel_and_progress():
    img = np.zeros((100, 100, 1), np.float32)
    calls = []
    predict_tiled(img, identity, TileSpec(64, 16), 1, progress=lambda i, n, m: calls.append((i, n)))
    n = len(plan_tiles((100, 100), 64, 16))
    assert calls == [(i + 1, n) for i in range(n)]
    calls.clear()
    predict_tiled(img, identity, TileSpec(64, 16, batch_size=3), 1, progress=lambda i, n, m: calls.append((i, n)))
    assert calls[-1] == (math.ceil(n / 3), math.ceil(n / 3))
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        predict_tiled(img, identity, TileSpec(64, 16), 1, cancel=ev)
    with pytest.raises(Cancelled):
        predict_tiled_to_zarr(img, identity, np.zeros((1, 100, 100)), TileSpec(64, 16), 1, cancel=ev)


def test_predict_fn_shape_is_checked():
    with pytest.raises(ValueError, match="predict_fn returned"):
        predict_tiled(np.zeros((70, 70, 3)), lambda b: b, TileSpec(64, 16), 3)


def test_stitcher_2d_and_out():
    out = np.empty((50, 60), np.float32)
    st = Stitcher((50, 60), "hann", out=out)
    for t in plan_tiles((50, 60), 32, 8):
        st.add(t, np.full(t.shape, 7.0))
    assert np.allclose(st.result(), 7.0)
    with pytest.raises(InputError):
        Stitcher((50, 60)).result()


@pytest.mark.parametrize("batch", [1, 4])
def test_zarr_equals_in_memory(real_image, tmp_path, batch):
    img = real_image[:257, :190]
    mem = predict_tiled(img, box_blur, TileSpec(64, 16, batch_size=batch), 3)
    arr = zarr.create_array(store=zarr.storage.MemoryStore(), shape=(3, 257, 190), dtype="float32", chunks=(3, 64, 64))
    predict_tiled_to_zarr(img, box_blur, arr, TileSpec(64, 16, batch_size=batch), 3)
    np.testing.assert_allclose(arr[:], mem, atol=1e-4)
    # path output with a post-processing step (threshold -> uint8 mask), rows flushed band by band
    z = predict_tiled_to_zarr(
        img,
        box_blur,
        tmp_path / "mask.zarr",
        TileSpec(64, 16, batch_size=batch),
        3,
        BandWrite(postprocess=lambda b: b[0] > 128, dtype="uint8"),
    )
    assert z.shape == (257, 190) and z.dtype == np.uint8
    same = np.asarray(zarr.open_array(str(tmp_path / "mask.zarr"))[:]) == (mem[0] > 128)
    assert same.mean() > 0.9999  # only float-rounding ties at exactly 128 may differ


def test_zarr_small_image():
    img = np.random.default_rng(0).random((30, 40, 2)).astype(np.float32)
    out = np.zeros((2, 30, 40), np.float32)
    predict_tiled_to_zarr(img, identity, out, TileSpec(64, 16), 2)
    np.testing.assert_allclose(out, img.transpose(2, 0, 1), atol=1e-5)


def test_start_row_gives_bit_identical_rows_below_it(real_image):
    """A resumed run (start_row) writes exactly the rows a full run writes there, and only those."""
    img = real_image[:500, :300]
    full = np.zeros((3, 500, 300), np.float32)
    predict_tiled_to_zarr(img, box_blur, full, TileSpec(96, 24), 3)
    part = np.full((3, 500, 300), -1.0, np.float32)
    seen = []
    predict_tiled_to_zarr(
        img, box_blur, part, TileSpec(96, 24), 3, BandWrite(start_row=230), progress=lambda i, n, m: seen.append(n)
    )
    assert np.array_equal(part[:, 230:], full[:, 230:])
    assert (part[:, :230] == -1).all()  # rows above it are not touched
    assert seen[-1] < len(plan_tiles((500, 300), 96, 24))  # fewer tiles run
    strip = np.full((3, 500, 300), -1.0, np.float32)
    predict_tiled_to_zarr(img, box_blur, strip, TileSpec(96, 24), 3, BandWrite(start_row=230, cols=(101, 187)))
    assert np.array_equal(strip[:, 230:, 101:187], full[:, 230:, 101:187])
    assert (strip[:, :, :101] == -1).all() and (strip[:, :, 187:] == -1).all()


@pytest.mark.slow
def test_out_of_memory_halves_the_batch_and_keeps_the_output(real_image):
    """A GPU that holds 2 tiles: batches of 8 raise OutOfMemoryError, are halved, and the output equals
    batch-1 inference with the shipped segmenter on a real image; one tile that cannot fit is a message."""
    import torch

    from napari_pathreview.backend.segmentation import make_predict_fn
    from napari_pathreview.backend.tiling import OomSplitter
    from napari_pathreview.backend.weights import load_model

    model, card = load_model(None, "segmenter", "cpu")
    fn = make_predict_fn(model, card, 1.0)
    calls = []

    def small_gpu(batch):
        calls.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return fn(batch)

    img = real_image[200:800, 200:800]
    ref = predict_tiled(img, fn, TileSpec(256, 32, batch_size=1), fn.out_channels)
    split = OomSplitter(small_gpu)
    out = predict_tiled(img, split, TileSpec(256, 32, batch_size=8), fn.out_channels)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert split.limit == 2 and split.retries == 2  # 8 -> 4 -> 2, then every later batch goes in 2s
    assert calls.count(8) == 1 and calls.count(4) == 1 and max(calls[2:]) == 2

    def no_room(batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(InputError, match="single 256x256 tile; use a smaller --tile"):
        predict_tiled(img, no_room, TileSpec(256, 32), fn.out_channels)
    with pytest.raises(ValueError, match="not memory"):  # other errors pass through untouched
        predict_tiled(img, lambda b: (_ for _ in ()).throw(ValueError("not memory")), TileSpec(256, 32), 3)


def test_with_monais_importance_map_the_output_equals_monai(real_image):
    """Where both plans place the same tiles (960 = 512 + 448: starts 0 and 448 in both), with the same
    importance map, our tiler and MONAI's sliding_window_inference give the same numbers for a real
    image and a convolution (the tiling bench's equal-output claim, checked in CI)."""
    import torch
    from monai.data.utils import compute_importance_map
    from monai.inferers import sliding_window_inference

    conv = torch.nn.Conv2d(3, 2, 7, padding=3)
    torch.manual_seed(0)
    torch.nn.init.normal_(conv.weight, 0, 0.05)
    img = real_image[:960, :960].astype(np.float32)

    def fn(x):
        with torch.no_grad():
            return conv(x)

    window = compute_importance_map((512, 512), mode="gaussian", sigma_scale=0.125).numpy()
    assert [t.y0 for t in plan_tiles((960, 960), 512, 64)][::2] == [0, 448]
    ours = predict_tiled(
        img,
        lambda b: fn(torch.from_numpy(b.transpose(0, 3, 1, 2).copy())).numpy(),
        TileSpec(512, 64, window, batch_size=2),
        2,
    )
    with torch.no_grad():
        ref = sliding_window_inference(
            torch.from_numpy(img.transpose(2, 0, 1)[None].copy()),
            (512, 512),
            2,
            fn,
            overlap=64 / 512,
            mode="gaussian",
            sigma_scale=0.125,
        )[0].numpy()
    scale = np.abs(ref).max()
    assert scale > 1 and np.abs(ours - ref).max() < 1e-5 * scale
    named = predict_tiled(img[:300, :300], box_blur, TileSpec(64, 16, "gaussian"), 3)
    explicit = predict_tiled(img[:300, :300], box_blur, TileSpec(64, 16, blend_window(64, 64, "gaussian")), 3)
    assert np.array_equal(named, explicit)
    with pytest.raises(InputError, match="positive"):
        predict_tiled(img[:100, :100], box_blur, TileSpec(64, 16, np.zeros((64, 64))), 3)


class CountingReads:
    """An image whose crops are counted (``reads``: one per tile read)."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim, self.reads = a, a.shape, a.dtype, a.ndim, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.a[key]


def test_map_tiles_skips_glass_unread_batches_and_stops_on_cancel(real_image):
    """The one tile driver: known glass tiles are never read (skipped, or run as white crops), batches of
    3 give the tiles' predictions of batches of 1 in plan order, and a cancel stops the reads."""
    img = real_image[:300, :300]
    tiles = plan_tiles(img.shape[:2], 64, 16)  # 6 x 6
    glass = lambda t: t.x0 == 0  # the first column of tiles
    ref = {t.index: identity(img[t.slices][None].astype(np.float32))[0] for t in tiles}
    for batch in (1, 3):
        counting = CountingReads(img)
        feed = TileFeed(batch, glass, skip_glass=True, prepare=lambda c, t: c.astype(np.float32))
        got = list(map_tiles(counting, tiles, identity, feed))
        assert counting.reads == 30 and [t.index for t, _ in got] == [t.index for t in tiles if t.x0 > 0]
        assert all(np.array_equal(p, ref[t.index]) for t, p in got)
    white = list(map_tiles(CountingReads(img), tiles, identity, TileFeed(4, glass)))
    assert len(white) == 36 and all((p == 255).all() for t, p in white if t.x0 == 0)
    nothing = list(map_tiles(img, tiles, identity, TileFeed(2, prepare=lambda c, t: None)))
    assert nothing == []  # a prepare that finds nothing to run: no network call, no prediction
    ev, counting, seen = threading.Event(), CountingReads(img), []

    def progress(i, n, msg):
        seen.append((i, n))
        ev.set()  # cancel after the first batch

    with pytest.raises(Cancelled):
        list(map_tiles(counting, tiles, identity, TileFeed(4), progress=progress, cancel=ev))
    assert seen == [(1, 9)] and counting.reads == 4
