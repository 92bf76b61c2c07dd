"""The datasets' REST API: viewsets by concept, their serializers in ``serializers``."""

from .datasets import AnnotationViewSet, DatasetImageViewSet, DatasetViewSet
from .imports import DatasetImportViewSet

__all__ = ["AnnotationViewSet", "DatasetImageViewSet", "DatasetImportViewSet", "DatasetViewSet"]
