from django.db import migrations


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="reap stale training runs",
        defaults={"func": "training.tasks.reap_stale_runs", "schedule_type": "I", "minutes": 1, "repeats": -1})


class Migration(migrations.Migration):
    dependencies = [("training", "0003_roles"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(create_schedule, migrations.RunPython.noop)]
