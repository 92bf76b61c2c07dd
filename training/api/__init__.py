"""The training runs' REST API: the viewset in ``runs``, its serializers in ``serializers``."""

from .runs import TrainingRunViewSet

__all__ = ["TrainingRunViewSet"]
