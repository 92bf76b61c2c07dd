from django.db import migrations


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="clean up detection crops",
        defaults={"func": "detection.tasks.clean_up", "schedule_type": "H", "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="clean up detection crops").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("detection", "0002_known_sites"),
        ("training", "0016_detection_runs"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [
        migrations.CreateModel(
            name="DetectionRun",
            fields=[],
            options={"verbose_name": "detection run", "proxy": True, "default_permissions": (), "indexes": [],
                     "constraints": []},
            bases=("training.trainingrun",),
        ),
        migrations.RunPython(create_schedule, remove_schedule),
    ]
