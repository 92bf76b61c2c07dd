from django.db import migrations


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="clean up predict checks and gallery caches",
        defaults={"func": "models_registry.tasks.clean_up", "schedule_type": "H", "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="clean up predict checks and gallery caches").delete()


class Migration(migrations.Migration):
    dependencies = [("models_registry", "0005_evaluations"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(create_schedule, remove_schedule)]
