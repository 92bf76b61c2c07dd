"""REST API of trained models: browse, rename, publish, lineage, metrics, artifact downloads."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from core.api import ActionPermission
from core.storage import stored_file_response
from core.uploads import uploaded_file_path

from .. import card as cards
from .. import predictions, services
from ..models import METRIC_FIELDS, TrainedModel
from ..selectors import model_lineage, models_visible_to, visible_related_ids
from .serializers import (
    PredictionSerializer,
    PredictRequestSerializer,
    RegisterSerializer,
    TrainedModelDetailSerializer,
    TrainedModelFilter,
    TrainedModelSerializer,
)

# The artifacts that are stored files: the model's field and its hash's
STORED = {
    "checkpoint": ("checkpoint", "checkpoint_sha256"),
    "config_json": ("config", "config_sha256"),
    "onnx": ("onnx", "onnx_sha256"),
}
ARTIFACTS = ("checkpoint", "config", "config_json", "onnx", "card", "bundle")


class TrainedModelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Trained models the user may see: their own, published ones, or all for reviewing roles."""

    lookup_value_regex = "[0-9]+"  # ids are integers; anything else is a 404 at the URL

    serializer_class = TrainedModelSerializer

    def get_serializer_class(self):
        return TrainedModelDetailSerializer if self.action == "retrieve" else TrainedModelSerializer

    permission_classes = [ActionPermission]
    http_method_names = ["get", "patch", "post", "delete", "head", "options"]
    # Reading needs only visibility (own models, published ones for roles that see those, all for reviewers),
    # which the queryset enforces: hidden models are 404.
    action_permissions = {
        "list": None,
        "retrieve": None,
        "partial_update": "models_registry.change_trainedmodel",
        "destroy": "models_registry.delete_trainedmodel",
        "publish": "models_registry.publish_trainedmodel",
        "unpublish": "models_registry.publish_trainedmodel",
        "lineage": None,
        "download": None,
        "card": None,
        "register": "models_registry.add_trainedmodel",
        "predict": "models_registry.predict_trainedmodel",
        "metrics": "models_registry.view_trainedmodel_statistics",
    }
    filterset_class = TrainedModelFilter
    search_fields = ["name", "description"]
    ordering_fields = ["created_at", "name", *METRIC_FIELDS, "parameter_count"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        user = self.request.user
        return models_visible_to(
            user, TrainedModel.objects.select_related("created_by", "published_by").defer("metrics_history")
        )

    def list(self, request, *args, **kwargs):
        """The page, with the related objects the user may see found in three queries for the whole page."""
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        context = {**self.get_serializer_context(), "visible_related": visible_related_ids(request.user, page)}
        return self.get_paginated_response(TrainedModelSerializer(page, many=True, context=context).data)

    def perform_destroy(self, instance):
        services.trained_model_delete(model=instance, user=self.request.user)

    @extend_schema(request=RegisterSerializer, responses={201: TrainedModelSerializer})
    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser], filter_backends=[])
    def register(self, request):
        """Register a checkpoint file (multipart upload) as a base model: an MMDetection model-zoo checkpoint of a
        preset's architecture, or one trained elsewhere. Checked weights-only in a separate process; class names
        from the ``classes`` field, else from the file, else COCO's for an 80-class head."""
        payload = RegisterSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        with uploaded_file_path(data["checkpoint"]) as path:
            model, _report = services.trained_model_register_file(
                checkpoint=path,
                name=data["name"],
                architecture=data["architecture"],
                classes=data.get("classes") or None,
                description=data.get("description", ""),
                created_by=request.user,
            )
        return Response(
            TrainedModelSerializer(model, context=self.get_serializer_context()).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=PredictRequestSerializer, responses={202: PredictionSerializer})
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser], filter_backends=[])
    def predict(self, request, pk=None):
        """Run the model on one uploaded image, in a worker: answers 202 with the queued prediction; follow it at
        ``/api/predictions/<id>/`` (boxes with class names and scores, and an annotated preview)."""
        model = self.get_object()
        payload = PredictRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        upload = payload.validated_data["image"]
        if upload.size > settings.DUMPSITE_MAX_IMAGE_BYTES:
            raise ValidationError({"image": [f"The image is larger than {settings.DUMPSITE_MAX_IMAGE_BYTES:,} bytes."]})
        prediction = predictions.prediction_create(
            model=model,
            content=upload.read(),
            original_name=upload.name,
            score_threshold=payload.validated_data["score_threshold"],
            engine=payload.validated_data["engine"],
            user=request.user,
        )
        return Response(PredictionSerializer(prediction, context={"request": request}).data, status=202)

    @extend_schema(request=None, responses=TrainedModelSerializer)
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        """Publish for production detection (models of succeeded runs and registered base models only)."""
        model = services.trained_model_publish(model=self.get_object(), user=request.user)
        return Response(TrainedModelSerializer(model, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses=TrainedModelSerializer)
    @action(detail=True, methods=["post"])
    def unpublish(self, request, pk=None):
        model = services.trained_model_unpublish(model=self.get_object(), user=request.user)
        return Response(TrainedModelSerializer(model, context=self.get_serializer_context()).data)

    @extend_schema(
        responses=inline_serializer(
            "Lineage",
            {
                "ancestors": serializers.ListField(child=serializers.DictField()),
                "descendants": serializers.ListField(child=serializers.DictField()),
            },
        )
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def lineage(self, request, pk=None):
        """The chain of base models this one was fine-tuned from, and the tree of models fine-tuned from it."""
        return Response(model_lineage(self.get_object(), request.user))

    @extend_schema(
        responses=inline_serializer(
            "ModelMetrics",
            {
                "best_epoch": serializers.IntegerField(allow_null=True),
                "epochs": serializers.ListField(child=serializers.DictField()),
            },
        )
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def metrics(self, request, pk=None):
        """Per-epoch validation metrics and mean training loss."""
        model = self.get_object()
        return Response(
            {
                "best_epoch": model.best_epoch,
                "epochs": TrainedModel.objects.values_list("metrics_history", flat=True).get(pk=model.pk),
            }
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "artifact",
                str,
                enum=[*ARTIFACTS],
                required=True,
                description=(
                    "checkpoint: the weights (.pth); config: the Python config stock MMDetection reads; "
                    "config_json: the stored JSON config; onnx: the ONNX export for ONNX Runtime (once one passed "
                    "the parity gate); card: the model card (Markdown); bundle: a zip of all of them with the card "
                    "as JSON and SHA256SUMS."
                ),
            )
        ],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def download(self, request, pk=None):
        """Stream an artifact; ``X-Checksum-SHA256`` carries its hash (the stored one for stored files)."""
        model = self.get_object()
        artifact = request.query_params.get("artifact")
        if artifact not in ARTIFACTS:
            raise ValidationError({"artifact": [f"Choose one of: {', '.join(ARTIFACTS)}."]})
        if artifact in STORED:
            field, digest = getattr(model, STORED[artifact][0]), getattr(model, STORED[artifact][1])
            if not field:
                raise NotFound("This model has no ONNX export (none passed the parity gate).")
            suffix = field.name.rsplit(".", 1)[-1]
            try:
                response = stored_file_response(
                    field.name,
                    filename=f"model-{model.pk}-{artifact.replace('_json', '')}.{suffix}",
                    content_type="application/octet-stream",
                )
            except FileNotFoundError:
                raise NotFound(f"The {artifact} file of this model is missing from storage.") from None
            response["X-Checksum-SHA256"] = digest
            return response
        if artifact == "bundle":
            # Built once per model (and view of its lineage) and stored: a download reads the stored file.
            return stored_file_response(
                cards.bundle_file(model, request.user),
                filename=f"model-{model.pk}-bundle.zip",
                content_type="application/zip",
            )
        if artifact == "config":
            data, name = cards.python_config(model).encode("utf-8"), f"model-{model.pk}-config.py"
        else:
            data, name = (
                cards.card_markdown(cards.model_card(model, request.user)).encode("utf-8"),
                (f"model-{model.pk}-card.md"),
            )
        response = HttpResponse(data, content_type="application/octet-stream")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["X-Checksum-SHA256"] = hashlib.sha256(data).hexdigest()
        return response

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"], filter_backends=[])
    def card(self, request, pk=None):
        """The model card as JSON: classes, architecture, metrics per epoch and best, parameters, dataset and split
        sizes, lineage, file hashes and library versions."""
        return Response(cards.model_card(self.get_object(), request.user))
