"""The roles again once labelling tasks exist (``labelling.add_labellingtask`` and ``view_labellingtask``:
Trainer, Publisher, Administrator)."""

from django.db import migrations


def apply_roles(apps, schema_editor):
    from access.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0006_roles_review_detections"),
        ("labelling", "0001_initial"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
