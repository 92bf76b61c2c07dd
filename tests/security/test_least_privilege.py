"""Least privilege and retention: the checkpoint-inspection child gets the training child's minimal environment
and a time-out below the web's; an import whose uploader is gone fails saying so; evaluations of a deleted dataset
are seen only by those who may see every dataset; predict checks share the per-user queue quota and expire with
their files; the bundle is built once and stored; rendered pictures are whole before they are served."""

from __future__ import annotations

import io
import os
import re
import subprocess
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.storage import default_storage
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.test import APIClient

from core.errors import ApplicationError
from core.file_cache import cached_picture, prune, prune_stored, stored_tree
from core.storage import store_bytes, stored_names
from datasets.import_execution import dataset_import_execute
from datasets.imports import stored_upload
from datasets.models import Annotation, DatasetImport
from models_registry.evaluations import gallery_render, gallery_render_name
from models_registry.models import Evaluation, Prediction
from models_registry.predictions import prediction_create, predictions_expire
from models_registry.selectors import evaluations_visible_to
from tests.conftest import jpeg_bytes
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def test_the_inspection_child_gets_a_minimal_environment_and_a_timeout_below_the_webs(tmp_path, monkeypatch, settings):
    import engine.inspect as inspect

    seen = {}
    real_run = subprocess.run

    def recording_run(*args, **kwargs):
        seen.update(kwargs)
        return real_run(*args, **kwargs)

    monkeypatch.setenv("DJANGO_SECRET_KEY", "web-secret")
    monkeypatch.setenv("POSTGRES_PASSWORD", "db-secret")
    monkeypatch.setattr(inspect.subprocess, "run", recording_run)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"PK\x03\x04 not a checkpoint")
    from models_registry.services import trained_model_register_file

    with pytest.raises(ApplicationError, match="Refused the checkpoint"):
        trained_model_register_file(checkpoint=junk, name="junk", architecture="retinanet_r18_tiny")
    assert "DJANGO_SECRET_KEY" not in seen["env"] and "POSTGRES_PASSWORD" not in seen["env"]
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "" and "PATH" in seen["env"]
    assert seen["timeout"] == settings.DUMPSITE_INSPECT_TIMEOUT < 120  # the web's WEB_TIMEOUT default


def test_an_import_whose_uploader_was_deleted_fails_with_that_reason(roles, make_dataset):
    user = User.objects.create_user("leaver")
    user.groups.add(Group.objects.get(name="Administrator"))
    folder = Path(default_storage.path(stored_upload("orphan")))  # the local folder: the storage of the tests
    folder.mkdir(parents=True)
    (folder / "archive.zip").write_bytes(b"")
    job = DatasetImport.objects.create(key="orphan", new_dataset_name="orphaned", created_by=user)
    user.delete()
    assert dataset_import_execute(import_id=job.pk) == "failed"
    job.refresh_from_db()
    assert job.error_message == (
        "The account that uploaded this was deleted before the import ran; nothing was imported."
    )
    assert not stored_names(stored_upload("orphan"))


def test_evaluations_of_a_deleted_dataset_are_seen_only_by_who_sees_every_dataset(world, make_dataset):
    """A partner sees one model and one dataset through object permissions only (no role): once that dataset is
    deleted, nobody can tell who could see it, so its evaluation goes to those who see every dataset."""
    from django.contrib.auth.models import Permission
    from guardian.shortcuts import assign_perm

    other = make_dataset(name="elsewhere")
    evaluation = world.evaluation
    Evaluation.objects.filter(pk=evaluation.pk).update(dataset=other, kind=Evaluation.Kind.EVALUATION)
    partner = User.objects.create_user("partner")
    partner.user_permissions.add(Permission.objects.get(codename="view_trainedmodel_statistics"))
    assign_perm("models_registry.view_trainedmodel", partner, world.model)
    assign_perm("datasets.view_dataset", partner, other)
    assert evaluations_visible_to(partner).filter(pk=evaluation.pk).exists()
    Annotation.objects.filter(image__dataset=other).delete()  # boxes protect their classes
    other.delete()
    evaluation.refresh_from_db()
    assert evaluation.dataset is None
    partner = User.objects.get(pk=partner.pk)  # fresh permission caches
    assert not evaluations_visible_to(partner).filter(pk=evaluation.pk).exists()
    assert evaluations_visible_to(world.users["owner"]).filter(pk=evaluation.pk).exists()  # Trainer: every dataset
    client = APIClient()
    client.force_authenticate(partner)
    assert client.get(f"/api/evaluations/{evaluation.pk}/").status_code == 404
    assert world.client("owner").get(f"/api/evaluations/{evaluation.pk}/").status_code == 200


