from django.apps import AppConfig


class TrainingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "training"
    verbose_name = "Training"

    def ready(self):
        from dumpsite.quotas import register_queued_counter

        from .models import TrainingRun

        register_queued_counter(
            "runs",
            lambda user: TrainingRun.objects.filter(created_by=user, status=TrainingRun.Status.QUEUED).count(),
        )
