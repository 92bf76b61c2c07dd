from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "models_registry"
    verbose_name = "Model registry"

    def ready(self):
        # Django's app loading: models and their users import once the app registry is ready
        from core.quotas import register_queued_counter

        # Django's app loading: models and their users import once the app registry is ready
        from .models import Prediction

        register_queued_counter(
            "predict checks",
            lambda user: Prediction.objects.filter(created_by=user, status=Prediction.Status.QUEUED).count(),
        )
