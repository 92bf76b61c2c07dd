"""The scheduler's tasks moved from ``training.tasks`` to ``scheduler.tasks``: the reaper's schedule follows."""

from django.db import migrations

MOVED = {"training.tasks.reap_stale_runs": "scheduler.tasks.reap_stale_runs"}


def rename(apps, schema_editor, moves=MOVED):
    Schedule = apps.get_model("django_q", "Schedule")
    for old, new in moves.items():
        Schedule.objects.filter(func=old).update(func=new)


def rename_back(apps, schema_editor):
    rename(apps, schema_editor, {new: old for old, new in MOVED.items()})


class Migration(migrations.Migration):
    initial = True

    dependencies = [("training", "0004_reaper_schedule"), ("django_q", "0018_task_success_index")]

    operations = [migrations.RunPython(rename, rename_back)]
