"""Tiling a 20,000 x 20,000 px GeoTIFF orthophoto into 1,024 px tiles (400 windows, every one kept), against its
floor: GDAL's own translation of the same windows to JPEG files (``gdal_translate -srcwin``), alternated in one run;
and the tiling process's peak memory (its maximum resident set, GDAL's block cache included), which must stay under
1 GiB and not follow the orthophoto's size."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import ROOT, SCRATCH, Figure, alternate, median

SIZE, TILE, REPETITIONS, SMALL = 20_000, 1024, 2, 5_000
X0, Y0, PIXEL = 500_000.0, 5_100_000.0, 0.05  # UTM 33N, 5 cm pixels: 1 km x 1 km


def build_orthophoto(size: int) -> Path:
    """A tiled, deflated RGB GeoTIFF of ``size`` x ``size`` px, written 512 rows at a time (kept under var/bench)."""
    from django.contrib.gis.gdal import GDALRaster

    path = SCRATCH / f"ortho-{size}.tif"
    if path.exists():
        return path
    SCRATCH.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.tif")
    raster = GDALRaster(
        {
            "driver": "GTiff",
            "name": str(partial),
            "width": size,
            "height": size,
            "srid": 32633,
            "origin": [X0, Y0],
            "scale": [PIXEL, -PIXEL],
            "datatype": 1,
            "nr_of_bands": 3,
            "papsz_options": {"compress": "deflate", "tiled": "yes", "blockxsize": 512, "blockysize": 512},
        }
    )
    rng = np.random.default_rng(3)
    ground = rng.integers(60, 200, (size // 64 + 2, size // 64 + 2, 3)).astype(np.uint8)
    for y0 in range(0, size, 512):
        rows = min(512, size - y0)
        coarse = ground[y0 // 64 : (y0 + rows) // 64 + 2]
        block = np.repeat(np.repeat(coarse, 64, axis=0), 64, axis=1)[y0 % 64 : y0 % 64 + rows, :size]
        block = block + rng.integers(0, 24, block.shape, dtype=np.uint8)
        for band in range(3):
            raster.bands[band].data(np.ascontiguousarray(block[:, :, band]), offset=(0, y0), size=(size, rows))
    del raster  # flushed and closed
    partial.rename(path)
    return path


def sites(size: int) -> bytes:
    """200 rectangular sites of 5 to 30 m spread over the orthophoto, in its CRS."""
    rng = np.random.default_rng(5)
    extent = size * PIXEL
    features = []
    for i in range(200):
        x, y = X0 + rng.uniform(0, extent - 30), Y0 - rng.uniform(30, extent)
        w, h = rng.uniform(5, 30, 2)
        ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
        cls = ("waste_pile", "tyres", "construction_debris")[i % 3]
        features.append(
            {"type": "Feature", "properties": {"class": cls}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
        )
    crs = {"type": "name", "properties": {"name": "EPSG:32633"}}
    return json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}).encode()


def _tile(path: Path, name: str, annotations: bytes):
    from datasets.tiling import TilingOptions, tile_orthophotos

    # Every window kept (all background, every cut piece), so that the floor translates exactly the same windows.
    options = TilingOptions.checked(tile_size=TILE, overlap=0, background_ratio=1.0, min_box_share=1e-6)
    return tile_orthophotos(orthophotos=[path], annotations=annotations, options=options, dataset_name=name)


def _drop(name: str) -> None:
    from django.conf import settings

    from datasets.models import Annotation, Dataset

    dataset = Dataset.objects.filter(name=name).first()
    if dataset is not None:
        shutil.rmtree(Path(settings.MEDIA_ROOT) / "datasets" / str(dataset.pk), ignore_errors=True)
        Annotation.objects.filter(image__dataset=dataset).delete()
        dataset.delete()


def _floor(path: Path, windows) -> None:
    out = Path(tempfile.mkdtemp(prefix="bench-translate-", dir=SCRATCH))
    try:
        for i, (x, y, w, h) in enumerate(windows):
            subprocess.run(
                ["gdal_translate", "-q", "-of", "JPEG", "-co", "QUALITY=95", "-srcwin", str(x), str(y), str(w), str(h)]
                + [str(path), str(out / f"{i}.jpg")],
                check=True,
            )
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _read_and_encode(path: Path, windows) -> None:
    """The work's own core, in this process: each window read through GDAL and encoded as JPEG (no checks, no
    clipping, no database): what the tiling adds to it is its whole overhead."""
    from datasets.tiling import encode, open_orthophoto, read_window

    ortho = open_orthophoto(path)
    for window in windows:
        tile = read_window(ortho, window)
        assert tile is not None
        encode(tile)


PEAK_CHILD = """
import json, os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dumpsite.settings")
django.setup()
from pathlib import Path
from bench.ortho_tiling import _drop, _tile, sites
size, name = int(sys.argv[1]), sys.argv[2]
_drop(name)
report = _tile(Path(sys.argv[3]), name, sites(size))
_drop(name)
# VmHWM: this process image's own peak resident set (ru_maxrss would carry the forking parent's over the exec).
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"images": report.images, "peak_kib": peak}))
"""


def _peak_mib(path: Path, size: int) -> float:
    """The tiling's own process: its maximum resident set (Python, numpy, GDAL and its cache), in MiB."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, str(size), f"bench-tiles-peak-{size}", str(path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_kib"] / 1024


def run() -> list[Figure]:
    from datasets.tiling import windows

    big, small = build_orthophoto(SIZE), build_orthophoto(SMALL)
    annotations = sites(SIZE)
    found = list(windows(SIZE, SIZE, TILE, 0))
    times: dict[str, list[float]] = {"tiling": [], "floor": [], "core": []}
    for repetition in range(REPETITIONS):
        name = f"bench-tiles-{repetition}"
        _drop(name)

        def tiled(name=name):
            report = _tile(big, name, annotations)
            assert report.images == len(found), report.stats

        once = alternate(
            {"tiling": tiled, "floor": lambda: _floor(big, found), "core": lambda: _read_and_encode(big, found)}, 1
        )
        _drop(name)  # not timed
        for key, values in once.items():
            times[key] += values
    ratio = median(times["tiling"]) / median(times["floor"])
    peaks = {SMALL: _peak_mib(small, SMALL), SIZE: _peak_mib(big, SIZE)}
    megapixels = SIZE * SIZE / 1e6
    return [
        Figure(
            "orthophoto tiling",
            f"{SIZE:,} px square ({megapixels:.0f} Mpx, {big.stat().st_size / 2**20:.0f} MiB) into {len(found)} tiles "
            f"of {TILE} px: tiling / gdal_translate of the same windows",
            f"{median(times['tiling']):.1f} s / {median(times['floor']):.1f} s = {ratio:.2f}x",
            "<= 1.5x",
            ratio <= 1.5,
        ),
        Figure(
            "orthophoto tiling",
            "the same tiling / its core in-process (GDAL window reads + JPEG encoding only)",
            f"{median(times['tiling']):.1f} s / {median(times['core']):.1f} s = "
            f"{median(times['tiling']) / median(times['core']):.2f}x",
            "informative: gdal_translate pays a process start per window",
            None,
        ),
        Figure(
            "orthophoto tiling",
            f"peak memory of the tiling process, {SMALL:,} vs {SIZE:,} px square",
            f"{peaks[SMALL]:.0f} MiB -> {peaks[SIZE]:.0f} MiB for 16x the pixels",
            "< 1 GiB, flat (< 1.5x)",
            peaks[SIZE] < 1024 and peaks[SIZE] / peaks[SMALL] < 1.5,
        ),
    ]
