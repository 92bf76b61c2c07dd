"""Orthophotos cut into training tiles: one or more large GeoTIFFs and the dump sites outlined on them as GeoJSON
polygons or boxes (in any CRS) become dataset images of a chosen size and overlap, each with its footprint, and
each site clipped to the tile and turned into a pixel box.

- Windowed reading through GDAL (GeoDjango): one tile's pixels at a time, with GDAL's block cache capped
  (``GDAL_CACHEMAX``), so a 20,000 x 20,000 px orthophoto tiles with flat memory.
- A site cut by a tile edge keeps its box in that tile when at least ``min_box_share`` of its area lies inside;
  a tile holding only smaller pieces of sites is skipped (it is neither a clean background example nor a fair
  positive one). Tiles with no site at all are kept at ``background_ratio`` (a seeded, reproducible choice);
  tiles of nodata only (all zero, or fully transparent) are skipped.
- The last row and column of tiles are aligned to the orthophoto's edge, so every tile is full size (an
  orthophoto smaller than a tile gives one tile of its own size).
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.gis.gdal import CoordTransform, GDALException, GDALRaster, SpatialReference
from django.contrib.gis.geos import GEOSException, Polygon
from PIL import Image

from core.errors import ApplicationError
from engine.geometry import NO_GEOTRANSFORM, pixel_to_map, window_count, windows

from .georef import window_footprint
from .grid import PlacedSites, Tile, tile_boxes
from .import_batch import BATCH, ImageImport, ImportReport, InOrder, flush_images, import_classes, import_threads
from .models import DatasetImage
from .rasters import RasterRefused, open_raster
from .services import annotation_build
from .sites import Annotations, Site, read_annotations

MAX_TILE = 4096


@dataclass(frozen=True)
class TilingOptions:
    tile_size: int = 1024
    overlap: int = 128
    min_box_share: float = 0.3
    background_ratio: float = 0.1
    class_property: str = "class"
    seed: int = 0

    @classmethod
    def checked(cls, **values) -> TilingOptions:
        """The options, each checked (ApplicationError naming the field)."""
        options = cls(**{k: v for k, v in values.items() if v is not None})
        rules = {
            "tile_size": (isinstance(options.tile_size, int) and 64 <= options.tile_size <= MAX_TILE, "64 to 4096"),
            "overlap": (
                isinstance(options.overlap, int) and 0 <= options.overlap <= options.tile_size // 2,
                "0 to half the tile size",
            ),
            "min_box_share": (_fraction(options.min_box_share) and options.min_box_share > 0, "above 0, at most 1"),
            "background_ratio": (_fraction(options.background_ratio), "0 to 1"),
            "class_property": (isinstance(options.class_property, str) and options.class_property, "a property"),
        }
        errors = {name: f"must be {why}" for name, (ok, why) in rules.items() if not ok}
        if errors:
            raise ApplicationError("Invalid tiling options.", errors)
        return options

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


@dataclass
class Orthophoto:
    path: Path
    name: str  # as the operator knows it (an upload's file name)
    raster: GDALRaster
    geotransform: list
    srs: SpatialReference | None  # None: not georeferenced (accepted for detection only)
    width: int
    height: int

    @property
    def crs(self) -> SpatialReference:
        """Its CRS (an orthophoto opened for tiling always has one: ``open_orthophoto`` checks)."""
        if self.srs is None:
            raise ApplicationError(f"{self.name} is not georeferenced.", {"orthophoto": self.name})
        return self.srs

    @property
    def outline(self) -> Polygon:
        corners = [pixel_to_map(self.geotransform, px, py) for px, py in ((0, 0), (self.width, 0))]
        corners += [pixel_to_map(self.geotransform, px, py) for px, py in ((self.width, self.height), (0, self.height))]
        return Polygon([*corners, corners[0]], srid=self.srs.srid or 0 if self.srs else 0)


def open_orthophoto(path: Path, label: str | None = None, *, georeferenced: bool = True) -> Orthophoto:
    """Open an orthophoto for windowed reading (nothing of its pixels is read), as a GeoTIFF and nothing else, with
    no side file and no network (``rasters.open_raster``), checked: a geotransform and a CRS, 8-bit bands (1, 3 or
    4), at most ``DUMPSITE_ORTHOPHOTO_MAX_PIXELS`` pixels. Refusals name the operator's file, never a server path
    or GDAL's own text. With ``georeferenced=False`` a photo without geotransform or CRS is accepted too (its
    ``srs`` is None: pixel coordinates only)."""
    label = label or Path(path).name
    try:
        raster = open_raster(path)
        geotransform, srs = list(raster.geotransform), raster.srs
        bands = [band.datatype(as_string=True) for band in raster.bands]
        width, height = raster.width, raster.height
    except RasterRefused as exc:
        raise ApplicationError(f"{label}: {exc} (a GeoTIFF is needed).", {"orthophoto": label}) from None
    except (GDALException, ValueError, TypeError):
        raise ApplicationError(f"{label}: its GeoTIFF tags are unreadable.", {"orthophoto": label}) from None
    limit = settings.DUMPSITE_ORTHOPHOTO_MAX_PIXELS
    if width * height > limit:
        raise ApplicationError(
            f"{label} is {width:,} x {height:,} = {width * height:,} pixels; the limit is {limit:,} "
            "(DUMPSITE_ORTHOPHOTO_MAX_PIXELS).",
            {"orthophoto": label, "limit": "DUMPSITE_ORTHOPHOTO_MAX_PIXELS"},
        )
    if len(bands) not in (1, 3, 4) or any(b != "GDT_Byte" for b in bands):
        raise ApplicationError(
            f"{label} has {len(bands)} band(s) of {', '.join(sorted(set(bands)))}; 8-bit grey, RGB or RGBA is "
            "needed (gdal_translate -ot Byte -scale).",
            {"orthophoto": label},
        )
    if not georeferenced and (geotransform == NO_GEOTRANSFORM or srs is None):
        return Orthophoto(Path(path), label, raster, NO_GEOTRANSFORM, None, width, height)
    if geotransform == NO_GEOTRANSFORM:
        raise ApplicationError(f"{label} has no geotransform: it is not georeferenced.", {"orthophoto": label})
    if srs is None:
        raise ApplicationError(
            f"{label} has no coordinate reference system (CRS); assign one (gdal_edit.py -a_srs EPSG:...).",
            {"orthophoto": label},
        )
    if abs(geotransform[1] * geotransform[5] - geotransform[2] * geotransform[4]) < 1e-300:
        raise ApplicationError(f"{label} has a degenerate geotransform (no pixel area).", {"orthophoto": label})
    return Orthophoto(Path(path), label, raster, geotransform, srs, width, height)


def check_window_count(orthos: list[Orthophoto], options: TilingOptions) -> int:
    """How many windows the tiling looks at (counted, not made); refused past ``DUMPSITE_TILING_MAX_WINDOWS``."""
    total = sum(window_count(o.width, o.height, options.tile_size, options.overlap) for o in orthos)
    limit = settings.DUMPSITE_TILING_MAX_WINDOWS
    if total > limit:
        raise ApplicationError(
            f"The orthophotos make {total:,} tiles of {options.tile_size} px with an overlap of {options.overlap}; "
            f"the limit is {limit:,} (DUMPSITE_TILING_MAX_WINDOWS). Use larger tiles or a smaller overlap.",
            {"tiles": total, "limit": "DUMPSITE_TILING_MAX_WINDOWS"},
        )
    return total


def sites_in(ortho: Orthophoto, annotations: Annotations) -> list[Site]:
    """The sites, transformed to the orthophoto's CRS, that overlap it."""
    transform = CoordTransform(annotations.srs, ortho.crs)
    outline = ortho.outline
    inside = []
    for site in annotations.sites:
        geometry = site.geometry.clone()
        try:
            geometry.transform(transform)
        except (GDALException, GEOSException):
            continue
        if geometry.valid and geometry.intersects(outline):
            inside.append(Site(site.label, site.class_name, geometry, site.source))
    return inside


