"""Serializers of the datasets API: what clients read, and the shapes of what they send (checked again by the
services, which hold the rules)."""

from __future__ import annotations

import json

import django_filters
from django.contrib.gis.geos import GEOSException, GEOSGeometry
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.filters import ApiFilterSet, UtcIsoDateTimeFilter

from ..models import Annotation, Dataset, DatasetClass, DatasetImage, DatasetImport
from ..selectors import ground_resolution


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
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)

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


class GroundResolutionSerializer(serializers.Serializer):
    images = serializers.IntegerField(help_text="Images with a footprint, whose ground resolution is known.")
    min_m = serializers.FloatField(help_text="Finest ground sample distance, metres per pixel.")
    median_m = serializers.FloatField()
    max_m = serializers.FloatField(help_text="Coarsest ground sample distance, metres per pixel.")


class DatasetDetailSerializer(DatasetSerializer):
    ground_resolution = serializers.SerializerMethodField(
        help_text="Ground sample distance of the images with a footprint (null when none has one)."
    )

    class Meta(DatasetSerializer.Meta):
        fields = [*DatasetSerializer.Meta.fields, "ground_resolution"]

    @extend_schema_field(GroundResolutionSerializer(allow_null=True))
    def get_ground_resolution(self, obj) -> dict | None:
        return ground_resolution(obj)


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
            "altitude_m",
            "gsd_m",
            "captured_at",
            "annotation_count",
            "created_at",
        ]


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "description": "A GeoJSON geometry in WGS 84 (longitude, latitude); in a multipart form, its JSON text.",
    }
)
class GeoJSONInputField(serializers.Field):
    """A GeoJSON geometry of one type (``Point``, ``Polygon``), given as an object or (multipart forms) as JSON
    text; WGS 84 unless it names another CRS, which is refused."""

    def __init__(self, geom_type: str, **kwargs):
        self.geom_type = geom_type
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError:
                raise serializers.ValidationError("Not GeoJSON (not valid JSON).") from None
        if not isinstance(data, dict) or data.get("type") != self.geom_type:
            raise serializers.ValidationError(f"A GeoJSON {self.geom_type} object is expected.")
        if "crs" in data:
            raise serializers.ValidationError("Give coordinates in WGS 84 (longitude, latitude), without 'crs'.")
        try:
            # Only the type and coordinates reach GDAL's reader (any other member, a "CRS" spelled otherwise too,
            # is left out).
            geom = GEOSGeometry(json.dumps({"type": data["type"], "coordinates": data.get("coordinates")}), srid=4326)
        except (GEOSException, ValueError, TypeError):
            raise serializers.ValidationError(f"Not a readable GeoJSON {self.geom_type}.") from None
        if geom.empty:
            raise serializers.ValidationError(f"The {self.geom_type} is empty.")
        geom.srid = 4326
        return geom

    def to_representation(self, value):
        return json.loads(value.geojson) if value is not None else None


class DatasetCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    classes = serializers.ListField(
        child=serializers.CharField(max_length=100, trim_whitespace=False),
        min_length=1,
        help_text="Class names in order: position i is COCO category id i + 1.",
    )


class DatasetUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)


class ClassesAddSerializer(serializers.Serializer):
    classes = serializers.ListField(
        child=serializers.CharField(max_length=100, trim_whitespace=False),
        min_length=1,
        help_text="Names appended after the dataset's last class (existing category ids do not move).",
    )


class ImageUploadSerializer(serializers.Serializer):
    image = serializers.FileField(help_text="The image file (JPEG, PNG, TIFF, BMP or WebP).")
    location = GeoJSONInputField("Point", help_text="GeoJSON Point (WGS 84): the tile's centre.")
    footprint = GeoJSONInputField("Polygon", help_text="GeoJSON Polygon (WGS 84): the tile's ground outline.")
    captured_at = serializers.DateTimeField(required=False, allow_null=True)
    enabled = serializers.BooleanField(required=False, default=True)


class UploadedImageSerializer(DatasetImageSerializer):
    georeference = serializers.DictField(
        read_only=True, help_text="What the file told of its place and time: {found: [...], problems: [...]}."
    )

    class Meta(DatasetImageSerializer.Meta):
        fields = [*DatasetImageSerializer.Meta.fields, "georeference"]


class ImageUpdateSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    location = GeoJSONInputField("Point")
    footprint = GeoJSONInputField("Polygon")
    captured_at = serializers.DateTimeField(required=False, allow_null=True)


