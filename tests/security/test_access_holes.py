"""Holes a review found (issue 10), each tried as an attacker would, through the real interface: existence
oracles, 500s, the browsable API, admin edits across datasets. Limits are in test_security_limits.py."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from datasets.models import Annotation, DatasetImage
from models_registry.models import TrainedModel
from models_registry.services import trained_model_register_base
from tests.world import inspection
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def staff(world, role) -> Client:
    return world.staff_client(role)


@pytest.fixture
def private_base(world, tmp_path):
    """A base model the owner registered and nobody else may see."""
    path = tmp_path / "private.pth"
    path.write_bytes(b"private weights")
    owner = world.users["owner"]
    from django.contrib.auth.models import Permission

    owner.user_permissions.add(Permission.objects.get(codename="add_trainedmodel"))
    owner = type(owner).objects.get(pk=owner.pk)  # permission cache
    return trained_model_register_base(
        name="owner's secret base",
        architecture="retinanet_r18_tiny",
        checkpoint=path,
        class_names=world.dataset.class_names(),
        inspection=inspection(1),
        created_by=owner,
    )


# --- 3. existence oracles ---------------------------------------------------------------------------------------


def test_a_hidden_base_model_and_a_missing_one_get_the_same_answer(world, private_base):
    client = world.client("other_trainer")
    missing = TrainedModel.objects.order_by("-pk").first().pk + 1000
    answers = [
        client.post("/api/training-runs/", {"dataset": world.dataset.pk, "base_model": pk}, format="json")
        for pk in (private_base.pk, missing)
    ]
    assert [a.status_code for a in answers] == [400, 400]
    assert (
        answers[0].json()
        == answers[1].json()
        == {"code": "invalid", "message": "Invalid input.", "errors": {"base_model": ["No such model."]}}
    )
    assert TrainingRun.objects.count() == 1


@pytest.mark.parametrize(
    "path, field",
    [
        ("/api/training-runs/", "base_model"),
        ("/api/trained-models/", "base_model"),
        ("/api/training-runs/", "dataset"),
        ("/api/trained-models/", "source_run"),
    ],
)
def test_filtering_by_a_hidden_id_looks_like_filtering_by_a_missing_one(world, private_base, path, field):
    client = world.client("other_trainer")
    hidden = {"base_model": private_base.pk, "dataset": world.dataset.pk, "source_run": world.run.pk}[field]
    if field == "source_run":
        path, field = "/api/trained-models/", "source_run"
    hidden_answer = client.get(f"{path}?{field}={hidden}")
    missing_answer = client.get(f"{path}?{field}={hidden + 10_000}")
    assert hidden_answer.status_code == missing_answer.status_code
    if field != "dataset":  # the dataset is visible to everyone; only hidden objects must look missing
        assert hidden_answer.json()["count"] == missing_answer.json()["count"] == 0
    assert client.get(f"{path}?{field}=abc").status_code in (200, 400)  # never a 500


def test_a_published_model_does_not_reveal_its_private_run_or_base(world, private_base, tmp_path):
    from tests.world import register_model
    from training.services import training_run_create

    run = training_run_create(
        dataset=world.dataset,
        base_model=private_base,
        parameters={"epochs": 1},
        created_by=world.users["owner"],
        name="private fine-tune",
    )
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    run.refresh_from_db()
    model = register_model(run, tmp_path)
    TrainedModel.objects.filter(pk=model.pk).update(is_published=True)

    body = world.client("other_trainer").get(f"/api/trained-models/{model.pk}/").json()
    assert body["base_model"] is None and body["source_run"] is None and body["dataset"] == world.dataset.pk
    owner_view = world.client("owner").get(f"/api/trained-models/{model.pk}/").json()
    assert owner_view["base_model"] == private_base.pk and owner_view["source_run"] == run.pk

    admin = staff(world, "other_trainer")
    listing = admin.get("/admin/models_registry/trainedmodel/").content.decode()
    detail = admin.get(f"/admin/models_registry/trainedmodel/{model.pk}/change/").content.decode()
    for html in (listing, detail):
        assert "owner&#x27;s secret base" not in html and "owner's secret base" not in html
    assert "(not visible to you)" in detail and f"/admin/training/trainingrun/{run.pk}/" not in detail

    # The compare page shows the published models' metrics, not the private run's parameters.
    page = admin.get(f"/admin/models_registry/trainedmodel/compare/?ids={model.pk},{world.published.pk}", follow=True)
    html = page.content.decode()
    assert page.status_code == 200 and f"Model #{model.pk}" in html
    assert "<td>1</td>" not in html.split("epochs", 1)[1].split("</tr>", 1)[0]  # epochs=1 stays private


def test_admin_filters_list_only_visible_datasets(world, make_dataset, tmp_path):
    from django.contrib.auth.models import User
    from guardian.shortcuts import assign_perm

    from tests.world import register_model
    from training.services import training_run_create

    # A dataset private to the owner, with a model trained on it that everyone sees (published).
    secret = make_dataset(name="secret-site-dataset")
    run = training_run_create(dataset=secret, parameters={"epochs": 1}, name="on the secret dataset")
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    run.refresh_from_db()
    TrainedModel.objects.filter(pk=register_model(run, tmp_path).pk).update(is_published=True)
    # A staff user without a role who may see one dataset (and published models) only.
    solo = User.objects.create_user("solo", is_staff=True)
    assign_perm("datasets.view_dataset", solo, world.dataset)
    from django.contrib.auth.models import Permission

    solo.user_permissions.add(Permission.objects.get(codename="view_published_trainedmodel"))
    client = Client()
    client.force_login(solo)
    for path in (
        "/admin/training/trainingrun/",
        "/admin/models_registry/trainedmodel/",
        "/admin/datasets/datasetimage/",
        "/admin/datasets/annotation/",
        "/admin/datasets/dataset/",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "secret-site-dataset" not in response.content.decode(), path
    models = client.get("/admin/models_registry/trainedmodel/").content.decode()
    assert "on the secret dataset" in models and "shared" in client.get("/admin/datasets/dataset/").content.decode()


# --- 4. 500s ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ids", ["²", "٣,1", "1,²", "99999999999999999999999", ",,,", "-1,-2"])
def test_compare_pages_never_fail_on_odd_ids(world, ids):
    client = staff(world, "admin")
    for path in ("/admin/training/trainingrun/compare/", "/admin/models_registry/trainedmodel/compare/"):
        response = client.get(path, {"ids": ids})
        assert response.status_code in (200, 302), (path, ids, response.status_code)


def test_a_body_over_the_limit_is_413_with_the_error_shape(world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"dataset": world.dataset.pk, "name": "x" * 5000})
    response = world.client("owner").post("/api/training-runs/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large" and "1000 bytes" in response.json()["message"]
    assert TrainingRun.objects.count() == 1


# --- 5. the browsable API --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "owner", "other_trainer", "publisher", "admin"])
def test_the_browsable_api_works_for_every_role_and_lists_nothing_hidden(world, private_base, role):
    client = Client()
    client.force_login(world.users[role])
    for path in ("/api/datasets/", "/api/training-runs/", "/api/trained-models/", f"/api/datasets/{world.dataset.pk}/"):
        response = client.get(path, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, (role, path, response.status_code)
        assert b"<html" in response.content
        if role in ("viewer", "other_trainer"):
            assert b"owner&#x27;s secret base" not in response.content
            assert b"owner&#39;s secret base" not in response.content


# --- 2. annotation edits in the admin stay inside their dataset ------------------------------------------------


@pytest.fixture
def two_datasets(world, make_dataset):
    from guardian.shortcuts import assign_perm

    mine = make_dataset(name="mine", classes=("waste", "tyres"))
    theirs = make_dataset(name="theirs", classes=("other",))
    owner = world.users["owner"]
    for perm in ("datasets.view_dataset", "datasets.change_dataset"):
        assign_perm(perm, owner, mine)
    return mine, theirs


def annotation_form(annotation, **changes):
    data = {
        "dataset_class": annotation.dataset_class_id,
        "x": annotation.x,
        "y": annotation.y,
        "width": annotation.width,
        "height": annotation.height,
        "polygon": "null",
        "enabled": "on",
    }
    data.update(changes)
    return data


def test_a_box_cannot_be_moved_to_another_dataset_or_class(world, two_datasets):
    mine, theirs = two_datasets
    annotation = Annotation.objects.filter(image__dataset=mine).first()
    foreign_image = DatasetImage.objects.filter(dataset=theirs).first()
    foreign_class = theirs.classes.get()
    client = staff(world, "owner")
    url = f"/admin/datasets/annotation/{annotation.pk}/change/"
    # The image is not a field any more: posting one changes nothing.
    client.post(url, annotation_form(annotation, image=foreign_image.pk))
    # A class of another dataset is refused on the form.
    page = client.post(url, annotation_form(annotation, dataset_class=foreign_class.pk))
    assert page.status_code == 200 and b"errorlist" in page.content
    # A box outside its image is refused with the service's reason.
    page = client.post(url, annotation_form(annotation, x=60, width=30))
    assert page.status_code == 200 and b"is not inside the 64x48 image" in page.content
    annotation_before = Annotation.objects.get(pk=annotation.pk)
    assert (annotation_before.image_id, annotation_before.dataset_class_id, annotation_before.x) == (
        annotation.image_id,
        annotation.dataset_class_id,
        annotation.x,
    )
    # A valid edit goes through the service.
    tyres = mine.classes.get(name="tyres")
    assert client.post(url, annotation_form(annotation, dataset_class=tyres.pk, x=3)).status_code == 302
    annotation.refresh_from_db()
    assert annotation.dataset_class == tyres and annotation.x == 3


def test_boxes_of_a_dataset_the_user_may_not_change_are_read_only(world, two_datasets):
    _, theirs = two_datasets
    from guardian.shortcuts import assign_perm

    assign_perm("datasets.view_dataset", world.users["owner"], theirs)
    annotation = Annotation.objects.filter(image__dataset=theirs).first()
    response = staff(world, "owner").post(
        f"/admin/datasets/annotation/{annotation.pk}/change/", annotation_form(annotation, x=5)
    )
    assert response.status_code == 403
    assert Annotation.objects.get(pk=annotation.pk).x == annotation.x
