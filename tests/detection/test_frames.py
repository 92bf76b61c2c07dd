"""The frame a detection run's orthophotos share: exact affine maps in one CRS (rotation included), fitted ones
across CRSs within a small fraction of a pixel, frame boxes into WGS 84 polygons, and back into source pixels."""

from __future__ import annotations

import pytest
from django.contrib.gis.gdal import CoordTransform, SpatialReference
from django.contrib.gis.geos import Point

from datasets.models import Orthophoto
from detection.execution import Frame, area_m2, fit_affine, pixel_box_in
from engine.geometry import map_to_pixel, pixel_to_map
from tests.detection.scenes import rotated

UTM = SpatialReference(32633)
MERCATOR = SpatialReference(3857)


def ortho(srs: SpatialReference, gt: list[float], width=2000, height=1500) -> Orthophoto:
    return Orthophoto(georeferenced=True, srs_wkt=srs.wkt, srid=srs.srid, geotransform=gt, width=width, height=height)


def test_an_affine_is_fitted_exactly_from_points():
    gt = [10.0, 0.5, 0.1, 20.0, -0.2, -0.4]
    pairs = [((x, y), pixel_to_map(gt, x, y)) for x, y in ((0, 0), (100, 0), (0, 50), (70, 30))]
    assert fit_affine(pairs) == pytest.approx(gt)


def test_a_rotated_orthophoto_in_the_frames_crs_maps_exactly():
    reference = rotated((500_000.0, 5_100_000.0), 0.2, 12.0)
    frame = Frame(reference, UTM)
    other_gt = rotated((500_050.0, 5_099_990.0), 0.2, 12.0)
    to_frame = frame.to_frame(ortho(UTM, other_gt))
    for px, py in ((0, 0), (1999, 0), (333, 1444)):
        expected = map_to_pixel(reference, *pixel_to_map(other_gt, px, py))
        assert pixel_to_map(to_frame, px, py) == pytest.approx(expected, abs=1e-6)


def test_another_crs_maps_within_a_tenth_of_a_pixel():
    reference = rotated((500_000.0, 5_100_000.0), 0.2, 0.0)
    frame = Frame(reference, UTM)
    corner = Point(500_000.0, 5_100_000.0, srid=32633)
    corner.transform(CoordTransform(UTM, MERCATOR))
    mercator_gt = [corner.x, 0.28, 0.0, corner.y, 0.0, -0.28]
    to_frame = frame.to_frame(ortho(MERCATOR, mercator_gt))
    back = CoordTransform(MERCATOR, UTM)
    for px, py in ((10, 10), (1000, 700), (1990, 1490), (1500, 200)):
        x, y = pixel_to_map(mercator_gt, px, py)
        point = Point(x, y, srid=3857)
        point.transform(back)
        exact = map_to_pixel(reference, point.x, point.y)
        assert pixel_to_map(to_frame, px, py) == pytest.approx(exact, abs=0.1)


def test_a_frame_box_becomes_a_rotated_wgs84_polygon_with_its_area():
    reference = rotated((500_000.0, 5_100_000.0), 0.5, 30.0)
    polygon = Frame(reference, UTM).polygon([100, 200, 140, 260])
    assert polygon.srid == 4326 and len(polygon.coords[0]) == 5
    utm = polygon.transform(32633, clone=True)
    corners = [pixel_to_map(reference, px, py) for px, py in ((100, 200), (140, 200), (140, 260), (100, 260))]
    for got, want in zip(utm.coords[0][:4], corners, strict=True):
        assert got == pytest.approx(want, abs=1e-3)
    assert area_m2(polygon) == pytest.approx(40 * 0.5 * 60 * 0.5, rel=1e-3)
    assert Frame(None, None).polygon([0, 0, 1, 1]) is None


def test_a_frame_box_goes_back_to_source_pixels_clipped():
    to_frame = [100.0, 1.0, 0.0, 50.0, 0.0, 1.0]
    source = Orthophoto(width=500, height=400)
    assert pixel_box_in(source, to_frame, [150, 60, 180, 90]) == [50, 10, 80, 40]
    assert pixel_box_in(source, to_frame, [50, 40, 700, 500]) == [0, 0, 500, 400]


def test_an_orthophoto_is_resampled_to_the_models_ground_resolution_unless_told_not_to():
    from detection.execution import raster_scale

    assert raster_scale(0.03, 0.1, {}) == pytest.approx(0.1 / 0.03)  # a 10 cm orthophoto enlarged to 3 cm
    assert raster_scale(0.2, 0.1, {"resample": True}) == 0.5
    assert raster_scale(0.095, 0.1, {}) == 1.0  # within 10 %: read as it is
    assert raster_scale(0.03, 0.1, {"resample": False}) == 1.0
    assert raster_scale(None, 0.1, {}) == 1.0  # unknown: as it is
    assert raster_scale(0.03, None, {}) == 1.0
    assert raster_scale(0.01, 1.0, {}) == 4.0  # bounded
