"""The roles again once Worker lives in the workers app (``workers.view_worker``)."""

from django.db import migrations


def apply_roles(apps, schema_editor):
    from access.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0003_prioritize_permission"),
        ("training", "0015_worker_moves_to_workers"),
        ("workers", "0001_initial"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
