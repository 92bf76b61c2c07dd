"""Administrators may queue training runs with high priority (``training.prioritize_trainingrun``)."""

from django.db import migrations


def apply_roles(apps, schema_editor):
    from access.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0002_predict_permission"),
        ("training", "0013_workers_resources_priority"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
