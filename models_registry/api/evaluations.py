"""REST API of evaluations: per-class results, PR curves, confusion matrix, and the gallery of images."""

from __future__ import annotations

from django.apps import apps
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from access.rules import get_visible, visible
from core.api import ActionPermission

from ..evaluations import GALLERY_ORDERS, gallery_images, gallery_render
from ..selectors import evaluations_visible_to
from .serializers import EvaluationImageSerializer, EvaluationSerializer, EvaluationSummarySerializer

STATISTICS = "models_registry.view_trainedmodel_statistics"


def visible_run_ids(user, evaluations) -> set[int]:
    wanted = {e.run_id for e in evaluations} - {None}
    runs = visible(
        user, "training.view_trainingrun", apps.get_model("training", "TrainingRun").objects.filter(pk__in=wanted)
    )
    return set(runs.values_list("pk", flat=True))


class EvaluationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Results of models on annotated images: the validation of each training run, and evaluation runs
    (``POST /api/trained-models/<id>/evaluate/``). Needs the statistics permission; only evaluations of models and
    datasets you may see."""

    lookup_value_regex = "[0-9]+"
    permission_classes = [ActionPermission]
    action_permissions = {"list": STATISTICS, "retrieve": STATISTICS, "images": STATISTICS, "picture": STATISTICS}
    filterset_fields = ["model", "dataset", "kind"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        return evaluations_visible_to(self.request.user)

    def get_serializer_class(self):
        return EvaluationSummarySerializer if self.action == "list" else EvaluationSerializer

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        context = {**self.get_serializer_context(), "visible_runs": visible_run_ids(request.user, page)}
        return self.get_paginated_response(EvaluationSummarySerializer(page, many=True, context=context).data)

    def retrieve(self, request, *args, **kwargs):
        evaluation = self.get_object()
        context = {**self.get_serializer_context(), "visible_runs": visible_run_ids(request.user, [evaluation])}
        return Response(EvaluationSerializer(evaluation, context=context).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("class", str, description="Only images showing this class (by name)."),
            OpenApiParameter("order", str, enum=[*GALLERY_ORDERS], description="worst (default): most errors first."),
        ],
        responses=EvaluationImageSerializer(many=True),
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def images(self, request, pk=None):
        """The gallery: each image's boxes and detections with their outcome, worst first, filterable by class."""
        evaluation = self.get_object()
        class_index = None
        name = request.query_params.get("class")
        if name:
            classes = evaluation.confusion.get("labels", [])[:-1]
            if name not in classes:
                raise ValidationError({"class": [f"not a class of this evaluation; one of: {', '.join(classes)}"]})
            class_index = classes.index(name)
        order = request.query_params.get("order", "worst")
        if order not in GALLERY_ORDERS:
            raise ValidationError({"order": [f"one of {', '.join(GALLERY_ORDERS)}"]})
        page = self.paginate_queryset(gallery_images(evaluation, class_index=class_index, order=order))
        return self.get_paginated_response(EvaluationImageSerializer(page, many=True).data)

    @extend_schema(responses={(200, "image/jpeg"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path=r"images/(?P<row>[0-9]+)/picture", filter_backends=[])
    def picture(self, request, pk=None, row=None):
        """One gallery image drawn: boxes (green found, orange missed, purple wrong class) and detections (blue
        true positive, red false positive), rendered on first request and cached."""
        evaluation = self.get_object()
        item = get_visible(evaluation.images.all(), row, "gallery image")
        try:
            picture = gallery_render(item, classes=evaluation.confusion.get("labels", [])[:-1])
        except FileNotFoundError:
            raise NotFound("The image file is no longer in storage.") from None
        return HttpResponse(picture, content_type="image/jpeg")
