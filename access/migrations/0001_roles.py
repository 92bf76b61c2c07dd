"""The role groups and their permissions (``access.roles``), applied once every app's permissions exist; then
again by ``manage.py sync_roles`` whenever ROLES changes."""

from django.db import migrations


def apply_roles(apps, schema_editor):
    from access.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0010_training_pid"),
        ("datasets", "0003_datasetstats"),
        ("models_registry", "0003_alter_trainedmodel_options_and_more"),
        ("audit", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(apply_roles, migrations.RunPython.noop)]
