"""Uploads through the API: the list and detail of import jobs (the uploads themselves are actions of a dataset)."""

from __future__ import annotations

from rest_framework import viewsets

from core.api import ActionPermission

from ..models import DatasetImport
from ..selectors import imports_visible_to
from .serializers import (
    DatasetImportSerializer,
)


class DatasetImportViewSet(viewsets.ReadOnlyModelViewSet):
    """COCO zip imports: your own (everyone's for users who may change every dataset), with status, progress
    (percent, items, ETA) and the report: what was imported and every rejected item with its reason."""

    lookup_value_regex = "[0-9]+"
    serializer_class = DatasetImportSerializer
    permission_classes = [ActionPermission]
    action_permissions = {"list": None, "retrieve": None}
    filter_backends: list = []

    def get_queryset(self):
        return imports_visible_to(self.request.user, DatasetImport.objects.select_related("dataset", "created_by"))
