"""The detection child's parts that need no model: windows over a raster, nodata windows, GDAL reads of grey, RGB
and RGBA under the platform's policy, boxes into the frame, and the seam merge (SAHI's GREEDYNMM against NMS)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.detect import empty_window, frame_box, merge_boxes, overlap_pixels, raster_windows
from engine.raster import CACHE_MB, Raster, RasterRefused, library, limit_block_cache
from tests.detection.scenes import rotated, write_geotiff


def picture(width=300, height=200):
    rng = np.random.default_rng(1)
    return rng.integers(1, 255, (height, width, 3), dtype=np.uint8)


def test_reads_rgb_windows_exactly_and_knows_its_georeferencing(tmp_path):
    pixels = picture()
    gt = rotated((500_000.0, 5_100_000.0), 0.2, 15.0)
    path = write_geotiff(tmp_path / "rgb.tif", pixels, srid=32633, geotransform=gt)
    with Raster(path) as raster:
        assert (raster.width, raster.height, raster.alpha_band) == (300, 200, None)
        assert raster.geotransform == pytest.approx(gt) and "32633" in raster.projection
        window = raster.read(40, 30, 64, 50, raster.colour_bands)
    assert window.shape == (50, 64, 3) and np.array_equal(window, pixels[30:80, 40:104])


def test_grey_is_read_as_three_equal_channels_and_alpha_marks_nodata(tmp_path):
    pixels = picture()
    alpha = np.full(pixels.shape[:2], 255, np.uint8)
    alpha[:100, :150] = 0
    path = write_geotiff(tmp_path / "grey.tif", pixels, srid=None, geotransform=None, grey=True, alpha=alpha)
    with Raster(path) as raster:
        assert raster.geotransform in (None, [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]) and raster.alpha_band == 2
        assert raster.colour_bands == [1, 1, 1]
        bands = raster.colour_bands + [raster.alpha_band]
        hidden = raster.read(0, 0, 150, 100, bands)
        seen = raster.read(100, 50, 150, 100, bands)
    assert np.array_equal(hidden[..., 0], hidden[..., 2]) and np.array_equal(hidden[..., 0], pixels[:100, :150, 0])
    assert empty_window(hidden, raster) and not empty_window(seen, raster)


def test_a_nodata_value_marks_empty_windows(tmp_path):
    pixels = picture()
    pixels[:, :120] = 7
    path = write_geotiff(tmp_path / "nodata.tif", pixels, srid=32633, geotransform=rotated((0, 0), 1, 0), nodata=7)
    with Raster(path) as raster:
        assert raster.nodata == 7
        assert empty_window(raster.read(0, 0, 120, 200, [1, 2, 3]), raster)
        assert not empty_window(raster.read(100, 0, 120, 200, [1, 2, 3]), raster)


def test_only_a_geotiff_is_opened(tmp_path):
    vrt = tmp_path / "evil.tif"
    vrt.write_text('<VRTDataset rasterXSize="1" rasterYSize="1"></VRTDataset>')
    with pytest.raises(RasterRefused):
        Raster(vrt)
    with pytest.raises(RasterRefused):
        Raster("/vsicurl/http://example.com/a.tif")


def test_windows_cover_the_raster_with_the_overlap(tmp_path):
    path = write_geotiff(tmp_path / "w.tif", picture(1000, 700), srid=32633, geotransform=rotated((0, 0), 1, 0))
    with Raster(path) as raster:
        windows = list(raster_windows(raster.width, raster.height, 256, 0.2))
    assert overlap_pixels(256, 0.2) == 51
    xs, ys = sorted({w[0] for w in windows}), sorted({w[1] for w in windows})
    assert xs[:2] == [0, 205] and xs[-1] == 1000 - 256 and ys[-1] == 700 - 256
    assert all(w[2:] == (256, 256) for w in windows)


def test_frame_boxes_follow_the_affine():
    assert frame_box([0, 1, 0, 0, 0, 1], [1, 2, 3, 4]) == [1, 2, 3, 4]
    assert frame_box([10, 2, 0, 20, 0, 2], [1, 2, 3, 4]) == [12, 24, 16, 28]
    turned = frame_box([0, 0, -1, 0, 1, 0], [0, 0, 10, 20])  # a quarter turn: the envelope swaps sides
    assert turned == [-20, 0, 0, 10]


def box(x1, y1, x2, y2, score=0.9, label=0):
    return {"frame_box": [x1, y1, x2, y2], "score": score, "label": label, "raster": 1, "pixel_box": [x1, y1, x2, y2]}


def test_a_pile_cut_by_a_seam_is_one_detection_with_greedy_nmm_and_two_with_iou_nms():
    # A 100 px pile at x 180..280 seen by two windows meeting in 205..256: each sees a part.
    left, right = box(180, 50, 256, 150, 0.8), box(205, 50, 280, 150, 0.7)
    other = box(600, 600, 650, 650, 0.6)
    merged = merge_boxes([left, right, other], method="greedy_nmm", threshold=0.5)
    assert len(merged) == 2 and merged[0]["frame_box"] == [180, 50, 280, 150] and merged[0]["merged"] == 2
    assert merged[0]["score"] == 0.8
    # NMS on the same overlap suppresses the weaker part instead of joining them: the site is cut short.
    kept = merge_boxes([left, right], method="nms", threshold=0.5)
    assert [k["frame_box"] for k in kept] == [[180, 50, 256, 150]]
    # Parts that overlap less than the threshold (25 px of the smaller 60) stay apart with both.
    apart = [box(180, 50, 240, 150), box(215, 50, 280, 150, 0.7)]
    assert len(merge_boxes(apart, method="greedy_nmm", threshold=0.5)) == 2


def test_a_sliver_that_overlaps_only_the_union_of_a_group_joins_it():
    # The best box and a larger part merge first; the sliver at the far edge touches only their union.
    best, part, sliver = box(0, 0, 60, 60, 0.9), box(20, 0, 100, 60, 0.8), box(70, 0, 95, 60, 0.7)
    merged = merge_boxes([best, part, sliver], method="greedy_nmm", threshold=0.5)
    assert [(m["frame_box"], m["merged"], m["score"]) for m in merged] == [([0, 0, 100, 60], 3, 0.9)]


def test_merging_is_class_aware():
    merged = merge_boxes(
        [box(0, 0, 100, 100, 0.9, 0), box(10, 10, 100, 100, 0.8, 1)], method="greedy_nmm", threshold=0.5
    )
    assert sorted(m["label"] for m in merged) == [0, 1]
    assert merge_boxes([box(0, 0, 1, 1)], method="greedy_nmm", threshold=0.5)[0]["merged"] == 1
    assert merge_boxes([], method="nms", threshold=0.5) == []


def test_the_child_caps_the_block_cache_below_the_policy_never_above():
    before = library().GDALGetCacheMax64()
    try:
        limit_block_cache(32)
        assert library().GDALGetCacheMax64() == 32 * 2**20
        limit_block_cache(10_000)
        assert library().GDALGetCacheMax64() == CACHE_MB * 2**20
    finally:
        library().GDALSetCacheMax64(before)
