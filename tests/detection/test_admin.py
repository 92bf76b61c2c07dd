"""Detection runs in the console: who sees and starts what (a matrix), the run's map, its figures against known
sites with crops, the list of detections, the start form's refusals, and the models' compare page."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.contrib.gis.gdal import GDALRaster
from django.contrib.gis.geos import MultiPolygon, Polygon
from django.core.files.storage import default_storage
from PIL import Image

from datasets.models import Orthophoto
from detection.crops import crop_name, detection_target
from detection.models import Detection, KnownSite
from detection.sites import site_figures
from tests.detection.scenes import rotated, write_geotiff
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

RUN_PAGE = "/admin/detection/detectionrun/{run}/change/"
START = "/admin/detection/detectionrun/start/?model={model}"


def judged(world):
    """The world's detection run given two known sites: one under its detection, one elsewhere (missed), and a
    second, false detection; its figures computed as the worker does."""
    run, ortho = world.detection_run, world.orthophoto
    lon, lat = ortho.footprint.centroid.coords
    found = Detection.objects.get(run=run)
    Detection.objects.filter(pk=found.pk).update(geometry=Polygon.from_bbox((lon, lat, lon + 2e-5, lat + 2e-5)))
    false = Detection.objects.create(
        run=run, orthophoto=ortho, label=0, class_name=found.class_name, score=0.7,
        geometry=Polygon.from_bbox((lon - 6e-5, lat - 6e-5, lon - 4e-5, lat - 4e-5)), area_m2=5.0,
        pixel_box=[100, 80, 120, 100],
    )  # fmt: skip
    for label, box in (
        ("by the road", (lon, lat, lon + 2e-5, lat + 2e-5)),
        ("behind the barn", (lon + 4e-5, lat, lon + 5e-5, lat + 1e-5)),
    ):
        KnownSite.objects.create(
            run=run, label=label, class_name="site", geometry=MultiPolygon([Polygon.from_bbox(box)], srid=4326)
        )
    found.refresh_from_db()
    figures = site_figures(run, share=0.5, target_recall=0.5, threshold=0.3)
    TrainingRun.objects.filter(pk=run.pk).update(export_summary={"detections": 2, "ignored": 0, "sites": figures})
    run.refresh_from_db()
    return run, found, false, figures


@pytest.mark.parametrize(
    "role, sees, starts",
    [
        ("owner", True, True),
        ("other_trainer", False, False),  # the model is the owner's: hidden, so no start page either
        ("viewer", False, False),
        ("publisher", True, True),
        ("admin", True, True),
    ],
)
def test_pages_follow_visibility_and_the_detection_permission(world, role, sees, starts):
    client = world.staff_client(role)
    run, detection = world.detection_run, Detection.objects.get(run=world.detection_run)
    listing = client.get("/admin/detection/detectionrun/").content.decode()
    assert (RUN_PAGE.format(run=run.pk) in listing) is sees
    assert (client.get(RUN_PAGE.format(run=run.pk)).status_code == 200) is sees
    detections = client.get(f"/admin/detection/detection/?run__id__exact={run.pk}").content.decode()
    assert (f"/admin/detection/detection/{detection.pk}/change/" in detections) is sees
    crop = client.get(f"/detection/detections/{detection.pk}/crop.jpg")
    assert crop.status_code == (200 if sees else 404)
    start = client.get(START.format(model=world.model.pk))
    assert start.status_code == (200 if starts else 403 if role == "viewer" else 404)
    model_page = client.get(f"/admin/models_registry/trainedmodel/{world.model.pk}/change/")
    if model_page.status_code == 200:
        assert ('id="detect-link"' in model_page.content.decode()) is starts


def test_run_page_draws_the_map_the_figures_and_the_crops(world):
    run, found, false, figures = judged(world)
    page = world.staff_client("owner").get(RUN_PAGE.format(run=run.pk)).content.decode()
    data = json.loads(page.split('id="detection-map-data"', 1)[1].split(">", 1)[1].split("</script>", 1)[0])
    assert [d["id"] for d in data["detections"]] == [found.pk, false.pk]  # best first
    assert data["detections"][0]["ring"][0] == pytest.approx(list(found.geometry.exterior_ring.coords[0]))
    assert data["footprints"][0]["id"] == world.orthophoto.pk and data["coordinates"] == "map"
    assert sorted(s["found"] for s in data["sites"]) == [False, True]
    assert 'id="score-filter"' in page and 'class="class-filter"' in page
    assert f"/admin/models_registry/trainedmodel/{world.model.pk}/change/" in page  # the model it ran
    # Figures at the run's threshold, the curves, the missed site and the false detection with their crops.
    assert figures["found"] == 1 and figures["false"] == 1
    table = page.split('id="site-figures"', 1)[1].split("</table>", 1)[0]
    assert "1 (site recall 0.500)" in table and "2</td>" in table
    assert page.count("<polyline") >= 3  # precision-recall, and recall and precision by threshold
    missed = KnownSite.objects.get(run=run, found=False)
    assert f"/detection/sites/{missed.pk}/crop.jpg" in page
    assert f"/detection/detections/{false.pk}/crop.jpg" in page
    assert f"/api/detection-runs/{run.pk}/download/?as=gpkg" in page


def test_a_crop_is_cut_around_the_box_outlined_and_cached(world, tmp_path):
    # An orthophoto of one colour with a white square: the crop shows the square, outlined in red, in its middle.
    pixels = np.full((600, 800, 3), 60, np.uint8)
    pixels[300:340, 500:540] = 255
    path = write_geotiff(tmp_path / "crop.tif", pixels, srid=32633, geotransform=rotated((500_000, 5_100_000), 0.5, 20))
    from datasets.orthophotos import orthophoto_store

    ortho = orthophoto_store(dataset=world.dataset, source=path, name="crop.tif", created_by=world.users["admin"])
    detection = Detection.objects.create(
        run=world.detection_run, orthophoto=ortho, label=0, class_name="waste", score=0.8,
        pixel_box=[500, 300, 540, 340],
    )  # fmt: skip
    client = world.staff_client("owner")
    response = client.get(f"/detection/detections/{detection.pk}/crop.jpg")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    picture = np.array(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
    height, width = picture.shape[:2]
    assert max(width, height) <= 320
    # The window is the box with its own size on every side (120 px), so the square fills the middle third.
    middle = picture[height // 3 + 8 : 2 * height // 3 - 8, width // 3 + 8 : 2 * width // 3 - 8]
    assert middle.mean() > 230 and picture[:20, :20].mean() < 90
    red = (picture[..., 0] > 180) & (picture[..., 1] < 110) & (picture[..., 2] < 110)
    assert red.sum() > 100  # the outline
    cached = Path(default_storage.path(crop_name(world.detection_run.pk, detection_target(detection))))
    first = cached.stat().st_mtime_ns
    assert client.get(f"/detection/detections/{detection.pk}/crop.jpg").status_code == 200
    assert cached.stat().st_mtime_ns == first  # drawn once


def test_detections_list_shows_crops_best_first(world):
    run, found, false, _ = judged(world)
    page = world.staff_client("owner").get(f"/admin/detection/detection/?run__id__exact={run.pk}").content.decode()
    assert page.index(f"/detection/detections/{found.pk}/crop.jpg") < page.index(
        f"/detection/detections/{false.pk}/crop.jpg"
    )


def test_start_form_queues_a_run_with_the_chosen_parameters_and_known_sites(world):
    lon, lat = world.orthophoto.footprint.centroid.coords
    sites = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "id": "s1", "properties": {}, "geometry": json.loads(
                Polygon.from_bbox((lon, lat, lon + 1e-5, lat + 1e-5)).geojson)}
        ],
    }  # fmt: skip
    upload = io.BytesIO(json.dumps(sites).encode())
    upload.name = "sites.geojson"
    client = world.staff_client("owner")
    before = TrainingRun.objects.count()
    response = client.post(
        START.format(model=world.model.pk),
        {
            "orthophotos": [world.orthophoto.pk],
            "known_sites": upload,
            "overlap": "0.3",
            "score_threshold": "0.2",
            "merge": "nms",
            "classes": [world.model.class_names[0]],
            "name": "from the admin",
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    run = TrainingRun.objects.get(name="from the admin")
    assert TrainingRun.objects.count() == before + 1 and run.kind == "detect"
    assert (run.parameters["overlap"], run.parameters["score_threshold"], run.parameters["merge"]) == (0.3, 0.2, "nms")
    assert run.parameters["orthophotos"] == [world.orthophoto.pk] and run.created_by == world.users["owner"]
    assert list(KnownSite.objects.filter(run=run).values_list("label", flat=True)) == ["feature 0 (id 's1')"]
    assert response["Location"] == RUN_PAGE.format(run=run.pk)


def test_start_form_refuses_bad_input_on_its_fields_and_keeps_nothing(world, tmp_path):
    client = world.staff_client("owner")
    assert world.orthophoto and world.detection_run  # the world's lazy objects exist before counting
    runs, orthos = TrainingRun.objects.count(), Orthophoto.objects.count()
    far = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": json.loads(
        Polygon.from_bbox((2.0, 48.0, 2.001, 48.001)).geojson)}]}  # fmt: skip
    upload = io.BytesIO(json.dumps(far).encode())
    upload.name = "sites.geojson"
    page = client.post(
        START.format(model=world.model.pk),
        {"orthophotos": [world.orthophoto.pk], "known_sites": upload, "score_threshold": "5"},
    ).content.decode()
    assert "errorlist" in page and "5.0 is out of range (float from 0.01 to 1)" in page
    # A 16-bit upload is refused with the hint, and its file is not kept.
    deep = tmp_path / "deep.tif"
    GDALRaster(
        {"driver": "GTiff", "name": str(deep), "width": 40, "height": 30, "srid": 32633, "datatype": 2,
         "bands": [{"data": list(range(1200))}]}
    ).geotransform = rotated((500_000, 5_100_000), 0.2, 0)  # fmt: skip
    with open(deep, "rb") as fh:  # by an administrator, who may add orthophotos to the shared dataset
        page = (
            world.staff_client("admin")
            .post(START.format(model=world.model.pk), {"files": fh, "dataset": world.dataset.pk})
            .content.decode()
        )
    assert "gdal_translate -ot Byte -scale" in page
    # Nothing chosen at all.
    assert (
        "Choose stored orthophotos or upload files"
        in client.post(START.format(model=world.model.pk), {}).content.decode()
    )
    assert (TrainingRun.objects.count(), Orthophoto.objects.count()) == (runs, orthos)


def test_compare_page_puts_site_figures_of_models_run_on_the_same_area_side_by_side(world, tmp_path):
    from detection.services import detection_run_create
    from tests.world import register_model
    from training.services import training_run_create

    run, _found, _false, figures = judged(world)
    trained = training_run_create(dataset=world.dataset, parameters={"epochs": 2}, created_by=world.users["owner"])
    TrainingRun.objects.filter(pk=trained.pk).update(status="succeeded")
    trained.refresh_from_db()
    other = register_model(trained, tmp_path)
    second = detection_run_create(model=other, orthophotos=[world.orthophoto], created_by=world.users["admin"])
    worse = {**figures, "recall": 0.25, "curve": [{**p, "recall": 0.25} for p in figures["curve"]]}
    TrainingRun.objects.filter(pk=second.pk).update(status="succeeded", export_summary={"sites": worse})
    client = world.staff_client("admin")
    page = client.get(f"/admin/models_registry/trainedmodel/compare/?ids={world.model.pk},{other.pk}", follow=True)
    text = page.content.decode()
    row = text.split("site recall · ", 1)[1].split("</tr>", 1)[0]
    assert "0.5" in row and "0.25" in row and row.index("0.5") < row.index("0.25")
    assert "Sites: precision against recall" in text


def review_data(page: str) -> dict:
    return json.loads(page.split('id="review-data"', 1)[1].split(">", 1)[1].split("</script>", 1)[0])


def test_the_review_queue_follows_its_filter_and_who_may_review(world):
    from guardian.shortcuts import assign_perm

    from detection.crops import crop_window

    run, found, false, _ = judged(world)
    Detection.objects.filter(pk=false.pk).update(state="rejected")
    url = f"/admin/detection/detectionrun/{run.pk}/review/"
    owner = world.staff_client("owner")
    page = owner.get(url).content.decode()
    data = review_data(page)
    assert [i["id"] for i in data["items"]] == [found.pk] and data["total"] == 1  # "new" ones by default
    assert data["items"][0]["window"] == list(crop_window(detection_target(found)))
    assert data["items"][0]["crop"].endswith("?for=review") and data["classes"] == world.model.class_names
    everything = review_data(owner.get(url + "?state=all&min_score=0.6&max_score=0.8").content.decode())
    assert [i["id"] for i in everything["items"]] == [false.pk]
    # Who: a role without the review permission that sees the run (shared with a viewer) gets 403; hidden is 404.
    assign_perm("training.view_trainingrun", world.users["viewer"], run)
    assert world.staff_client("viewer").get(url).status_code == 403
    assert world.staff_client("other_trainer").get(url).status_code == 404
    assert 'id="review-link"' in owner.get(RUN_PAGE.format(run=run.pk)).content.decode()


def test_the_review_crop_is_larger_and_leaves_the_box_to_the_page(world):
    detection = Detection.objects.get(run=world.detection_run)
    client = world.staff_client("owner")
    plain = client.get(f"/detection/detections/{detection.pk}/crop.jpg?for=review")
    outlined = client.get(f"/detection/detections/{detection.pk}/crop.jpg")
    plain_picture = Image.open(io.BytesIO(plain.content)).convert("RGB")
    outlined_picture = Image.open(io.BytesIO(outlined.content)).convert("RGB")
    assert plain_picture.size == outlined_picture.size  # the world's window is smaller than either side
    difference = np.abs(np.asarray(plain_picture, int) - np.asarray(outlined_picture, int)).max(axis=2)
    assert (difference > 100).sum() > 50  # only the outlined one has the red box
