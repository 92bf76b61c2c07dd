"""Detection runs end to end with the model the pipeline test trained, on orthophotos built here with waste piles
painted at known places: a rotated UTM orthophoto with a nodata corner (API), two overlapping parts of one area in
EPSG:3857 (command line, GeoPackage out), a photo without georeferencing (a multipart upload), and a cancel."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import psutil
from django.contrib.gis.geos import Polygon
from django.core.management import call_command

from detection.models import Detection
from engine.geometry import map_to_pixel, pixel_to_map
from models_registry.models import TrainedModel
from tests.conftest import wait_for
from tests.detection.scenes import rotated, scene, write_geotiff
from tests.e2e.model_checks import api_client
from tests.e2e.waiting import finished
from training.models import TrainingRun

UTM_GT = rotated((500_000.0, 5_100_000.0), 0.2, 12.0)
# Piles across the window seams (tile 256, step 205: overlaps at 205..256, 410..461, 615..666) and a corner.
PILES = [(390, 300, 84, 70), (180, 590, 70, 80), (600, 620, 66, 60), (700, 200, 60, 60), (420, 780, 70, 70)]
PART_PILES = [(100, 100, 70, 70), (620, 300, 70, 70), (1100, 500, 70, 60), (400, 560, 80, 70)]
MERCATOR_GT = [1_611_000.0, 0.28, 0.0, 5_780_000.0, 0.0, -0.28]


def in_srid(geometry: Polygon | None, srid: int) -> Polygon:
    """A detection's polygon in another CRS."""
    assert geometry is not None
    moved = geometry.transform(srid, clone=True)
    assert isinstance(moved, Polygon)
    return moved


def iou(a: Polygon, b: Polygon) -> float:
    return a.intersection(b).area / a.union(b).area


