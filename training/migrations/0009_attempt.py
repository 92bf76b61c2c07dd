"""Retries and resumes carry their attempt number and the first run of their chain as fields (the number was
parsed out of the run's name before). Existing retries are numbered along their chain."""

import django.db.models.deletion
from django.db import migrations, models


def number_existing_attempts(apps, schema_editor):
    TrainingRun = apps.get_model("training", "TrainingRun")
    for run in TrainingRun.objects.filter(retry_of__isnull=False).order_by("created_at", "id"):
        parent = TrainingRun.objects.get(pk=run.retry_of_id)
        root_id = parent.retry_of_root_id or parent.pk
        previous = TrainingRun.objects.filter(models.Q(pk=root_id) | models.Q(retry_of_root_id=root_id)).aggregate(
            n=models.Max("attempt"))["n"] or 1
        TrainingRun.objects.filter(pk=run.pk).update(retry_of_root_id=root_id, attempt=previous + 1)


class Migration(migrations.Migration):
    dependencies = [("training", "0008_timings")]

    operations = [
        migrations.AddField(
            model_name="trainingrun", name="attempt",
            field=models.PositiveIntegerField(default=1, help_text="1 for a new run; retries and resumes count on."),
        ),
        migrations.AddField(
            model_name="trainingrun", name="retry_of_root",
            field=models.ForeignKey(blank=True, help_text="The first run of this chain of retries and resumes.",
                                    null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                                    to="training.trainingrun"),
        ),
        migrations.RunPython(number_existing_attempts, migrations.RunPython.noop),
    ]
