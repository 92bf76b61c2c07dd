"""The admin applies the API's visibility and object checks."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def staff_client(world, role):
    return world.staff_client(role)


@pytest.mark.parametrize(
    "role, sees_run, sees_model",
    [
        ("owner", True, True),
        ("other_trainer", False, False),
        ("viewer", False, False),
        ("publisher", True, True),
        ("admin", True, True),
    ],
)
def test_admin_lists_and_pages_follow_visibility(world, role, sees_run, sees_model):
    client = staff_client(world, role)
    runs = client.get("/admin/training/trainingrun/")
    assert runs.status_code == 200
    assert (f"/admin/training/trainingrun/{world.run.pk}/change/" in runs.content.decode()) is sees_run
    detail = client.get(f"/admin/training/trainingrun/{world.run.pk}/change/")
    assert (detail.status_code == 200) is sees_run
    models = client.get("/admin/models_registry/trainedmodel/").content.decode()
    assert (f"/admin/models_registry/trainedmodel/{world.model.pk}/change/" in models) is sees_model
    assert f"/admin/models_registry/trainedmodel/{world.published.pk}/change/" in models


def test_admin_object_edits_need_the_object_permission(world):
    owner, peer = staff_client(world, "owner"), staff_client(world, "publisher")
    url = f"/admin/models_registry/trainedmodel/{world.model.pk}/change/"
    assert owner.post(url, {"name": "renamed by owner", "description": ""}).status_code == 302
    world.model.refresh_from_db()
    assert world.model.name == "renamed by owner"
    assert peer.post(url, {"name": "renamed by peer", "description": ""}).status_code == 403
    world.model.refresh_from_db()
    assert world.model.name == "renamed by owner"


def test_compare_page_puts_models_side_by_side(world, tmp_path):
    from tests.api.conftest import register_model
    from training.models import TrainingRun
    from training.services import training_run_create

    run2 = training_run_create(
        dataset=world.dataset, parameters={"epochs": 7, "learning_rate": 0.001}, created_by=world.users["owner"]
    )
    TrainingRun.objects.filter(pk=run2.pk).update(status="succeeded")
    run2.refresh_from_db()
    other = register_model(
        run2,
        tmp_path,
        history=[
            {"epoch": 1, "bbox_mAP": 0.2, "bbox_mAP_50": 0.4, "loss": 1},
            {"epoch": 2, "bbox_mAP": 0.25, "bbox_mAP_50": 0.45, "loss": 1},
        ],
    )
    client = staff_client(world, "owner")
    page = client.get(f"/admin/models_registry/trainedmodel/compare/?ids={world.model.pk},{other.pk}", follow=True)
    html = page.content.decode()
    assert page.status_code == 200 and f"Model #{world.model.pk}" in html and f"Model #{other.pk}" in html
    assert "<td>7</td>" in html and "<td>0.001</td>" in html and "0.900" in html and "0.450" in html
    assert html.count("<polyline") == 2
    # Another user's model is not compared for someone who may not see it.
    peer = staff_client(world, "other_trainer")
    response = peer.get(f"/admin/models_registry/trainedmodel/compare/?ids={world.model.pk},{other.pk}", follow=True)
    assert response.redirect_chain[-1][0] == "/admin/" and f"Model #{world.model.pk}" not in response.content.decode()
    assert "Choose at least two items you may see" in response.content.decode()


def test_thumbnails_are_served_only_for_visible_datasets(world):
    from django.contrib.auth.models import User

    from datasets.models import DatasetImage

    image = DatasetImage.objects.filter(dataset=world.dataset).first()
    url = f"/datasets/images/{image.pk}/thumbnail.jpg"
    viewer = staff_client(world, "viewer")
    response = viewer.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody"))
    assert nobody.get(url).status_code == 404
    assert Client().get(url).status_code == 302  # to the login page


def test_start_form_shows_field_errors_and_queues_nothing(world):
    from django_q.models import OrmQ

    from training.models import TrainingRun

    client = staff_client(world, "owner")
    before = TrainingRun.objects.count()
    response = client.post(
        "/admin/training/trainingrun/start/",
        {"dataset": world.dataset.pk, "architecture": "retinanet_r18_tiny", "epochs": "600", "learning_rate": "x"},
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "600 is out of range" in html or "Ensure this value" in html
    assert "Enter a number" in html
    assert TrainingRun.objects.count() == before and not OrmQ.objects.exists()
    assert staff_client(world, "viewer").get("/admin/training/trainingrun/start/").status_code == 403


def test_start_form_explains_an_unusable_dataset_on_its_field(world, make_dataset):
    from guardian.shortcuts import assign_perm

    bare = make_dataset(name="no boxes", boxes=False)
    assign_perm("datasets.use_dataset", world.users["owner"], bare)
    response = staff_client(world, "owner").post(
        "/admin/training/trainingrun/start/", {"dataset": bare.pk, "architecture": "retinanet_r18_tiny"}
    )
    html = response.content.decode()
    assert response.status_code == 200 and "field-dataset" in html
    assert "has no enabled annotations on enabled images" in html


def test_run_page_shows_where_the_time_went_in_phase_order(world):
    import re

    from training.models import TrainingRun

    # As PostgreSQL's jsonb hands it back: keys sorted by length, not in the order of the phases.
    TrainingRun.objects.filter(pk=world.run.pk).update(
        timings={"registration": 0.5, "training": 40.0, "startup": 4.0, "config": 0.01, "export": 0.49, "queued": 5.0}
    )
    page = staff_client(world, "owner").get(f"/admin/training/trainingrun/{world.run.pk}/change/").content.decode()
    table = page[page.index('id="run-timings"') :]
    table = table[: table.index("</table>")]
    assert re.findall(r"<th>(\w+)</th>", table) == list(TrainingRun.PHASES)
    assert "<td>40.00 s</td><td>80.0%</td>" in table