def sites_per_orthophoto(orthos: list[Orthophoto], annotations: Annotations) -> list[list[Site]]:
    """Each orthophoto's sites; ApplicationError when no site overlaps any of them (a CRS mix-up, most often)."""
    found = [sites_in(ortho, annotations) for ortho in orthos]
    if not any(found):
        names = ", ".join(f"{o.name} (EPSG:{o.crs.srid})" for o in orthos)
        raise ApplicationError(
            f"No annotated site overlaps the orthophoto: the annotations (EPSG:{annotations.srs.srid}) and {names} "
            "do not cover the same ground; check the CRS of both.",
            {"annotations": "no overlap"},
        )
    return found


def read_window(ortho: Orthophoto, window) -> Image.Image | None:
    """The window's pixels as an image (grey or RGB), or None when it holds nodata only."""
    x, y, w, h = window
    try:
        bands = [np.asarray(band.data(offset=(x, y), size=(w, h))).reshape(h, w) for band in ortho.raster.bands]
    except (GDALException, ValueError):
        raise ApplicationError(
            f"{ortho.name}: the pixels at x={x}, y={y} are unreadable (a damaged or truncated GeoTIFF); nothing was "
            "saved.",
            {"orthophoto": ortho.name},
        ) from None
    if len(bands) == 4:
        if not bands[3].any():
            return None
        bands = bands[:3]
    if not any(band.any() for band in bands):
        return None
    if len(bands) == 1:
        return Image.fromarray(bands[0], "L")
    return Image.fromarray(np.dstack(bands), "RGB")


def encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def keep_background(options: TilingOptions, ortho_index: int, window) -> bool:
    x, y, *_ = window
    return random.Random(f"{options.seed}:{ortho_index}:{x}:{y}").random() < options.background_ratio


@dataclass
class TilingStats:
    tiles: int = 0  # windows looked at
    with_sites: int = 0
    background_kept: int = 0
    background_skipped: int = 0
    nodata_skipped: int = 0
    cut_only_skipped: int = 0
    boxes_cut_dropped: int = 0
    hard_negatives: int = 0  # tiles without a site kept because a false alarm lies whole in them

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def plan_tiles(
    orthos: list[Orthophoto],
    annotations: Annotations,
    options: TilingOptions,
    *,
    stats: TilingStats,
    progress: Callable[[int, int], None] | None = None,
    negatives: Annotations | None = None,
):
    """Yield (ortho, tile, image) for every tile to keep, in order; ``stats`` counts the rest. A tile without a
    site that holds a whole one of ``negatives`` (false alarms a reviewer rejected) is kept as a hard negative."""
    per_ortho = zip(orthos, sites_per_orthophoto(orthos, annotations), strict=True)
    no_negatives: list[list[Site]] = [[] for _ in orthos]
    negatives_per_ortho = [sites_in(o, negatives) for o in orthos] if negatives is not None else no_negatives
    size, overlap = options.tile_size, options.overlap
    total = check_window_count(orthos, options)
    done = 0
    for index, (ortho, sites) in enumerate(per_ortho):
        placed = PlacedSites.build(ortho.geotransform, sites, cell=size)
        false_alarms = PlacedSites.build(ortho.geotransform, negatives_per_ortho[index], cell=size)
        for window in windows(ortho.width, ortho.height, size, overlap):
            done += 1
            stats.tiles += 1
            tile = tile_boxes(ortho.geotransform, ortho.crs.srid or 0, placed, window, options.min_box_share)
            stats.boxes_cut_dropped += tile.cut_dropped
            hard = (
                not tile.boxes
                and not tile.cut_dropped
                and bool(tile_boxes(ortho.geotransform, ortho.crs.srid or 0, false_alarms, window, 1.0).boxes)
            )
            if not tile.boxes and tile.cut_dropped:
                stats.cut_only_skipped += 1
            elif not tile.boxes and not hard and not keep_background(options, index, window):
                stats.background_skipped += 1
            else:
                image = read_window(ortho, window)
                if image is None:
                    stats.nodata_skipped += 1
                else:
                    if tile.boxes:
                        stats.with_sites += 1
                    elif hard:
                        stats.hard_negatives += 1
                    else:
                        stats.background_kept += 1
                    yield ortho, tile, image
            if progress:
                progress(done, total)


