"""Detection at the model's ground resolution: each orthophoto is read resampled by GDAL (averaging when it shrinks,
bilinear when it enlarges), windows are sized so the model sees ``tile_size`` pixels, and boxes go back to the
raster's own pixels through the exact ratio of the read. A painted raster is swept with a detector that finds the
painted squares by their colour in what it is given (no network: the geometry is what is tested)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.detect import DetectionJob, Sweep, raster_tile
from engine.raster import Raster
from tests.detection.scenes import rotated, write_geotiff

SQUARES = [(100, 80, 160, 140), (400, 300, 448, 340), (700, 500, 760, 550)]  # x1, y1, x2, y2 raster pixels


def painted_raster(tmp_path):
    pixels = np.full((700, 900, 3), 40, np.uint8)
    for x1, y1, x2, y2 in SQUARES:
        pixels[y1:y2, x1:x2] = 250
    return write_geotiff(tmp_path / "painted.tif", pixels, srid=32633, geotransform=rotated((0, 0), 0.05, 0))


class PaintDetector:
    """Finds bright squares in each window it is given (4-connected components), as boxes in its pixels."""

    sizes: list[tuple[int, int]] = []

    def __call__(self, images):
        from scipy import ndimage

        out = []
        for image in images:
            self.sizes.append(image.shape[:2])
            labels, _count = ndimage.label(image[..., 0] > 145)
            boxes = [
                [float(s[1].start), float(s[0].start), float(s[1].stop), float(s[0].stop)]
                for s in ndimage.find_objects(labels)
            ]
            out.append((boxes, [0.9] * len(boxes), [0] * len(boxes)))
        return out


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5])
def test_boxes_found_in_resampled_windows_land_on_the_raster_pixels(tmp_path, scale):
    path = painted_raster(tmp_path)
    job = DetectionJob(
        config_file="",
        checkpoint="",
        classes=["waste"],
        rasters=[],
        events_file="",
        result_file="",
        tile_size=256,
        overlap=0.5,  # every square lies whole in some window
        batch_size=2,
    )
    detector = PaintDetector()
    detector.sizes = []
    sweep = Sweep(job, detector, total=0, emit=lambda *a, **k: None)
    spec = {"id": 1, "frame": 0, "to_frame": [0, 1, 0, 0, 0, 1], "scale": scale}
    with Raster(path) as raster:
        sweep.raster(spec, raster)
    tile = raster_tile(256, scale)
    assert tile == round(256 / scale)
    # every full window reached the model at 256 x 256 px, whatever the raster's resolution
    assert (256, 256) in detector.sizes and max(max(s) for s in detector.sizes) == 256
    found = [b["pixel_box"] for b in sweep.found[0]]
    for square in SQUARES:
        # whole in some window: found there within a model pixel of the truth, in raster pixels
        best = min(found, key=lambda b: sum(abs(x - y) for x, y in zip(b, square, strict=True)))
        assert max(abs(x - y) for x, y in zip(best, square, strict=True)) <= 1 / scale + 1e-6, (square, best)
