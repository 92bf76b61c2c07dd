from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "datasets"
    verbose_name = "Datasets"

    def ready(self):
        # Django's app loading: models and their users import once the app registry is ready
        from django.conf import settings
        from PIL import Image

        # Pillow's own bomb guard at the site's limit too (it warns past it and refuses past twice it), for every
        # decode in this process, not only the checked ones in datasets.services.
        Image.MAX_IMAGE_PIXELS = settings.DUMPSITE_MAX_IMAGE_PIXELS

        # GDAL as the platform allows it, before any file is opened in this process (drivers, side files, network).
        from .rasters import configure

        configure()
