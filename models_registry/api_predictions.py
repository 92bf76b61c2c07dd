"""REST API of predict checks: a model run on an uploaded image by a worker (``POST
/api/trained-models/<id>/predict/`` queues one), and the results with the annotated preview."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound

from dumpsite.api import ActionPermission

from . import predictions
from .models import Prediction


class PredictRequestSerializer(serializers.Serializer):
    image = serializers.FileField(help_text="The image (JPEG, PNG, TIFF, BMP or WebP).")
    score_threshold = serializers.FloatField(
        required=False, default=0.3, min_value=0.0, max_value=1.0, help_text="Keep boxes scoring at least this."
    )


class PredictionSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    preview_url = serializers.SerializerMethodField(help_text="The image with the boxes drawn (when succeeded).")

    class Meta:
        model = Prediction
        fields = [
            "id",
            "model",
            "status",
            "original_name",
            "score_threshold",
            "result",
            "error_message",
            "preview_url",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_preview_url(self, obj) -> str | None:
        if not obj.preview:
            return None
        return f"/api/predictions/{obj.pk}/preview/"


class PredictionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Predict checks: your own (all of them for roles that see every model)."""

    lookup_value_regex = "[0-9]+"
    serializer_class = PredictionSerializer
    permission_classes = [ActionPermission]
    action_permissions = {"list": None, "retrieve": None, "preview": None}
    filterset_fields = ["model", "status"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        return predictions.predictions_visible_to(self.request.user).select_related("created_by")

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
