from django.apps import AppConfig


class DetectionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "detection"
    verbose_name = "Detection"

    def ready(self):
        # Django's app loading: a run kind's code imports models, so it registers once the app registry is ready
        from training.kinds import register_kind

        # Django's app loading, as above: the kind's execution and retry need the models
        from .execution import execute, run_figures
        from .services import detection_run_again

        register_kind(
            "detect",
            execute=execute,
            again=detection_run_again,
            compare="detection.admin.figures.compare_rows",
            figures=run_figures,
        )
