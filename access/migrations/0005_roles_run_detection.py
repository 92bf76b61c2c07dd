"""The roles again once detection runs exist (``detection.run_detection``: Trainer, Publisher, Administrator)."""

from django.db import migrations


def apply_roles(apps, schema_editor):
    from access.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0004_roles_after_app_moves"),
        ("detection", "0001_initial"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
