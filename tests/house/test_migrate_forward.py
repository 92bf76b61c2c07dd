"""A database migrated on aaa26cc (before the house was rebuilt by concept) and holding data migrates forward with
nothing lost: the worker clusters keep their rows and their runs, the Worker content type and its permissions follow
the model to its new app, the role groups grant the moved permission, and the scheduler's task keeps its schedule."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

# The newest migration of each app at aaa26cc.
AAA26CC = [
    ("access", "0003_prioritize_permission"),
    ("audit", "0001_initial"),
    ("datasets", "0005_georeferenced_imagery"),
    ("models_registry", "0005_evaluations"),
    ("training", "0014_process_identity"),
]
NEWER_APPS = ("workers", "scheduler")


def migrate(targets):
    """Migrate the test database to ``targets`` (an app's ``None``: none of its migrations); the models of then."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state([t for t in targets if t[1] is not None]).apps


def latest():
    graph = MigrationExecutor(connection).loader.graph
    return graph.leaf_nodes()


@pytest.mark.django_db(transaction=True)
def test_a_database_of_aaa26cc_with_data_migrates_forward(roles):
    # Back to aaa26cc's schema: the apps born since hold nothing there.
    old = migrate(AAA26CC + [(app, None) for app in NEWER_APPS])
    try:
        assert "worker" in {m._meta.model_name for m in old.get_app_config("training").get_models()}
        User = old.get_model("auth", "User")
        Group = old.get_model("auth", "Group")
        Permission = old.get_model("auth", "Permission")
        ContentType = old.get_model("contenttypes", "ContentType")
        Dataset = old.get_model("datasets", "Dataset")
        Worker = old.get_model("training", "Worker")
        TrainingRun = old.get_model("training", "TrainingRun")
        Schedule = old.get_model("django_q", "Schedule")

        Schedule.objects.update_or_create(
            name="reap stale training runs",
            defaults={"func": "training.tasks.reap_stale_runs", "schedule_type": "I", "minutes": 1, "repeats": -1},
        )
        owner = User.objects.create(username="old-owner")
        watcher = User.objects.create(username="old-watcher")
        worker_type, _ = ContentType.objects.get_or_create(app_label="training", model="worker")
        view_worker, _ = Permission.objects.get_or_create(
            content_type=worker_type, codename="view_worker", defaults={"name": "Can view worker"}
        )
        watcher.user_permissions.add(view_worker)
        Group.objects.get(name="Administrator").permissions.add(view_worker)
        now = timezone.now()
        hosts = [
            Worker.objects.create(
                name="gpu-a:10", host="gpu-a", pid=10, gpus=["0", "1"], cpu_slots=2, heartbeat_at=now
            ),
            Worker.objects.create(name="cpu-b:20", host="cpu-b", pid=20, gpus=[], cpu_slots=4, heartbeat_at=now),
        ]
        dataset = Dataset.objects.create(name="old tiles", created_by=owner)
        run = TrainingRun.objects.create(
            name="old run", dataset=dataset, created_by=owner, worker=hosts[0], assigned_gpus=["1"], parameters={}
        )
        before = {
            "workers": sorted(Worker.objects.values_list("id", "name", "host", "pid", "gpus", "cpu_slots")),
            "content_type": worker_type.pk,
            "permission": view_worker.pk,
        }
    finally:
        new = migrate(latest())

    NewWorker = new.get_model("workers", "Worker")
    NewRun = new.get_model("training", "TrainingRun")
    ContentType = new.get_model("contenttypes", "ContentType")
    Permission = new.get_model("auth", "Permission")
    User = new.get_model("auth", "User")
    Group = new.get_model("auth", "Group")
    Schedule = new.get_model("django_q", "Schedule")

    assert sorted(NewWorker.objects.values_list("id", "name", "host", "pid", "gpus", "cpu_slots")) == before["workers"]
    moved = NewRun.objects.get(pk=run.pk)
    assert (moved.worker_id, moved.assigned_gpus) == (hosts[0].pk, ["1"])
    assert NewWorker.objects.get(pk=hosts[0].pk).runs.get().name == "old run"  # the relation, seen from the new app

    worker_type = ContentType.objects.get(app_label="workers", model="worker")
    assert worker_type.pk == before["content_type"]  # the same row, moved: whatever pointed at it still does
    assert not ContentType.objects.filter(app_label="training", model="worker").exists()
    assert Permission.objects.get(content_type=worker_type, codename="view_worker").pk == before["permission"]
    assert User.objects.get(username="old-watcher").user_permissions.filter(pk=before["permission"]).exists()
    assert Group.objects.get(name="Administrator").permissions.filter(pk=before["permission"]).exists()
    assert Schedule.objects.get(name="reap stale training runs").func == "scheduler.tasks.reap_stale_runs"

    # And the live models see the same rows.
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType as LiveContentType

    from workers.models import Worker as LiveWorker

    LiveContentType.objects.clear_cache()
    assert LiveWorker.objects.filter(pk__in=[h.pk for h in hosts]).count() == 2
    assert get_user_model().objects.get(username="old-watcher").has_perm("workers.view_worker")
