"""REST API of datasets: read-only lists and details, the images of a dataset, and its COCO zip."""

from __future__ import annotations

import json

import django_filters
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.decorators import action

from access.rules import visible
from dumpsite.api import ActionPermission
from dumpsite.filters import ApiFilterSet, UtcIsoDateTimeFilter

from .coco_zip import export_document, zip_response
from .models import Annotation, Dataset, DatasetClass, DatasetImage
from .selectors import datasets_with_stats


def _count(queryset, field: str = "pk"):
    return Coalesce(
        Subquery(queryset.values(field).annotate(n=Count("*")).values("n")[:1], output_field=IntegerField()), 0
    )


@extend_schema_field(OpenApiTypes.OBJECT)
class GeoJSONField(serializers.Field):
    """A geometry as a GeoJSON object (read only)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return json.loads(value.geojson) if value is not None else None


class DatasetClassSerializer(serializers.ModelSerializer):
    category_id = serializers.SerializerMethodField(help_text="COCO category id of this class (1..N).")

    class Meta:
        model = DatasetClass
        fields = ["id", "name", "position", "category_id"]

    def get_category_id(self, obj) -> int:
        return obj.position + 1


class DatasetSerializer(serializers.ModelSerializer):
    classes = DatasetClassSerializer(many=True, read_only=True)
    image_count = serializers.IntegerField(read_only=True)
    annotation_count = serializers.IntegerField(read_only=True)
    extent = GeoJSONField(
        help_text="Bounding box of the images' footprints (or locations where they have none), GeoJSON, WGS 84."
    )
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "description",
            "classes",
            "image_count",
            "annotation_count",
            "extent",
            "created_by",
            "created_at",
            "updated_at",
        ]


class DatasetImageSerializer(serializers.ModelSerializer):
    location = GeoJSONField()
    footprint = GeoJSONField()
    annotation_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = DatasetImage
        fields = [
            "id",
            "original_name",
            "sha256",
            "width",
            "height",
            "enabled",
            "location",
            "footprint",
            "captured_at",
            "annotation_count",
            "created_at",
        ]


class DatasetFilter(ApiFilterSet):
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lte")
    created_by = django_filters.CharFilter(field_name="created_by__username")

    class Meta:
        model = Dataset
        fields = ["created_by"]


class DatasetViewSet(viewsets.ReadOnlyModelViewSet):
    """Datasets the user may see, with class list, counts and geographic extent."""

    lookup_value_regex = "[0-9]+"  # ids are integers; anything else is a 404 at the URL

    serializer_class = DatasetSerializer
    permission_classes = [ActionPermission]
    action_permissions = {
        "list": None,
        "retrieve": "datasets.view_dataset",
        "images": "datasets.view_dataset",
        "export": "datasets.view_dataset",
    }
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]
    filterset_class = DatasetFilter

    def get_queryset(self):
        return datasets_with_stats(visible(self.request.user, "datasets.view_dataset", Dataset.objects.all()))

    @extend_schema(responses=DatasetImageSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], filter_backends=[], serializer_class=DatasetImageSerializer)
    def images(self, request, pk=None):
        """The dataset's images, paginated, with their annotation counts."""
        dataset = self.get_object()
        images = (
            DatasetImage.objects.filter(dataset=dataset)
            .order_by("id")
            .annotate(annotation_count=_count(Annotation.objects.filter(image=OuterRef("pk")).order_by(), "image"))
        )
        page = self.paginate_queryset(images)
        return self.get_paginated_response(DatasetImageSerializer(page, many=True).data)

    @extend_schema(
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
        filters=False,
        description=(
            "The dataset as a COCO zip, streamed: annotations.json (category ids 1..N in the dataset's class order; "
            "enabled images and boxes only) and images/."
        ),
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def export(self, request, pk=None):
        """The dataset as a COCO zip (enabled images and boxes), streamed."""
        dataset = self.get_object()
        return zip_response(export_document(dataset), f"{dataset.name}.zip")
