"""Edits through the API: a dataset created with its classes, classes appended, images uploaded with their place
and time, images disabled (and so out of exports), boxes added, changed, disabled and deleted, each with the
services' validation and the dataset's object permissions."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.contrib.auth.models import User
from guardian.shortcuts import assign_perm

from datasets.models import Annotation, Dataset, DatasetImage
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db

POINT = {"type": "Point", "coordinates": [14.42, 50.08]}
SQUARE = {
    "type": "Polygon",
    "coordinates": [[[14.41, 50.07], [14.43, 50.07], [14.43, 50.09], [14.41, 50.09], [14.41, 50.07]]],
}


def image_file(name="tile.jpg", colour=(10, 200, 30), size=(64, 48)):
    upload = io.BytesIO(jpeg_bytes(*size, colour=colour))
    upload.name = name
    return upload


@pytest.fixture
def editor(world):
    """A user with no role who may change one dataset (object permissions), and that dataset."""
    user = User.objects.create_user("editor")
    client = world.client("anonymous")
    client.force_authenticate(user)
    created = world.client("admin").post(
        "/api/datasets/", {"name": "survey 2026", "classes": ["waste", "tyres"]}, format="json"
    )
    dataset = Dataset.objects.get(pk=created.json()["id"])
    assign_perm("datasets.view_dataset", user, dataset)
    assign_perm("datasets.change_dataset", user, dataset)
    return client, dataset


def test_a_dataset_is_made_and_filled_through_the_api(world, editor):
    client, dataset = editor
    detail = client.get(f"/api/datasets/{dataset.pk}/").json()
    assert [(c["name"], c["category_id"]) for c in detail["classes"]] == [("waste", 1), ("tyres", 2)]

    added = client.post(f"/api/datasets/{dataset.pk}/classes/", {"classes": ["rubble"]}, format="json")
    assert added.status_code == 201 and [c["category_id"] for c in added.json()] == [3]
    clash = client.post(f"/api/datasets/{dataset.pk}/classes/", {"classes": ["Waste"]}, format="json")
    assert clash.status_code == 400 and "duplicate" in json.dumps(clash.json()["errors"])

    response = client.post(
        f"/api/datasets/{dataset.pk}/images/",
        {
            "image": image_file(),
            "location": json.dumps(POINT),
            "footprint": json.dumps(SQUARE),
            "captured_at": "2026-06-01T09:30:00+02:00",
        },
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["width"], body["height"], body["original_name"], body["annotation_count"]) == (64, 48, "tile.jpg", 0)
    image = DatasetImage.objects.get(pk=body["id"])
    assert image.location.coords == (14.42, 50.08) and image.footprint.extent == (14.41, 50.07, 14.43, 50.09)
    assert image.captured_at.isoformat() == "2026-06-01T07:30:00+00:00"
    assert client.get(f"/api/datasets/{dataset.pk}/").json()["extent"]["type"] == "Polygon"

    again = client.post(f"/api/datasets/{dataset.pk}/images/", {"image": image_file()}, format="multipart")
    assert again.status_code == 400 and again.json()["message"] == "This image is already in the dataset."
    for field, value, fragment in (
        ("image", io.BytesIO(b"not an image"), "not a readable image"),
        ("location", '{"type": "Point", "coordinates": [500, 0]}', "not a longitude and latitude"),
        ("location", '{"type": "Polygon"}', "GeoJSON Point object is expected"),
        ("footprint", "{not json", "not valid JSON"),
    ):
        if field == "image":
            value.name = "x.jpg"
            data = {"image": value}
        else:
            data = {"image": image_file(colour=(1, 2, 3)), field: value}
        refused = client.post(f"/api/datasets/{dataset.pk}/images/", data, format="multipart")
        assert refused.status_code == 400 and fragment in json.dumps(refused.json()), (field, refused.json())
    assert DatasetImage.objects.filter(dataset=dataset).count() == 1


def test_boxes_are_added_changed_disabled_and_deleted_with_the_services_rules(world, editor):
    client, dataset = editor
    image = client.post(f"/api/datasets/{dataset.pk}/images/", {"image": image_file()}, format="multipart").json()
    waste, tyres = dataset.classes.order_by("position")
    url = f"/api/images/{image['id']}/annotations/"

    box = client.post(url, {"dataset_class": waste.pk, "x": 1, "y": 2, "width": 10, "height": 12}, format="json")
    assert box.status_code == 201 and box.json()["category_id"] == 1 and box.json()["class_name"] == "waste"
    box_id = box.json()["id"]
    for payload, fragment in (
        ({"dataset_class": waste.pk, "x": 60, "y": 2, "width": 10, "height": 12}, "is not inside the 64x48 image"),
        ({"dataset_class": waste.pk, "x": 1, "y": 2, "width": 0, "height": 12}, "positive width"),
        ({"dataset_class": world.dataset.classes.first().pk, "x": 1, "y": 1, "width": 2, "height": 2}, "not a class"),
    ):
        refused = client.post(url, payload, format="json")
        assert refused.status_code == 400 and fragment in refused.json()["message"], refused.json()

    changed = client.patch(f"/api/annotations/{box_id}/", {"dataset_class": tyres.pk, "width": 20}, format="json")
    assert changed.status_code == 200 and (changed.json()["class_name"], changed.json()["width"]) == ("tyres", 20.0)
    outside = client.patch(f"/api/annotations/{box_id}/", {"x": 50}, format="json")
    assert outside.status_code == 400 and Annotation.objects.get(pk=box_id).x == 1.0  # unchanged
    assert client.patch(f"/api/annotations/{box_id}/", {"enabled": False}, format="json").json()["enabled"] is False
    assert [b["enabled"] for b in client.get(url).json()] == [False]
    assert client.delete(f"/api/annotations/{box_id}/").status_code == 204
    assert not Annotation.objects.filter(pk=box_id).exists() and client.get(url).json() == []


def test_a_disabled_image_stays_out_of_exports(world, editor):
    client, dataset = editor
    ids = [
        client.post(
            f"/api/datasets/{dataset.pk}/images/", {"image": image_file(colour=(i * 60, 9, 9))}, format="multipart"
        ).json()["id"]
        for i in range(3)
    ]
    assert client.patch(f"/api/images/{ids[1]}/", {"enabled": False}, format="json").json()["enabled"] is False
    moved = client.patch(f"/api/images/{ids[2]}/", {"location": POINT, "captured_at": None}, format="json")
    assert moved.status_code == 200 and moved.json()["location"] == POINT
    response = client.get(f"/api/datasets/{dataset.pk}/export/")
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        exported = {i["id"] for i in json.loads(archive.read("annotations.json"))["images"]}
    assert exported == {ids[0], ids[2]}


def test_edits_need_the_change_permission_on_that_dataset(world, editor):
    client, mine = editor
    other = world.dataset  # visible to the editor? no: no role, no object permission
    image = other.images.first()
    box = Annotation.objects.filter(image=image).first()
    assert client.get(f"/api/images/{image.pk}/").status_code == 404
    assert client.patch(f"/api/annotations/{box.pk}/", {"enabled": False}, format="json").status_code == 404
    assign_perm("datasets.view_dataset", client.handler._force_user, other)
    assert client.get(f"/api/images/{image.pk}/").status_code == 200
    for method, path, payload in (
        ("patch", f"/api/datasets/{other.pk}/", {"description": "x"}),
        ("post", f"/api/datasets/{other.pk}/classes/", {"classes": ["new"]}),
        ("patch", f"/api/images/{image.pk}/", {"enabled": False}),
        ("post", f"/api/images/{image.pk}/annotations/", {"dataset_class": 1, "x": 1, "y": 1, "width": 1, "height": 1}),
        ("patch", f"/api/annotations/{box.pk}/", {"enabled": False}),
        ("delete", f"/api/annotations/{box.pk}/", None),
    ):
        assert getattr(client, method)(path, payload, format="json").status_code == 403, path
    assert client.post("/api/datasets/", {"name": "n", "classes": ["a"]}, format="json").status_code == 403
    assert client.patch(f"/api/datasets/{mine.pk}/", {"description": "mine"}, format="json").status_code == 200
    assert Annotation.objects.get(pk=box.pk).enabled and image.enabled


def test_a_new_dataset_is_validated_by_the_service(world):
    admin = world.client("admin")
    for body, fragment in (
        ({"name": "shared", "classes": ["a"]}, "already exists"),
        ({"name": "x", "classes": ["a", "A "]}, "duplicate"),
        ({"name": "x", "classes": []}, "classes"),
    ):
        refused = admin.post("/api/datasets/", body, format="json")
        assert refused.status_code == 400 and fragment in json.dumps(refused.json()), refused.json()
    created = admin.post("/api/datasets/", {"name": "x", "classes": ["a", "b"], "description": "d"}, format="json")
    assert created.status_code == 201 and created.json()["image_count"] == 0
    assert created.json()["created_by"] == "admin"