def tile_footprint(ortho: Orthophoto, tile: Tile):
    return window_footprint(ortho.geotransform, ortho.crs, tile.x, tile.y, tile.width, tile.height)


def tile_orthophotos(
    *,
    orthophotos: list[Path],
    annotations: bytes,
    options: TilingOptions,
    names: list[str] | None = None,
    dataset_name: str | None = None,
    dataset=None,
    add_classes: bool = False,
    created_by=None,
    progress: Callable[[int, int], None] | None = None,
    negatives: bytes | None = None,
    source: dict | None = None,
):
    """Cut ``orthophotos`` into tiles of a new dataset (``dataset_name``, classes in the order the annotations name
    them) or of ``dataset``, with the annotated sites as boxes; one transaction, files removed if it does not
    commit. Returns the import report (``stats``: the tiling's counts). ``negatives``: false alarms (GeoJSON) whose
    tiles are kept as hard negatives; ``source``: where the images came from, kept on each (a box's own comes
    from its site's ``source`` property)."""
    if (dataset is None) == (dataset_name is None):
        raise ApplicationError("Tile into a new dataset (a name) or an existing one, not both.", {"dataset": "one"})
    found = read_annotations(annotations, class_property=options.class_property)
    false_alarms = read_annotations(negatives, default_class="false alarm") if negatives else None
    names = names or [Path(p).name for p in orthophotos]
    orthos = [open_orthophoto(path, name) for path, name in zip(orthophotos, names, strict=True)]
    report, stats = ImportReport(), TilingStats()
    report.rejected.extend(found.rejected)
    placed = {site.label for sites in sites_per_orthophoto(orthos, found) for site in sites}
    report.rejected.extend((s.label, "outside every orthophoto") for s in found.sites if s.label not in placed)
    with (
        ImageImport(upload_threads=import_threads()) as batch,
        ThreadPoolExecutor(import_threads(), thread_name_prefix="tiling") as pool,
    ):
        class_names = found.class_names
        classes = dict(
            zip(
                class_names,
                import_classes(
                    dataset_name=dataset_name,
                    dataset=dataset,
                    class_names=class_names,
                    add_classes=add_classes,
                    created_by=created_by,
                    report=report,
                ),
                strict=True,
            )
        )
        known = set(DatasetImage.objects.filter(dataset=report.dataset).values_list("sha256", flat=True))
        pending: list = []
        line = InOrder(pool, depth=2 * import_threads())

        def settle(done) -> None:
            for (tile, name), built, refusal in done:
                if refusal is not None:
                    report.reject(name, refusal.message)
                elif built.sha256 in known:
                    batch.discard(built)
                    report.reject(name, "the same image is already in the dataset")
                else:
                    known.add(built.sha256)
                    boxes = [
                        annotation_build(
                            image=built, dataset_class=classes[c], x=x, y=y, width=w, height=h, source=site_source
                        )
                        for c, x, y, w, h, site_source in tile.boxes
                    ]
                    pending.append((built, boxes))
                    if len(pending) >= BATCH:
                        flush_images(pending, report)

        def build(image, name, footprint, centre):
            return batch.build(
                dataset=report.dataset,
                content=encode(image),
                original_name=name,
                location=centre,
                footprint=footprint,
                source=source,
            )

        # Windows are read here, in order (one GDAL handle is not for several threads); encoding, the image check
        # and storing run on the pool meanwhile.
        planned = plan_tiles(orthos, found, options, stats=stats, progress=progress, negatives=false_alarms)
        for ortho, tile, image in planned:
            footprint, centre = tile_footprint(ortho, tile)
            name = f"{Path(ortho.name).stem}_x{tile.x}_y{tile.y}.jpg"
            settle(line.submit((tile, name), build, image=image, name=name, footprint=footprint, centre=centre))
        settle(line.drain())
        flush_images(pending, report)
        if report.images == 0 and dataset_name is not None:
            raise ApplicationError(
                f"No tile was kept ({stats.tiles} looked at: {stats.nodata_skipped} nodata, {stats.background_skipped} "
                "background not chosen); nothing was saved.",
                {"tiles": stats.as_dict()},
            )
    report.stats = {**stats.as_dict(), "options": options.as_dict()}
    return report
