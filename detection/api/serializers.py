"""The shapes of the detection API. Only shapes are checked here; every rule lives in the services."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from datasets.models import Orthophoto
from training.models import TrainingRun

from ..models import Detection, IgnoreZone
from ..params import SPECS


@extend_schema_field(OpenApiTypes.OBJECT)
class JsonObjectField(serializers.Field):
    """A JSON object, given as one (JSON bodies) or as its text (a form field of a multipart upload)."""

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                raise serializers.ValidationError("Not JSON.") from None
        if not isinstance(data, dict):
            raise serializers.ValidationError("A JSON object.")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class DetectionRunCreateSerializer(serializers.Serializer):
    model = serializers.IntegerField(help_text="Id of the trained model to detect with.")
    orthophotos = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list, help_text="Ids of stored orthophotos."
    )
    dataset = serializers.IntegerField(
        required=False, allow_null=True, help_text="Dataset the uploaded files are kept with (multipart uploads)."
    )
    files = serializers.ListField(
        child=serializers.FileField(), required=False, default=list, help_text="GeoTIFFs to upload and detect on."
    )
    known_sites = JsonObjectField(
        required=False,
        help_text="The area's known sites (GeoJSON FeatureCollection, any CRS): the run reports site recall, "
        "precision and false detections per km² against them.",
    )
    known_sites_file = serializers.FileField(required=False, help_text="The known sites as a GeoJSON file.")
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    time_limit_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    priority = serializers.ChoiceField(choices=["normal", "high"], default="normal")
    parameters = JsonObjectField(
        required=False,
        default=dict,
        help_text="; ".join([*(f"{k}: {s.describe()}" for k, s in SPECS.items()), "classes: the model's class names"]),
    )


class DetectionRunSerializer(serializers.ModelSerializer):
    model = serializers.IntegerField(source="evaluated_model_id", read_only=True, allow_null=True)
    model_name = serializers.CharField(source="evaluated_model.name", read_only=True, default=None)
    dataset_name = serializers.CharField(source="dataset.name", read_only=True)
    orthophotos = serializers.SerializerMethodField()
    percent = serializers.FloatField(source="progress_percent", read_only=True)
    windows_done = serializers.IntegerField(source="current_iter", read_only=True)
    windows_total = serializers.IntegerField(source="max_iters", read_only=True)
    summary = serializers.JSONField(source="export_summary", read_only=True)
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "name",
            "status",
            "model",
            "model_name",
            "dataset",
            "dataset_name",
            "orthophotos",
            "parameters",
            "percent",
            "windows_done",
            "windows_total",
            "eta_seconds",
            "device",
            "summary",
            "stop_reason",
            "error_message",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_orthophotos(self, run: TrainingRun) -> list[int]:
        return list(run.parameters.get("orthophotos") or [])


class DetectionSerializer(serializers.ModelSerializer):
    orthophoto_name = serializers.CharField(source="orthophoto.name", read_only=True)
    geometry = serializers.SerializerMethodField(help_text="GeoJSON polygon (WGS 84); null in pixel coordinates.")
    coordinates = serializers.CharField(read_only=True, help_text="map, or pixel (a photo without georeferencing).")

    class Meta:
        model = Detection
        fields = [
            "id",
            "run",
            "class_name",
            "label",
            "score",
            "geometry",
            "area_m2",
            "orthophoto",
            "orthophoto_name",
            "pixel_box",
            "coordinates",
            "merged",
            "ignored",
            "ignore_zone",
            "state",
            "origin",
            "model_box",
            "model_class",
            "reviewed_by",
            "reviewed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_geometry(self, d: Detection) -> dict | None:
        return json.loads(d.geometry.geojson) if d.geometry is not None else None


class OrthophotoSerializer(serializers.ModelSerializer):
    footprint = serializers.SerializerMethodField(help_text="GeoJSON polygon (WGS 84); null when not georeferenced.")

    class Meta:
        model = Orthophoto
        fields = [
            "id",
            "dataset",
            "name",
            "sha256",
            "size_bytes",
            "width",
            "height",
            "bands",
            "georeferenced",
            "srid",
            "geotransform",
            "pixel_size_m",
            "footprint",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_footprint(self, o: Orthophoto) -> dict | None:
        return json.loads(o.footprint.geojson) if o.footprint is not None else None


class OrthophotoUploadSerializer(serializers.Serializer):
    dataset = serializers.IntegerField()
    file = serializers.FileField(help_text="A GeoTIFF: 8-bit grey, RGB or RGBA; georeferenced or not.")


class IgnoreZoneSerializer(serializers.ModelSerializer):
    geometry = serializers.SerializerMethodField()

    class Meta:
        model = IgnoreZone
        fields = ["id", "dataset", "name", "geometry", "created_at"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_geometry(self, zone: IgnoreZone) -> dict:
        return json.loads(zone.geometry.geojson)


class IgnoreZoneCreateSerializer(serializers.Serializer):
    dataset = serializers.IntegerField()
    name = serializers.CharField(max_length=200)
    geometry = JsonObjectField(help_text="GeoJSON (WGS 84): a FeatureCollection, Feature, Polygon or MultiPolygon.")


class BoxField(serializers.ListField):
    def __init__(self, **kwargs):
        super().__init__(child=serializers.FloatField(), min_length=4, max_length=4, **kwargs)


class DetectionReviewSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=Detection.State.choices, required=False)
    pixel_box = BoxField(required=False, help_text="[x1, y1, x2, y2] in the orthophoto's pixels, inside the crop.")
    class_name = serializers.CharField(max_length=100, required=False, help_text="One of the run's model's classes.")


class DetectionAddSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    orthophoto = serializers.IntegerField()
    pixel_box = BoxField(help_text="[x1, y1, x2, y2] in the orthophoto's pixels.")
    class_name = serializers.CharField(max_length=100)


class BulkReviewSerializer(serializers.Serializer):
    detections = serializers.ListField(child=serializers.IntegerField(), min_length=1, max_length=10_000)
    state = serializers.ChoiceField(choices=Detection.State.choices)


class ToDatasetSerializer(serializers.Serializer):
    dataset = serializers.IntegerField(required=False, help_text="An existing dataset you may change.")
    dataset_name = serializers.CharField(max_length=200, required=False, help_text="Or a new dataset's name.")
    tile_size = serializers.IntegerField(required=False, help_text="Default: the run's window size.")
    overlap = serializers.IntegerField(required=False, help_text="Pixels; default a quarter of the tile.")
    hard_negatives = serializers.BooleanField(default=True, help_text="Rejected detections as background tiles.")
