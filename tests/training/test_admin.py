"""The training-run admin: visibility of lists and pages, the start form, the run page."""

import pytest

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


def test_start_form_asks_to_confirm_fine_tuning_to_new_classes(world):
    """A base model of other classes: the form says what loads and what starts afresh, and queues only once the
    operator confirms it; the run's page then shows the plan."""
    from training.models import TrainingRun

    TrainedModel = type(world.published)
    TrainedModel.objects.filter(pk=world.published.pk).update(class_names=["tyres", "waste", "rubble"])
    client = staff_client(world, "owner")
    form = {"dataset": world.dataset.pk, "architecture": "retinanet_r18_tiny", "base_model": world.published.pk}
    before = TrainingRun.objects.count()
    first = client.post("/admin/training/trainingrun/start/", form).content.decode()
    assert "Fine-tuning to new classes" in first and "bbox_head.retina_cls" in first and "Tick this box" in first
    assert TrainingRun.objects.count() == before
    confirmed = client.post("/admin/training/trainingrun/start/", {**form, "confirm_transfer": "on"}, follow=True)
    run = TrainingRun.objects.latest("id")
    assert TrainingRun.objects.count() == before + 1 and run.weight_transfer["mode"] == "new_classes"
    page = confirmed.content.decode()
    assert 'id="weight-transfer"' in page and "re-initialised for the dataset" in page
    assert "when the training starts" in page


def test_run_page_shows_weights_loaded_and_reinitialised_device_and_stop_reason(world):
    from training.models import TrainingRun

    TrainingRun.objects.filter(pk=world.run.pk).update(
        device="cpu (2 threads)",
        stop_reason="Stopped early after epoch 3 of 10: the validation mAP did not improve for 2 epochs.",
        weight_transfer={
            "mode": "new_classes",
            "summary": "Fine-tuning to new classes.",
            "applied": {
                "loaded_count": 120,
                "total": 122,
                "loaded_groups": {"backbone": 100, "neck": 20},
                "reinitialised": [
                    {
                        "key": "bbox_head.retina_cls.weight",
                        "shape": [9, 64, 3, 3],
                        "base_shape": [720, 64, 3, 3],
                        "reason": "the base model predicts 80 classes",
                    },
                ],
                "unused_count": 0,
            },
        },
    )
    html = staff_client(world, "owner").get(f"/admin/training/trainingrun/{world.run.pk}/change/").content.decode()
    assert "120 of 122 tensors: backbone (100), neck (20)" in html
    assert "bbox_head.retina_cls.weight 9x64x3x3 (base model: 720x64x3x3): the base model predicts 80" in html
    assert "cpu (2 threads)" in html and "Stopped early after epoch 3 of 10" in html
