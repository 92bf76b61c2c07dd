"""The registry's REST API: viewsets by concept (trained models, evaluations, predict checks), their
serializers in ``serializers``."""

from .evaluations import EvaluationViewSet
from .predictions import PredictionViewSet
from .trained_models import TrainedModelViewSet

__all__ = ["EvaluationViewSet", "PredictionViewSet", "TrainedModelViewSet"]