def painted_polygon(gt: list[float], box: tuple[float, float, float, float], srid: int) -> Polygon:
    x1, y1, x2, y2 = box
    corners = [pixel_to_map(gt, px, py) for px, py in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
    return Polygon([*corners, corners[0]], srid=srid)


def one_detection_each(detections: list[Detection], painted: list[Polygon], srid: int) -> None:
    """Every painted pile is found by exactly one detection (IoU >= 0.5), and nothing else is found."""
    found = [in_srid(d.geometry, srid) for d in detections]
    for pile in painted:
        matches = [g for g in found if iou(g, pile) >= 0.5]
        assert len(matches) == 1, (pile.extent, [g.extent for g in found])
    assert len(found) == len(painted), [g.extent for g in found]


def known_sites(polygons: list[Polygon], srid: int) -> dict:
    """The area's known sites as a municipality keeps them: GeoJSON in its own CRS, no class."""
    return {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": f"EPSG:{srid}"}},
        "features": [
            {"type": "Feature", "id": i, "properties": {}, "geometry": json.loads(p.geojson)}
            for i, p in enumerate(polygons)
        ],
    }


def check_rotated_utm_over_the_api(model: TrainedModel, user, tmp_path: Path) -> None:
    picture = scene(900, 900, PILES, seed=5)
    pixels = picture.pixels.copy()
    pixels[:300, :300] = 0  # a nodata corner: at least one whole window
    path = write_geotiff(tmp_path / "rotated-utm.tif", pixels, srid=32633, geotransform=UTM_GT, nodata=0)
    client = api_client(user)
    ortho = client.post("/api/orthophotos/", {"dataset": model.dataset_id, "file": path.open("rb")}).json()
    # An ignore zone over the last pile: still found, flagged.
    last = in_srid(painted_polygon(UTM_GT, picture.boxes[-1], 32633), 4326)
    zone = json.loads(last.buffer(0.00001).geojson)
    made = client.post(
        "/api/ignore-zones/", {"dataset": model.dataset_id, "name": "depot", "geometry": zone}, format="json"
    )
    assert made.status_code == 201, made.json()
    # Known sites: piles 0-2, and a site where nothing lies; pile 3 is not on the register (a false detection
    # to the figures), pile 4 is in the ignore zone (left out). By hand: 4 sites, 3 found; 4 detections counted,
    # 3 true, 1 false over 900 x 900 px of 0.2 m = 0.0324 km².
    painted = [painted_polygon(UTM_GT, b, 32633) for b in picture.boxes]
    empty = painted_polygon(UTM_GT, (700, 450, 760, 510), 32633)
    sites = known_sites([*painted[:3], empty], 32633)
    # Piles were painted: the other class is left out (a run keeps the classes it is asked for).
    parameters = {"score_threshold": 0.5, "target_recall": 0.75, "classes": ["waste_pile"]}
    response = client.post(
        "/api/detection-runs/",
        {"model": model.pk, "orthophotos": [ortho["id"]], "parameters": parameters, "known_sites": sites},
        format="json",
    )
    assert response.status_code == 201, response.json()
    run = finished(response.json()["id"])
    assert run.status == "succeeded", f"{run.error_message}\n{run.log_tail[-3000:]}"
    body = client.get(f"/api/detection-runs/{run.pk}/").json()
    summary = body["summary"]
    assert body["percent"] == 100.0 and body["windows_total"] == body["windows_done"] == summary["windows"] == 25
    assert summary["skipped_nodata"] >= 1 and summary["coordinates"] == "map" and summary["ignored"] == 1
    assert set(summary["by_class"]) == {"waste_pile"}
    detections = list(Detection.objects.filter(run=run))
    one_detection_each(detections, [painted_polygon(UTM_GT, b, 32633) for b in picture.boxes], 32633)
    assert sum(d.ignored for d in detections) == 1
    for d in detections:
        # Georeferencing: the stored polygon is the rotated pixel box, corner for corner, within 0.5 px.
        utm = in_srid(d.geometry, 32633)
        corners = [map_to_pixel(UTM_GT, x, y) for x, y in utm.coords[0][:4]]
        x1, y1, x2, y2 = d.pixel_box
        for (px, py), (ex, ey) in zip(corners, ((x1, y1), (x2, y1), (x2, y2), (x1, y2)), strict=True):
            assert abs(px - ex) < 0.5 and abs(py - ey) < 0.5, (corners, d.pixel_box)
        assert abs(d.area_m2 - (x2 - x1) * (y2 - y1) * 0.04) / d.area_m2 < 0.01
    geo = client.get(f"/api/detection-runs/{run.pk}/detections/", {"as": "geojson", "ignored": "false"}).json()
    assert geo["count"] == len(PILES) - 1
    figures = summary["sites"]
    assert (figures["sites"], figures["found"], figures["recall"]) == (4, 3, 0.75), figures
    assert (figures["detections"], figures["true"], figures["false"], figures["precision"]) == (4, 3, 1, 0.75)
    assert abs(figures["area_km2"] - 0.0324) < 0.0003 and abs(figures["false_per_km2"] - 1 / 0.0324) < 0.5
    scores = sorted(d.score for d in detections if not d.ignored and iou(in_srid(d.geometry, 32633), painted[3]) < 0.5)
    assert figures["threshold_for_target"] == round(scores[0], 4), (figures["curve"], scores)
    listed = client.get(f"/api/detection-runs/{run.pk}/sites/").json()
    assert [f["properties"]["found"] for f in listed["features"]] == [True, True, True, False]
    assert figures["missed_sites"] == [listed["features"][3]["id"]] and len(figures["false_detections"]) == 1


def check_two_parts_on_the_command_line(model: TrainedModel, tmp_path: Path) -> None:
    picture = scene(1300, 700, PART_PILES, seed=9)
    left = write_geotiff(tmp_path / "part-1.tif", picture.pixels[:, :800].copy(), srid=3857, geotransform=MERCATOR_GT)
    shifted = [MERCATOR_GT[0] + 500 * 0.28, *MERCATOR_GT[1:]]
    right = write_geotiff(tmp_path / "part-2.tif", picture.pixels[:, 500:].copy(), srid=3857, geotransform=shifted)
    out = io.StringIO()
    gpkg = tmp_path / "sites.gpkg"
    register = tmp_path / "known.geojson"
    register.write_text(json.dumps(known_sites([painted_polygon(MERCATOR_GT, b, 3857) for b in picture.boxes], 3857)))
    call_command(
        "detect",
        str(left),
        str(right),
        "--model",
        str(model.pk),
        "--dataset",
        str(model.dataset_id),
        "--score-threshold",
        "0.5",
        "--classes",
        "waste_pile",
        "--out",
        str(gpkg),
        "--known-sites",
        str(register),
        stdout=out,
    )
    assert f"{len(PART_PILES)} detections" in out.getvalue(), out.getvalue()
    assert "found 4 (site recall 100.0%), precision 100.0%, 0 false detections" in out.getvalue(), out.getvalue()
    run = TrainingRun.objects.filter(kind="detect").latest("id")
    detections = list(Detection.objects.filter(run=run))
    # The pile in the strip both parts cover (x 620..690 of the whole) is one detection.
    one_detection_each(detections, [painted_polygon(MERCATOR_GT, b, 3857) for b in picture.boxes], 3857)
    info = subprocess.run(["ogrinfo", "-so", "-al", str(gpkg)], capture_output=True, text=True, check=True).stdout
    assert f"Feature Count: {len(PART_PILES)}" in info


def check_a_plain_photo_in_pixels(model: TrainedModel, user, tmp_path: Path) -> None:
    picture = scene(600, 450, [(100, 120, 70, 70), (400, 250, 66, 72)], seed=11)
    path = write_geotiff(tmp_path / "drone.tif", picture.pixels, srid=None, geotransform=None)
    client = api_client(user)
    response = client.post(
        "/api/detection-runs/",
        {
            "model": model.pk,
            "dataset": model.dataset_id,
            "files": [path.open("rb")],
            "parameters": json.dumps({"score_threshold": 0.5, "classes": ["waste_pile"]}),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    run = finished(response.json()["id"])
    assert run.status == "succeeded" and run.export_summary["coordinates"] == "pixel", run.error_message
    rows = client.get(f"/api/detection-runs/{run.pk}/detections/").json()["results"]
    assert len(rows) == 2 and all(r["geometry"] is None and r["coordinates"] == "pixel" for r in rows)
    for (x1, y1, x2, y2), row in zip(sorted(picture.boxes), sorted(rows, key=lambda r: r["pixel_box"]), strict=True):
        bx1, by1, bx2, by2 = row["pixel_box"]
        inter = max(0, min(x2, bx2) - max(x1, bx1)) * max(0, min(y2, by2) - max(y1, by1))
        assert inter / ((x2 - x1) * (y2 - y1) + (bx2 - bx1) * (by2 - by1) - inter) >= 0.5


def check_cancel_mid_run(model: TrainedModel, user, tmp_path: Path) -> None:
    picture = scene(2600, 2600, [], seed=13)
    path = write_geotiff(tmp_path / "large.tif", picture.pixels, srid=32633, geotransform=UTM_GT)
    client = api_client(user)
    ortho = client.post("/api/orthophotos/", {"dataset": model.dataset_id, "file": path.open("rb")}).json()
    run_id = client.post(
        "/api/detection-runs/", {"model": model.pk, "orthophotos": [ortho["id"]]}, format="json"
    ).json()["id"]
    running = wait_for(
        lambda: TrainingRun.objects.filter(pk=run_id, status="running", current_iter__gte=2).first(),
        timeout=120,
        message="the detection run to be past its first windows",
    )
    child = running.training_pid
    assert child and running.current_iter < running.max_iters
    assert client.post(f"/api/detection-runs/{run_id}/cancel/").status_code == 200
    run = finished(run_id, timeout=60)
    assert run.status == "cancelled"
    wait_for(lambda: not psutil.pid_exists(child), timeout=20, message="the detection child to be gone")
    assert not Detection.objects.filter(run_id=run_id).exists()


def check_detection_runs(model: TrainedModel, user, tmp_path: Path) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    check_rotated_utm_over_the_api(model, user, tmp_path)
    check_two_parts_on_the_command_line(model, tmp_path)
    check_a_plain_photo_in_pixels(model, user, tmp_path)
    check_cancel_mid_run(model, user, tmp_path)
