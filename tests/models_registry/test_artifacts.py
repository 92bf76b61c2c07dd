"""What users take away from a model: the Python config for MMDetection, the model card, the bundle; and base
models registered from uploaded checkpoints (API and admin)."""

import hashlib
import io
import json
import zipfile

import pytest
import torch

from models_registry.models import TrainedModel

pytestmark = pytest.mark.django_db


def test_python_config_card_and_bundle_of_a_model(world):
    client = world.client("owner")
    config = client.get(f"/api/trained-models/{world.model.pk}/download/", {"artifact": "config"})
    assert config.status_code == 200 and config.content.startswith(b"# MMDetection config of model")
    assert b"model = dict(\n    type='RetinaNet'," in config.content
    card = client.get(f"/api/trained-models/{world.model.pk}/card/").json()
    assert card["classes"] == world.model.class_names and card["metrics"]["best_epoch"] == 2
    assert card["training"]["run"] == world.run.pk and card["lineage"] == []
    markdown = client.get(f"/api/trained-models/{world.model.pk}/download/", {"artifact": "card"}).content.decode()
    assert markdown.startswith(f"# Model #{world.model.pk}") and "| 0 | waste |" in markdown
    bundle = client.get(f"/api/trained-models/{world.model.pk}/download/", {"artifact": "bundle"})
    with zipfile.ZipFile(io.BytesIO(b"".join(bundle.streaming_content))) as zf:
        root = f"model-{world.model.pk}"
        assert zf.read(f"{root}/config.py") == config.content
        sums = dict(line.split("  ")[::-1] for line in zf.read(f"{root}/SHA256SUMS").decode().splitlines())
        assert sums["config.py"] == hashlib.sha256(config.content).hexdigest()
        assert len(sums) == 5
    refused = client.get(f"/api/trained-models/{world.model.pk}/download/", {"artifact": "weights.pth"})
    assert refused.status_code == 400 and "bundle" in refused.json()["errors"]["artifact"][0]


def test_the_card_names_no_hidden_relative(world):
    """A published model fine-tuned from a private one: the card of a user who may not see the base says so
    without naming it."""
    TrainedModel.objects.filter(pk=world.published.pk).update(base_model=world.model, dataset=world.dataset)
    card = world.client("viewer").get(f"/api/trained-models/{world.published.pk}/card/").json()
    assert card["lineage"] == [{"id": None, "name": "(not visible to you)"}]
    assert world.model.name not in json.dumps(card) and card["training"] is None


def test_markdown_card_keeps_user_text_as_text(world):
    TrainedModel.objects.filter(pk=world.model.pk).update(
        name="evil | <script>alert(1)</script>\n# heading", class_names=["a|b", "<img src=x>"]
    )
    markdown = world.client("owner").get(f"/api/trained-models/{world.model.pk}/download/", {"artifact": "card"})
    text = markdown.content.decode()
    assert "<script>" not in text and "<img" not in text and "\n# heading" not in text
    assert "| 0 | a\\|b |" in text


def _tiny_checkpoint(path, classes):
    from tests.zoo import build_model

    torch.save(
        {
            "state_dict": build_model("retinanet_r18_tiny", len(classes)).state_dict(),
            "meta": {"dataset_meta": {"classes": list(classes)}},
        },
        path,
    )
    return path


