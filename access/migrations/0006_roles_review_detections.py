"""The roles again once detections can be reviewed (``detection.review_detection``: Trainer, Publisher,
Administrator)."""

from django.db import migrations


def apply_roles(apps, schema_editor):
    from access.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0005_roles_run_detection"),
        ("detection", "0004_review"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
