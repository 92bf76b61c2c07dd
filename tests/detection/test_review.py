"""Reviewing a detection run through the API: confirm, reject, correct (box, class), undo, bulk decisions, sites the
model missed; who and when are kept with the model's own answer, every decision is in the run's audit trail, and
bad input changes nothing."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from detection.models import Detection

pytestmark = pytest.mark.django_db


def the_detection(world) -> Detection:
    return world.detection_run.detections.select_related("orthophoto").get()


def snapshot(detection: Detection) -> tuple:
    detection.refresh_from_db()
    return (
        detection.state, detection.pixel_box, detection.class_name, detection.label,
        getattr(detection.geometry, "wkt", None), detection.area_m2, detection.model_box, detection.model_class,
        detection.reviewed_by_id,
    )  # fmt: skip


def test_a_reviewer_confirms_rejects_and_undoes_with_who_and_when_in_the_audit_trail(world):
    detection, client = the_detection(world), world.client("owner")
    url = f"/api/detections/{detection.pk}/"
    confirmed = client.patch(url, {"state": "confirmed"}, format="json")
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "confirmed"
    assert confirmed.json()["reviewed_by"] == world.users["owner"].pk and confirmed.json()["reviewed_at"]
    assert client.patch(url, {"state": "rejected"}, format="json").json()["state"] == "rejected"
    assert client.patch(url, {"state": "new"}, format="json").json()["state"] == "new"  # a decision can change
    trail = AuditEvent.objects.filter(object_type="trainingrun", object_id=world.detection_run.pk, action="review")
    assert [e.detail["changes"]["state"] for e in trail.order_by("id")] == [
        ["new", "confirmed"], ["confirmed", "rejected"], ["rejected", "new"],
    ]  # fmt: skip
    assert {e.actor_id for e in trail} == {world.users["owner"].pk}


def test_a_correction_moves_the_polygon_and_keeps_the_models_answer(world):
    from models_registry.models import TrainedModel

    TrainedModel.objects.filter(pk=world.model.pk).update(class_names=["waste", "rubble"])
    detection, client = the_detection(world), world.client("publisher")
    before_polygon, before_box = detection.geometry, list(detection.pixel_box)
    corrected = client.patch(
        f"/api/detections/{detection.pk}/",
        {"pixel_box": [10, 12, 40, 52], "class_name": "rubble"},
        format="json",
    )
    assert corrected.status_code == 200, corrected.json()
    body = corrected.json()
    assert body["state"] == "confirmed" and body["pixel_box"] == [10, 12, 40, 52]
    assert body["model_box"] == before_box and body["model_class"] == "waste" and body["label"] == 1
    detection.refresh_from_db()
    # The world's orthophoto has 0.2 m pixels: a 30 x 40 px box is 48 m², its polygon where the pixels are.
    assert detection.area_m2 == pytest.approx(30 * 40 * 0.04, rel=0.01)
    assert not detection.geometry.equals(before_polygon)
    assert before_polygon.intersects(detection.geometry)
    # A second correction keeps the model's first answer.
    client.patch(f"/api/detections/{detection.pk}/", {"pixel_box": [11, 12, 40, 52]}, format="json")
    detection.refresh_from_db()
    assert detection.model_box == before_box and detection.pixel_box == [11, 12, 40, 52]


def test_bad_review_input_is_refused_and_changes_nothing(world):
    detection, client = the_detection(world), world.client("owner")
    url = f"/api/detections/{detection.pk}/"
    before = snapshot(detection)
    far = client.patch(url, {"pixel_box": [100, 90, 150, 118]}, format="json")  # in the orthophoto, off the crop
    assert far.status_code == 400 and "outside the detection's crop" in far.json()["message"]
    unknown = client.patch(url, {"class_name": "spaceship"}, format="json")
    assert unknown.status_code == 400 and "not a class of the run's model" in unknown.json()["message"]
    empty = client.patch(url, {"pixel_box": [10, 10, 10, 30]}, format="json")
    assert empty.status_code == 400 and "empty" in empty.json()["message"]
    assert client.patch(url, {}, format="json").status_code == 400  # nothing to decide
    assert client.patch(url, {"state": "maybe"}, format="json").status_code == 400
    hidden = world.client("other_trainer").patch(url, {"state": "confirmed"}, format="json")
    assert hidden.status_code == 404  # another Trainer's run: as if it did not exist
    assert snapshot(detection) == before
    assert not AuditEvent.objects.filter(action="review").exists()


def test_bulk_decisions_name_the_runs_own_detections_only(world):
    run, client = world.detection_run, world.client("owner")
    mine = the_detection(world)
    extra = Detection.objects.create(
        run=run, orthophoto=mine.orthophoto, label=0, class_name=mine.class_name, score=0.4,
        geometry=mine.geometry, pixel_box=[50, 50, 70, 70],
    )  # fmt: skip
    decided = client.post(
        f"/api/detection-runs/{run.pk}/review/", {"detections": [mine.pk, extra.pk], "state": "rejected"}, format="json"
    )
    assert decided.status_code == 200 and decided.json() == {"decided": 2, "state": "rejected"}
    assert set(run.detections.values_list("state", flat=True)) == {"rejected"}
    refused = client.post(
        f"/api/detection-runs/{run.pk}/review/", {"detections": [mine.pk, 999_999], "state": "confirmed"}, format="json"
    )
    assert refused.status_code == 400 and "no such detection: 999999" in str(refused.json()["errors"])
    assert set(run.detections.values_list("state", flat=True)) == {"rejected"}  # nothing changed


def test_a_reviewer_draws_a_site_the_model_missed(world):
    run, client = world.detection_run, world.client("owner")
    body = {"run": run.pk, "orthophoto": world.orthophoto.pk, "pixel_box": [100, 60, 140, 100]}
    added = client.post("/api/detections/", {**body, "class_name": world.model.class_names[0]}, format="json")
    assert added.status_code == 201, added.json()
    row = Detection.objects.get(pk=added.json()["id"])
    assert (row.origin, row.state, row.score, row.reviewed_by) == ("reviewer", "confirmed", 1.0, world.users["owner"])
    assert row.geometry is not None and row.area_m2 == pytest.approx(40 * 40 * 0.04, rel=0.01)
    outside = client.post(
        "/api/detections/",
        {**body, "pixel_box": [150, 100, 170, 130], "class_name": world.model.class_names[0]},
        format="json",
    )
    assert outside.status_code == 400 and "outside the orthophoto" in outside.json()["message"]
    from training.models import TrainingRun

    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    running = client.post("/api/detections/", {**body, "class_name": world.model.class_names[0]}, format="json")
    assert running.status_code == 400 and "finished detection run" in running.json()["message"]
    assert run.detections.count() == 2


def test_a_class_filter_with_a_nul_byte_matches_nothing(world):
    # PostgreSQL refuses NUL in text: the filter must not reach it (it was a 500).
    response = world.client("owner").get(f"/api/detection-runs/{world.detection_run.pk}/detections/?class=%00")
    assert response.status_code == 200 and response.json()["results"] == []


def test_without_known_sites_the_review_gives_the_site_figures(world):
    run, client = world.detection_run, world.client("owner")
    strong = the_detection(world)  # score 0.9
    make = dict(run=run, orthophoto=strong.orthophoto, label=0, class_name=strong.class_name, geometry=strong.geometry)
    wrong = Detection.objects.create(score=0.7, pixel_box=[50, 50, 70, 70], **make)
    Detection.objects.create(score=0.4, pixel_box=[90, 50, 110, 70], **make)  # left undecided
    client.patch(f"/api/detections/{strong.pk}/", {"state": "confirmed"}, format="json")
    client.patch(f"/api/detections/{wrong.pk}/", {"state": "rejected"}, format="json")
    drawn = {"run": run.pk, "orthophoto": strong.orthophoto_id, "pixel_box": [120, 80, 150, 110]}
    client.post("/api/detections/", {**drawn, "class_name": strong.class_name}, format="json")
    run.refresh_from_db()
    review = run.export_summary["review"]
    assert run.export_summary["detections"] == 1  # the worker's own summary is kept beside it
    # Sites: the confirmed detection and the drawn one; the model found one of them (recall 1/2) and was wrong
    # once (precision 1/2); one detection is not reviewed yet.
    assert (review["sites"], review["found"], review["recall"], review["drawn"]) == (2, 1, 0.5, 1)
    assert (review["detections"], review["false"], review["precision"], review["undecided"]) == (2, 1, 0.5, 1)
    assert [(p["threshold"], p["recall"], p["precision"]) for p in review["curve"]] == [
        (0.9, 0.5, 1.0),
        (0.7, 0.5, 0.5),
    ]
    assert review["false_per_km2"] == pytest.approx(1 / review["area_km2"], rel=1e-3)
    page = world.staff_client("owner").get(f"/admin/detection/detectionrun/{run.pk}/change/").content.decode()
    assert "reviewed sites (confirmed, and drawn by reviewers)" in page and "1 of 2 reviewed sites" in page
    assert f"/detection/detections/{wrong.pk}/crop.jpg" in page  # the rejected one, as a false detection
