from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("workers", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="worker",
            name="address",
            field=models.CharField(
                blank=True,
                default="",
                help_text="Where other hosts reach it (DUMPSITE_HOST_ADDRESS; empty: no runs across hosts).",
                max_length=255,
            ),
        ),
    ]
