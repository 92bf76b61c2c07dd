"""The registry's services and lineage selector, called directly (the API and admin tests go through them too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ApplicationError
from models_registry.models import TrainedModel
from models_registry.selectors import model_lineage, models_visible_to
from models_registry.services import (
    sha256_file,
    trained_model_delete,
    trained_model_publish,
    trained_model_register_from_run,
    trained_model_unpublish,
)
from tests.world import register_model
from training.models import TrainingRun
from training.services import training_run_create

pytestmark = pytest.mark.django_db


def succeeded_run(world, name: str, base_model=None) -> TrainingRun:
    run = training_run_create(
        dataset=world.dataset,
        base_model=base_model,
        parameters={"epochs": 2},
        name=name,
        created_by=world.users["owner"],
    )
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    run.refresh_from_db()
    return run


def test_registering_stores_the_given_epoch_its_files_and_their_hashes(world, tmp_path):
    run = succeeded_run(world, "second")
    history = [
        {"epoch": 1, "bbox_mAP": 0.4, "bbox_mAP_50": 0.7, "loss": 1.0},
        {"epoch": 2, "bbox_mAP": 0.3, "bbox_mAP_50": 0.6, "loss": 0.8},
    ]
    ckpt, cfg = tmp_path / "m.pth", tmp_path / "c.json"
    ckpt.write_bytes(b"weights")
    cfg.write_text("{}")
    result = {
        "model_file": str(ckpt),
        "config_file": str(cfg),
        "classes": ["waste"],
        "parameter_count": 9,
        "duration_s": 3.5,
    }
    digest, inode = sha256_file(ckpt), ckpt.stat().st_ino
    model = trained_model_register_from_run(run=run, result=result, history=history, best=history[0])
    assert model.best_epoch == 1 and model.bbox_mAP == 0.4 and model.bbox_mAP_50 == 0.7  # the caller's choice
    assert model.metrics_history == history and model.class_names == ["waste"] and model.parameter_count == 9
    assert model.checkpoint_sha256 == sha256_file(Path(model.checkpoint.path)) == digest
    # The run's files are moved into the registry (one file system here: renamed, the same inode), not copied.
    assert not ckpt.exists() and not cfg.exists() and Path(model.checkpoint.path).stat().st_ino == inode
    assert model.created_by == world.users["owner"] and model.source_run == run and model.base_model is None
    with pytest.raises(ApplicationError, match="no validation metrics"):
        trained_model_register_from_run(run=run, result=result, history=[], best=None)


def test_a_storage_that_refuses_a_models_file_registers_nothing(world, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "models").write_text("not a folder")  # the storage refuses every model file
    run = succeeded_run(world, "refused")
    ckpt, cfg = tmp_path / "m.pth", tmp_path / "c.json"
    ckpt.write_bytes(b"weights")
    cfg.write_text("{}")
    result = {"model_file": str(ckpt), "config_file": str(cfg), "classes": ["waste"]}
    history = [{"epoch": 1, "bbox_mAP": 0.4, "bbox_mAP_50": 0.7}]
    models = TrainedModel.objects.count()
    with pytest.raises(ApplicationError, match=r"The storage did not take the model's files \(.+\); nothing was"):
        trained_model_register_from_run(run=run, result=result, history=history, best=history[0])
    assert TrainedModel.objects.count() == models and ckpt.read_bytes() == b"weights"  # the run's file is kept
    assert sorted(p.name for p in (tmp_path / "media").iterdir()) == ["models"]  # nothing half-written


def test_publishing_follows_the_rules_and_is_idempotent(world):
    publisher = world.users["publisher"]
    published = trained_model_publish(model=world.model, user=publisher)
    assert published.is_published and published.published_by == publisher
    again = trained_model_publish(model=world.model, user=publisher)
    assert again.published_at == published.published_at  # nothing changes the second time
    assert not trained_model_unpublish(model=world.model, user=publisher).is_published
    TrainingRun.objects.filter(pk=world.run.pk).update(status="failed")
    with pytest.raises(ApplicationError, match="Only models of succeeded runs"):
        trained_model_publish(model=world.model, user=publisher)


def test_a_model_others_build_on_or_a_published_one_is_not_deleted(world, tmp_path):
    child_run = succeeded_run(world, "fine-tune", base_model=world.model)
    child = register_model(child_run, tmp_path)
    owner = world.users["owner"]
    with pytest.raises(ApplicationError, match="base of other models or runs"):
        trained_model_delete(model=world.model, user=owner)
    with pytest.raises(ApplicationError, match="published model cannot be deleted"):
        trained_model_delete(model=world.published, user=world.users["admin"])
    TrainingRun.objects.filter(pk=child_run.pk).delete()
    trained_model_delete(model=child, user=owner)  # a leaf goes
    assert not TrainedModel.objects.filter(pk=child.pk).exists()


def test_lineage_shows_only_what_the_user_may_see(world, tmp_path):
    # published base -> owner's model (private) -> owner's fine-tune (private)
    TrainedModel.objects.filter(pk=world.model.pk).update(base_model=world.published)
    child = register_model(succeeded_run(world, "fine-tune", base_model=world.model), tmp_path)
    for_owner = model_lineage(child, world.users["owner"])
    assert [a["id"] for a in for_owner["ancestors"]] == [world.model.pk, world.published.pk]
    from_base = model_lineage(world.published, world.users["owner"])
    assert [n["id"] for n in from_base["descendants"]] == [world.model.pk]
    assert [n["id"] for n in from_base["descendants"][0]["children"]] == [child.pk]
    for_peer = model_lineage(world.published, world.users["other_trainer"])
    assert for_peer == {"ancestors": [], "descendants": []}  # private descendants stay out
    TrainedModel.objects.filter(pk=child.pk).update(is_published=True)
    seen = model_lineage(child, world.users["other_trainer"])
    assert seen["ancestors"] == [
        {"id": None, "name": "(not visible to you)"},
        {
            "id": world.published.pk,
            "name": world.published.name,
            "bbox_mAP_50": world.published.bbox_mAP_50,
            "is_published": True,
        },
    ]
    assert set(models_visible_to(world.users["other_trainer"]).values_list("pk", flat=True)) == {
        world.published.pk,
        child.pk,
    }
