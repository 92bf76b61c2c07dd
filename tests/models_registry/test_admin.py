"""The trained-model admin: edits need the object permission; comparison side by side."""

import pytest

pytestmark = pytest.mark.django_db


def staff_client(world, role):
    return world.staff_client(role)


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
    from tests.world import register_model
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


def test_the_export_action_leads_to_a_page_that_queues_the_export(world):
    from training.models import TrainingRun

    owner = world.staff_client("owner")
    changelist = "/admin/models_registry/trainedmodel/"
    answer = owner.post(changelist, {"action": "export_onnx", "_selected_action": [world.model.pk]})
    assert answer.status_code == 302 and answer["Location"].endswith(f"/onnx-export/?model={world.model.pk}")
    page = owner.get(answer["Location"])
    assert page.status_code == 200 and b"Export a model to ONNX" in page.content and b"parity gate" in page.content
    queued = owner.post(answer["Location"], {"model": world.model.pk, "name": ""})
    run = TrainingRun.objects.get(kind="onnx_export")
    assert queued.status_code == 302 and queued["Location"].endswith(f"/trainingrun/{run.pk}/change/")
    assert run.evaluated_model == world.model and run.created_by == world.users["owner"]
    # A model without a validation split of its own: the page says why, nothing is queued.
    refused = world.staff_client("admin").post(answer["Location"], {"model": world.published.pk, "name": ""})
    assert refused.status_code == 200 and b"no validation split of its own" in refused.content
    assert TrainingRun.objects.filter(kind="onnx_export").count() == 1
    # Who may not start runs has no such action, and no such page.
    viewer = world.staff_client("viewer")
    assert b"export_onnx" not in viewer.get(changelist).content
    assert viewer.get(answer["Location"]).status_code == 403