def test_api_registers_an_uploaded_checkpoint_and_refuses_bad_ones(world, tmp_path, settings):
    client = world.client("admin")
    good = _tiny_checkpoint(tmp_path / "good.pth", ["a", "b"])
    with open(good, "rb") as fh:
        created = client.post(
            "/api/trained-models/register/",
            {"checkpoint": fh, "name": "uploaded", "architecture": "retinanet_r18_tiny", "classes": ["x", "y"]},
            format="multipart",
        )
    assert created.status_code == 201, created.json()
    model = TrainedModel.objects.get(pk=created.json()["id"])
    assert model.class_names == ["x", "y"] and model.origin == "registered"
    assert model.created_by == world.users["admin"]

    count = TrainedModel.objects.count()
    artifacts = set((settings.MEDIA_ROOT / "models").iterdir())
    (tmp_path / "garbage.pth").write_bytes(b"PK\x03\x04 garbage")
    for upload, reason in [
        (tmp_path / "garbage.pth", "not a loadable weights-only checkpoint"),
        (good, "not a faster_rcnn_r50_fpn checkpoint"),
    ]:
        with open(upload, "rb") as fh:
            refused = client.post(
                "/api/trained-models/register/",
                {"checkpoint": fh, "name": "bad", "architecture": "faster_rcnn_r50_fpn"},
                format="multipart",
            )
        assert refused.status_code == 400 and reason in refused.json()["message"], refused.json()
    assert TrainedModel.objects.count() == count and set((settings.MEDIA_ROOT / "models").iterdir()) == artifacts


def test_admin_register_page_uploads_a_checkpoint(world, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    good = _tiny_checkpoint(tmp_path / "good.pth", ["a", "b"])
    client = world.staff_client("admin")
    listing = client.get("/admin/models_registry/trainedmodel/").content.decode()
    assert 'id="register-checkpoint"' in listing
    page = client.post(
        "/admin/models_registry/trainedmodel/register/",
        {
            "checkpoint": SimpleUploadedFile("good.pth", good.read_bytes()),
            "name": "from the admin",
            "architecture": "retinanet_r18_tiny",
            "classes": "",
        },
        follow=True,
    )
    model = TrainedModel.objects.get(name="from the admin")
    assert "(from meta.dataset_meta.classes)" in page.content.decode() and model.class_names == ["a", "b"]
    bad = client.post(
        "/admin/models_registry/trainedmodel/register/",
        {"checkpoint": SimpleUploadedFile("x.pth", b"nope"), "name": "x", "architecture": "retinanet_r18_tiny"},
    )
    assert "Refused the checkpoint" in bad.content.decode() and not TrainedModel.objects.filter(name="x").exists()
    assert world.staff_client("owner").get("/admin/models_registry/trainedmodel/register/").status_code == 403


def test_admin_predict_page_refuses_a_non_image_and_queues_nothing(world):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django_q.models import OrmQ

    from models_registry.models import Prediction

    client = world.staff_client("owner")
    model_page = client.get(f"/admin/models_registry/trainedmodel/{world.model.pk}/change/").content.decode()
    assert 'id="predict-link"' in model_page and 'id="model-card"' in model_page
    before = Prediction.objects.count()
    page = client.post(
        f"/admin/models_registry/trainedmodel/{world.model.pk}/predict/",
        {"image": SimpleUploadedFile("a.jpg", b"not an image"), "score_threshold": "0.3"},
    )
    assert "not a readable image" in page.content.decode()
    assert Prediction.objects.count() == before and not OrmQ.objects.exists()
    shown = client.get(f"/admin/models_registry/prediction/{world.prediction.pk}/change/").content.decode()
    assert 'id="prediction-boxes"' in shown and "waste" in shown and 'id="prediction-preview"' in shown
    other = world.staff_client("other_trainer")
    assert other.get(f"/admin/models_registry/prediction/{world.prediction.pk}/change/").status_code in (302, 404)
    assert other.get(f"/admin/models_registry/trainedmodel/{world.model.pk}/predict/").status_code == 404


def test_api_dry_run_says_what_loads_and_queues_nothing(world):
    from django_q.models import OrmQ

    from training.models import TrainingRun

    TrainedModel.objects.filter(pk=world.published.pk).update(class_names=["tyres"])
    before = TrainingRun.objects.count()
    answer = world.client("owner").post(
        "/api/training-runs/",
        {"dataset": world.dataset.pk, "base_model": world.published.pk, "dry_run": True, "parameters": {"epochs": 2}},
        format="json",
    )
    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["queued"] is False and body["parameters"]["epochs"] == 2
    assert (
        body["weight_transfer"]["mode"] == "new_classes" and body["weight_transfer"]["base_model"] == world.published.pk
    )
    assert TrainingRun.objects.count() == before and not OrmQ.objects.exists()