def test_predict_checks_share_the_queue_quota(world, settings):
    owner = world.users["owner"]
    runs = TrainingRun.objects.filter(created_by=owner, status="queued").count()
    settings.TRAINING_MAX_QUEUED_PER_USER = runs + 1
    prediction_create(model=world.model, content=jpeg_bytes(colour=(1, 1, 1)), user=owner)
    expected = f"already have {runs + 1} queued jobs (1 predict checks" + (f", {runs} runs" if runs else "")
    with pytest.raises(ApplicationError, match=re.escape(expected)):
        prediction_create(model=world.model, content=jpeg_bytes(colour=(2, 2, 2)), user=owner)
    upload = io.BytesIO(jpeg_bytes(colour=(3, 3, 3)))
    upload.name = "tile.jpg"
    response = world.client("owner").post(
        f"/api/trained-models/{world.model.pk}/predict/", {"image": upload}, format="multipart"
    )
    assert response.status_code == 400 and "queued jobs" in response.json()["message"]
    assert Prediction.objects.filter(created_by=owner).count() == 1 + (world.prediction is not None)


def test_predict_checks_expire_with_their_files(world, settings):
    from django.conf import settings as live

    old = prediction_create(model=world.model, content=jpeg_bytes(colour=(5, 5, 5)), user=world.users["owner"])
    fresh = prediction_create(model=world.model, content=jpeg_bytes(colour=(6, 6, 6)), user=world.users["owner"])
    Prediction.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=live.DUMPSITE_PREDICTION_RETENTION_DAYS, hours=1),
        status="succeeded",
    )
    folder = Path(live.MEDIA_ROOT) / "predictions" / old.key
    assert folder.is_dir()
    assert predictions_expire() == {"removed": 1}
    assert not Prediction.objects.filter(pk=old.pk).exists() and not folder.exists()
    assert Prediction.objects.filter(pk=fresh.pk).exists()
    assert Schedule.objects.filter(func="models_registry.tasks.clean_up", schedule_type="H").exists()
    assert Schedule.objects.filter(func="datasets.tasks.clean_up", schedule_type="H").exists()


def test_the_bundle_is_built_once_and_stored(world):
    client = world.client("owner")
    url = f"/api/trained-models/{world.model.pk}/download/"
    first = b"".join(client.get(url, {"artifact": "bundle"}).streaming_content)
    stored = list((Path(world.model.checkpoint.path).parent / "bundles").glob("*.zip"))
    assert len(stored) == 1 and stored[0].read_bytes() == first
    stamp = stored[0].stat().st_mtime_ns
    assert b"".join(client.get(url, {"artifact": "bundle"}).streaming_content) == first
    assert stored[0].stat().st_mtime_ns == stamp
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert zf.testzip() is None and f"model-{world.model.pk}/checkpoint.pth" in zf.namelist()


def test_a_half_written_gallery_picture_is_drawn_again_and_caches_are_pruned(world, tmp_path):
    row = world.evaluation.images.order_by("id").first()
    name = gallery_render_name(row)
    target = Path(default_storage.path(name))  # the local folder: the storage of the tests
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"\xff\xd8 half a picture")  # a writer that died, or a truncated copy
    assert cached_picture(name) is None
    drawn = gallery_render(row, classes=["waste"])
    assert drawn.startswith(b"\xff\xd8") and drawn.endswith(b"\xff\xd9") and target.read_bytes() == drawn
    assert cached_picture(name) == drawn and not list(target.parent.glob("*.part"))

    for i in range(5):  # a cache kept in the storage, pruned oldest first
        store_bytes(b"x" * 1000, f"cache/pruned/{i % 2}/{i}.jpg")
        os.utime(default_storage.path(f"cache/pruned/{i % 2}/{i}.jpg"), (1000 + i, 1000 + i))
    assert prune_stored("cache/pruned", 2500) == {"removed": 3, "freed_bytes": 3000, "kept_bytes": 2000}
    assert sorted(name for name, _, _ in stored_tree("cache/pruned")) == [
        "cache/pruned/0/4.jpg",
        "cache/pruned/1/3.jpg",
    ]

    cache = tmp_path / "cache"
    cache.mkdir()
    for i in range(5):
        (cache / f"{i}.jpg").write_bytes(b"x" * 1000)
        os.utime(cache / f"{i}.jpg", (1000 + i, 1000 + i))
    assert prune(cache, 2500) == {"removed": 3, "freed_bytes": 3000, "kept_bytes": 2000}
    assert sorted(p.name for p in cache.iterdir()) == ["3.jpg", "4.jpg"]
