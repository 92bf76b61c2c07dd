from django.apps import AppConfig


class TrainingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "training"
    verbose_name = "Training"

    def ready(self):
        # Django's app loading: models and their users import once the app registry is ready
        from core.quotas import register_queued_counter

        # Django's app loading: models and their users import once the app registry is ready
        from .models import TrainingRun

        register_queued_counter(
            "runs",
            lambda user: TrainingRun.objects.filter(created_by=user, status=TrainingRun.Status.QUEUED).count(),
        )
