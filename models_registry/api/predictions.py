"""REST API of predict checks: a model run on an uploaded image by a worker (``POST
/api/trained-models/<id>/predict/`` queues one), and the results with the annotated preview."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound

from core.api import ActionPermission

from ..selectors import predictions_visible_to
from .serializers import PredictionSerializer


class PredictionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Predict checks: your own (all of them for roles that see every model)."""

    lookup_value_regex = "[0-9]+"
    serializer_class = PredictionSerializer
    permission_classes = [ActionPermission]
    action_permissions = {"list": None, "retrieve": None, "preview": None}
    filterset_fields = ["model", "status"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        return predictions_visible_to(self.request.user).select_related("created_by")

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], filter_backends=[])
    def preview(self, request, pk=None):
        """The image with its predicted boxes and labels drawn (JPEG)."""
        prediction = self.get_object()
        if not prediction.preview:
            raise NotFound("This prediction has no preview (yet).")
        try:
            return FileResponse(prediction.preview.open("rb"), content_type="image/jpeg")
        except FileNotFoundError:
            raise NotFound("The preview is missing from storage.") from None
