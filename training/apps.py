from django.apps import AppConfig


class TrainingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "training"
    verbose_name = "Training"

    def ready(self):
        # Django's app loading: models and their users import once the app registry is ready
        from core.quotas import register_queued_counter

        # Django's app loading, as above: the kind's execution and retry need the models
        from .execution.export import execute as export_execute
        from .kinds import register_kind

        # Django's app loading: models and their users import once the app registry is ready
        from .models import TrainingRun
        from .services.export_runs import onnx_export_again

        register_kind("onnx_export", execute=export_execute, again=onnx_export_again)
        register_queued_counter(
            "runs",
            lambda user: TrainingRun.objects.filter(created_by=user, status=TrainingRun.Status.QUEUED).count(),
        )