class AnnotationSerializer(serializers.ModelSerializer):
    class_name = serializers.CharField(source="dataset_class.name", read_only=True)
    category_id = serializers.SerializerMethodField(help_text="COCO category id of the box's class (1..N).")

    class Meta:
        model = Annotation
        fields = [
            "id",
            "image",
            "dataset_class",
            "class_name",
            "category_id",
            "x",
            "y",
            "width",
            "height",
            "polygon",
            "enabled",
        ]
        read_only_fields = fields

    def get_category_id(self, obj) -> int:
        return obj.dataset_class.position + 1


class AnnotationWriteSerializer(serializers.Serializer):
    """A box in pixels: (x, y) is its top-left corner; it lies inside its image."""

    dataset_class = serializers.IntegerField(help_text="Id of a class of the image's dataset.")
    x = serializers.FloatField()
    y = serializers.FloatField()
    width = serializers.FloatField()
    height = serializers.FloatField()
    polygon = serializers.JSONField(required=False, allow_null=True, help_text="[[x, y], ...] in pixels, optional.")
    enabled = serializers.BooleanField(required=False, default=True)


class AnnotationUpdateSerializer(AnnotationWriteSerializer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False
        self.fields["enabled"].default = serializers.empty


class ImportRequestSerializer(serializers.Serializer):
    archive = serializers.FileField(
        allow_empty_file=True,  # refused by the archive check, with the same reason as everywhere
        help_text="The COCO zip: CVAT COCO 1.0, Label Studio COCO, or annotations.json with images/.",
    )
    dataset = serializers.IntegerField(required=False, help_text="Import into this dataset (its change permission).")
    dataset_name = serializers.CharField(required=False, max_length=200, help_text="Or: create a dataset so named.")
    add_classes = serializers.BooleanField(
        required=False, default=False, help_text="Into an existing dataset: add the classes it lacks."
    )
    coco_file = serializers.CharField(
        required=False, max_length=500, help_text="The COCO file, when the archive holds several JSON files."
    )


class TilingRequestSerializer(serializers.Serializer):
    orthophoto = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        min_length=1,
        help_text="One or more orthophotos: GeoTIFFs with a CRS, 8-bit grey, RGB or RGBA (repeat the field).",
    )
    annotations = serializers.FileField(
        allow_empty_file=True,
        help_text="The dump sites: a GeoJSON FeatureCollection of polygons (or bbox features), any EPSG CRS named in "
        "its 'crs' member (else WGS 84), the class in a property.",
    )
    dataset = serializers.IntegerField(required=False, help_text="Tile into this dataset (its change permission).")
    dataset_name = serializers.CharField(required=False, max_length=200, help_text="Or: create a dataset so named.")
    add_classes = serializers.BooleanField(required=False, default=False)
    tile_size = serializers.IntegerField(required=False, help_text="Tile width and height in pixels (1024).")
    overlap = serializers.IntegerField(required=False, help_text="Pixels shared by neighbouring tiles (128).")
    min_box_share = serializers.FloatField(
        required=False, help_text="A site cut by a tile edge keeps its box when this share of it is inside (0.3)."
    )
    background_ratio = serializers.FloatField(
        required=False, help_text="Share of the tiles without any site that are kept (0.1), chosen reproducibly."
    )
    class_property = serializers.CharField(required=False, help_text="The feature property naming the class.")


class DatasetImportSerializer(serializers.ModelSerializer):
    percent = serializers.FloatField(read_only=True)
    eta_seconds = serializers.SerializerMethodField()
    dataset_name = serializers.CharField(source="target_name", read_only=True)
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = DatasetImport
        fields = [
            "id",
            "kind",
            "status",
            "dataset",
            "dataset_name",
            "add_classes",
            "archive_name",
            "archive_bytes",
            "archive_members",
            "layout",
            "coco_file",
            "percent",
            "items_done",
            "items_total",
            "eta_seconds",
            "images_imported",
            "annotations_imported",
            "classes_added",
            "rejected_count",
            "rejected",
            "georeferenced_count",
            "georeferenced",
            "parameters",
            "stats",
            "error_message",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_eta_seconds(self, obj) -> float | None:
        return obj.eta_seconds(timezone.now())


class DatasetFilter(ApiFilterSet):
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lte")
    created_by = django_filters.CharFilter(field_name="created_by__username")

    class Meta:
        model = Dataset
        fields = ["created_by"]
