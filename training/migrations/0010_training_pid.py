"""The run's pid field holds the training child's pid, not the worker's: named for what it holds."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("training", "0009_attempt")]

    operations = [
        migrations.RenameField(model_name="trainingrun", old_name="worker_pid", new_name="training_pid"),
        migrations.AlterField(
            model_name="trainingrun", name="training_pid",
            field=models.IntegerField(blank=True, null=True,
                                      help_text="Process id of the training child (its process group leader)."),
        ),
    ]
