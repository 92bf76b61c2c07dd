"""Roles get the permission to run models on images (``models_registry.predict_trainedmodel``)."""

from django.db import migrations


def apply_roles(apps, schema_editor):
    from access.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0001_roles"),
        ("models_registry", "0004_model_card_and_predictions"),
        ("training", "0011_weight_transfer_device_stop_reason"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
