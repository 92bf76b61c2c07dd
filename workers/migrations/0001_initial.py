"""The Worker model moves here from the training app. Its table stays ``training_worker`` (a database that held
workers keeps them): this migration only tells Django's state where the model now lives."""

import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [("training", "0014_process_identity")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Worker",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(help_text="host:pid of the cluster's main process.", max_length=300, unique=True)),
                        ("host", models.CharField(db_index=True, help_text="The host identity (DUMPSITE_HOST_ID).", max_length=255)),
                        ("pid", models.IntegerField()),
                        ("gpus", django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=32), blank=True, default=list, help_text="GPU ids it declared.", size=None)),
                        ("cpu_slots", models.PositiveIntegerField(default=1, help_text="Training processes it runs at once on its CPUs.")),
                        ("processes", models.PositiveIntegerField(default=1, help_text="Runs it executes at once (django-q2 workers).")),
                        ("started_at", models.DateTimeField(auto_now_add=True)),
                        ("heartbeat_at", models.DateTimeField(db_index=True)),
                        ("stopped_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={"db_table": "training_worker", "ordering": ["host", "name"]},
                ),
            ],
            database_operations=[],
        ),
    ]
