from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "models_registry"
    verbose_name = "Model registry"

    def ready(self):
        from dumpsite.quotas import register_queued_counter

        from .models import Prediction

        register_queued_counter(
            "predict checks",
            lambda user: Prediction.objects.filter(created_by=user, status=Prediction.Status.QUEUED).count(),
        )
