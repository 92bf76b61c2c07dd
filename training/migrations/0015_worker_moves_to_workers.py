"""Worker is the workers app's now (same table, ``training_worker``). Its content type follows it, so that its
permissions (``view_worker``) and anything that points at the content type keep their rows."""

import django.db.models.deletion
from django.db import migrations, models


def move_content_type(apps, schema_editor, old="training", new="workers"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label=new, model="worker").exists():
        ContentType.objects.filter(app_label=old, model="worker").update(app_label=new)


def move_content_type_back(apps, schema_editor):
    move_content_type(apps, schema_editor, old="workers", new="training")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("training", "0014_process_identity"),
        ("workers", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="trainingrun",
                    name="worker",
                    field=models.ForeignKey(
                        blank=True,
                        help_text="The cluster that ran it.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="runs",
                        to="workers.worker",
                    ),
                ),
                migrations.DeleteModel(name="Worker"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
