"""A run judged against known sites, counted by hand: site recall, precision, false detections per km² of the
ground covered, the precision-recall curve and the threshold that reaches a recall; and the refusals."""

from __future__ import annotations

import json

import pytest
from django.contrib.gis.geos import MultiPolygon, Polygon

from core.errors import ApplicationError
from datasets.models import Orthophoto
from detection.models import Detection, KnownSite
from detection.sites import known_sites_read, site_figures


def square(lon, lat, size=0.0002) -> Polygon:
    return Polygon.from_bbox((lon, lat, lon + size, lat + size))


def add_detection(run, polygon, score, ignored=False):
    polygon.srid = 4326
    ortho = Orthophoto.objects.get(pk=run.parameters["orthophotos"][0])
    return Detection.objects.create(
        run=run, orthophoto=ortho, label=0, class_name="waste", score=score, geometry=polygon,
        area_m2=1.0, pixel_box=[0, 0, 1, 1], ignored=ignored,
    )  # fmt: skip


def add_site(run, polygon, label):
    polygon.srid = 4326
    return KnownSite.objects.create(
        run=run, label=label, class_name="site", geometry=MultiPolygon([polygon], srid=4326)
    )


def test_site_figures_match_a_hand_count(world):
    run, ortho = world.detection_run, world.orthophoto
    Detection.objects.filter(run=run).delete()
    lon, lat = ortho.footprint.centroid.coords
    a = add_site(run, square(lon, lat), "a")  # found by a strong detection
    b = add_site(run, square(lon + 0.001, lat), "b")  # found only by a weak one
    c = add_site(run, square(lon + 0.002, lat), "c")  # never found
    strong = add_detection(run, square(lon + 0.00002, lat), 0.9)  # covers most of a
    weak = add_detection(run, square(lon + 0.001, lat + 0.00005), 0.4)  # 75% of b
    false = add_detection(run, square(lon - 0.003, lat), 0.7)  # nothing there
    add_detection(run, square(lon + 0.002, lat), 0.95, ignored=True)  # on c, but in an ignore zone
    sliver = add_detection(run, Polygon.from_bbox((lon + 0.00019, lat, lon + 0.0003, lat + 0.0002)), 0.8)
    # The sliver overlaps a by 0.00001 of its 0.00011 width: under half of the smaller area, so not a match.

    figures = site_figures(run, share=0.5, target_recall=0.6, threshold=0.5)
    assert figures is not None
    assert (figures["sites"], figures["found"], figures["recall"]) == (3, 1, pytest.approx(1 / 3, abs=1e-4))
    assert (figures["detections"], figures["true"], figures["false"]) == (3, 1, 2)
    assert figures["precision"] == pytest.approx(1 / 3, abs=1e-4)
    area = figures["area_km2"]
    assert area == pytest.approx(160 * 120 * 0.04 / 1e6, rel=0.01)  # the orthophoto: 160 x 120 px of 0.2 m
    assert figures["false_per_km2"] == pytest.approx(2 / area, rel=1e-3)
    assert figures["missed_sites"] == [b.pk, c.pk] and figures["false_detections"] == sorted([false.pk, sliver.pk])
    # The curve: one point per score; recall only grows as the threshold falls.
    assert [p["threshold"] for p in figures["curve"]] == [0.9, 0.8, 0.7, 0.4]
    assert [p["recall"] for p in figures["curve"]] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3], abs=1e-4)
    assert figures["curve"][-1]["precision"] == pytest.approx(2 / 4)
    assert figures["threshold_for_target"] == 0.4  # recall 2/3 >= 0.6 first at 0.4
    assert set(KnownSite.objects.filter(run=run, found=True).values_list("pk", flat=True)) == {a.pk}
    assert strong.pk not in figures["false_detections"] and weak.pk not in figures["false_detections"]
    # A laxer rule counts the sliver as finding a.
    lax = site_figures(run, share=0.05, target_recall=0.99, threshold=0.5)
    assert lax["false"] == 1 and lax["threshold_for_target"] is None


def test_known_sites_off_the_orthophotos_are_refused(world):
    far = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {}, "geometry": json.loads(square(2.0, 48.0).geojson)}],
    }
    with pytest.raises(ApplicationError, match="None of the 1 known sites lies on the ground"):
        known_sites_read(json.dumps(far).encode(), [world.orthophoto])
    lon, lat = world.orthophoto.footprint.centroid.coords
    here = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": 7, "properties": {}, "geometry": json.loads(square(lon, lat).geojson)},
        far["features"][0],
    ]}  # fmt: skip
    sites = known_sites_read(json.dumps(here).encode(), [world.orthophoto])
    assert len(sites) == 1 and sites[0][1] == "site" and "7" in sites[0][0]
    with pytest.raises(ApplicationError, match="not a GeoJSON FeatureCollection"):
        known_sites_read(b"[1, 2]", [world.orthophoto])


def test_a_run_with_known_sites_off_its_orthophotos_is_refused_over_the_api(world):
    far = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {}, "geometry": json.loads(square(2.0, 48.0).geojson)}],
    }
    client = world.client("owner")
    body = {"model": world.model.pk, "orthophotos": [world.orthophoto.pk], "known_sites": far}
    response = client.post("/api/detection-runs/", body, format="json")
    assert response.status_code == 400 and "known_sites" in response.json()["errors"]
