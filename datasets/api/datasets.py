"""REST API of datasets: lists and details, the images of a dataset, its COCO zip, and the edits of users with the
change permission on it (create a dataset, add classes and images, correct images, add/change/delete boxes), and
COCO zip uploads imported by a worker. Every rule is the services'; this module only translates."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from access.rules import get_visible, visible
from core.api import ActionPermission
from core.errors import ApplicationError

from .. import services
from ..coco_zip import export_document, zip_response
from ..imports import dataset_import_create, may_import, orthophoto_tiling_create
from ..models import Annotation, Dataset, DatasetImage
from ..selectors import datasets_with_stats
from .serializers import (
    AnnotationSerializer,
    AnnotationUpdateSerializer,
    AnnotationWriteSerializer,
    ClassesAddSerializer,
    DatasetClassSerializer,
    DatasetCreateSerializer,
    DatasetDetailSerializer,
    DatasetFilter,
    DatasetImageSerializer,
    DatasetImportSerializer,
    DatasetSerializer,
    DatasetUpdateSerializer,
    ImageUpdateSerializer,
    ImageUploadSerializer,
    ImportRequestSerializer,
    TilingRequestSerializer,
    UploadedImageSerializer,
)


def _count(queryset, field: str = "pk"):
    return Coalesce(
        Subquery(queryset.values(field).annotate(n=Count("*")).values("n")[:1], output_field=IntegerField()), 0
    )


def _valid(serializer_class, data, **kwargs) -> dict:
    payload = serializer_class(data=data, **kwargs)
    payload.is_valid(raise_exception=True)
    return payload.validated_data


def _images_with_counts(queryset):
    return queryset.annotate(
        annotation_count=_count(Annotation.objects.filter(image=OuterRef("pk")).order_by(), "image")
    )


class DatasetViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Datasets the user may see, with class list, counts and geographic extent; created and changed by users with
    the permissions to."""

    lookup_value_regex = "[0-9]+"  # ids are integers; anything else is a 404 at the URL
    http_method_names = ["get", "post", "patch", "head", "options"]

    serializer_class = DatasetSerializer
    permission_classes = [ActionPermission]
    action_permissions = {
        "list": None,
        "retrieve": "datasets.view_dataset",
        "create": "datasets.add_dataset",
        "partial_update": "datasets.change_dataset",
        "images": "datasets.view_dataset",
        "add_image": "datasets.change_dataset",
        "add_classes": "datasets.change_dataset",
        "export": "datasets.view_dataset",
        "import_zip": None,  # a new dataset needs add_dataset, an existing one its change permission (service)
        "tile_orthophoto": None,  # the same
    }
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name"]
    filterset_class = DatasetFilter

    def get_queryset(self):
        return datasets_with_stats(visible(self.request.user, "datasets.view_dataset", Dataset.objects.all()))

    def _detail(self, dataset, code=status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=dataset.pk)
        return Response(DatasetDetailSerializer(fresh, context=self.get_serializer_context()).data, status=code)

    def get_serializer_class(self):
        return DatasetDetailSerializer if self.action == "retrieve" else super().get_serializer_class()

    @extend_schema(request=DatasetCreateSerializer, responses={201: DatasetDetailSerializer})
    def create(self, request, *args, **kwargs):
        """Create an empty dataset with its classes (in order: category ids 1..N); you may then change it."""
        data = _valid(DatasetCreateSerializer, request.data)
        dataset = services.dataset_create(
            name=data["name"], class_names=data["classes"], description=data["description"], created_by=request.user
        )
        return self._detail(dataset, status.HTTP_201_CREATED)

    @extend_schema(request=DatasetUpdateSerializer, responses=DatasetDetailSerializer)
    def partial_update(self, request, *args, **kwargs):
        """Rename the dataset or change its description."""
        dataset = self.get_object()
        data = _valid(DatasetUpdateSerializer, request.data)
        services.dataset_update(
            dataset=dataset, user=request.user, name=data.get("name"), description=data.get("description")
        )
        return self._detail(dataset)

    @extend_schema(request=ClassesAddSerializer, responses={201: DatasetClassSerializer(many=True)}, filters=False)
    @action(detail=True, methods=["post"], url_path="classes", filter_backends=[])
    def add_classes(self, request, pk=None):
        """Append classes after the last one; existing classes keep their category ids."""
        dataset = self.get_object()
        data = _valid(ClassesAddSerializer, request.data)
        added = services.dataset_classes_add(dataset=dataset, names=data["classes"], user=request.user)
        return Response(DatasetClassSerializer(added, many=True).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=DatasetImageSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], filter_backends=[], serializer_class=DatasetImageSerializer)
    def images(self, request, pk=None):
        """The dataset's images, paginated, with their annotation counts."""
        dataset = self.get_object()
        images = _images_with_counts(DatasetImage.objects.filter(dataset=dataset).order_by("id"))
        page = self.paginate_queryset(images)
        return self.get_paginated_response(DatasetImageSerializer(page, many=True).data)

    @extend_schema(request=ImageUploadSerializer, responses={201: UploadedImageSerializer}, filters=False)
    @images.mapping.post
    def add_image(self, request, pk=None):
        """Add one image (multipart), with its optional location and footprint (GeoJSON, WGS 84) and capture
        time. The file is decoded in full; an image already in the dataset (same content) is refused."""
        dataset = self.get_object()
        data = _valid(ImageUploadSerializer, request.data)
        upload = data["image"]
        if upload.size > settings.DUMPSITE_MAX_IMAGE_BYTES:
            raise ApplicationError(
                f"The image is larger than {settings.DUMPSITE_MAX_IMAGE_BYTES:,} bytes.", {"image": "too large"}
            )
        image = services.dataset_image_create(
            dataset=dataset,
            content=upload.read(),
            original_name=upload.name,
            location=data.get("location"),
            footprint=data.get("footprint"),
            captured_at=data.get("captured_at"),
            enabled=data["enabled"],
            user=request.user,
        )
        row = _images_with_counts(DatasetImage.objects.filter(pk=image.pk)).get()
        found = {"found": image.georeference.found, "problems": image.georeference.problems}
        return Response({**DatasetImageSerializer(row).data, "georeference": found}, status=status.HTTP_201_CREATED)

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

    def _upload(self, serializer_class) -> tuple[dict, Dataset | None]:
        """An upload's fields and the existing dataset it names (if any); a user who may neither create datasets nor
        change any is refused before the body is read further."""
        if not may_import(self.request.user):
            raise PermissionDenied("You may neither create datasets nor change any.")
        data = _valid(serializer_class, self.request.data)
        if data.get("dataset") is None:
            return data, None
        return data, get_visible(self.get_queryset(), data["dataset"], "dataset")

    @extend_schema(request=ImportRequestSerializer, responses={202: DatasetImportSerializer}, filters=False)
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser], filter_backends=[])
    def import_zip(self, request):
        """Upload a COCO zip (multipart ``archive``) into a new dataset (``dataset_name``) or an existing one
        (``dataset``; classes matched by name, new ones only with ``add_classes``). The archive is checked at once
        (unsafe or unreadable archives get 400 and leave nothing); a worker imports it: answers 202, follow it at
        ``/api/dataset-imports/<id>/`` (percent, ETA, and the report of every rejected item)."""
        data, dataset = self._upload(ImportRequestSerializer)
        upload = data["archive"]
        job = dataset_import_create(
            upload=upload,
            archive_name=upload.name,
            dataset=dataset,
            dataset_name=data.get("dataset_name"),
            add_classes=data["add_classes"],
            coco_file=data.get("coco_file"),
            user=request.user,
        )
        return Response(DatasetImportSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=TilingRequestSerializer, responses={202: DatasetImportSerializer}, filters=False)
    @action(
        detail=False, methods=["post"], url_path="tile-orthophoto", parser_classes=[MultiPartParser], filter_backends=[]
    )
    def tile_orthophoto(self, request):
        """Upload orthophotos (GeoTIFF, repeat ``orthophoto``) and the dump sites outlined on them (``annotations``,
        GeoJSON) to cut into tiles of a new dataset (``dataset_name``) or an existing one (``dataset``). Checked at
        once (CRS, bands, GeoJSON, overlap: 400 and nothing left); a worker tiles them: answers 202, follow it at
        ``/api/dataset-imports/<id>/`` (percent, ETA, tiles kept and skipped, rejected sites)."""
        data, dataset = self._upload(TilingRequestSerializer)
        options = {k: data[k] for k in TILING_FIELDS if data.get(k) is not None}
        job = orthophoto_tiling_create(
            orthophotos=data["orthophoto"],
            annotations=data["annotations"],
            options=options,
            dataset=dataset,
            dataset_name=data.get("dataset_name"),
            add_classes=data["add_classes"],
            user=request.user,
        )
        return Response(DatasetImportSerializer(job).data, status=status.HTTP_202_ACCEPTED)


TILING_FIELDS = ("tile_size", "overlap", "min_box_share", "background_ratio", "class_property")


class DatasetContentViewSet(viewsets.GenericViewSet):
    """Rows of a dataset: seen with the dataset's view permission, changed with its change permission."""

    lookup_value_regex = "[0-9]+"
    permission_classes = [ActionPermission]
    filter_backends: list = []

    def visible_datasets(self):
        return visible(self.request.user, "datasets.view_dataset", Dataset.objects.all())


class DatasetImageViewSet(mixins.RetrieveModelMixin, DatasetContentViewSet):
    """One image of a dataset: read it, include or exclude it, correct its place and time, and its boxes."""

    serializer_class = DatasetImageSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]
    action_permissions = {
        "retrieve": "datasets.view_dataset",
        "partial_update": "datasets.change_dataset",
        "annotations": "datasets.view_dataset",
        "add_annotation": "datasets.change_dataset",
    }

    def get_queryset(self):
        return _images_with_counts(
            DatasetImage.objects.filter(dataset__in=self.visible_datasets()).select_related("dataset")
        )

    def permission_object(self, image):
        return image.dataset

    @extend_schema(request=ImageUpdateSerializer, responses=DatasetImageSerializer)
    def partial_update(self, request, pk=None):
        """``enabled: false`` keeps the image (and its boxes) out of training and exports; ``location``,
        ``footprint`` (GeoJSON, WGS 84, or null) and ``captured_at`` correct its place and time."""
        image = self.get_object()
        data = _valid(ImageUpdateSerializer, request.data)
        services.dataset_image_update(
            image=image,
            user=request.user,
            enabled=data.get("enabled"),
            location=data.get("location", ...),
            footprint=data.get("footprint", ...),
            captured_at=data.get("captured_at", ...),
        )
        return Response(DatasetImageSerializer(self.get_queryset().get(pk=image.pk)).data)

    @extend_schema(responses=AnnotationSerializer(many=True))
    @action(detail=True, methods=["get"])
    def annotations(self, request, pk=None):
        """The image's boxes (enabled or not)."""
        image = self.get_object()
        boxes = Annotation.objects.filter(image=image).select_related("dataset_class").order_by("id")
        return Response(AnnotationSerializer(boxes, many=True).data)

    @extend_schema(request=AnnotationWriteSerializer, responses={201: AnnotationSerializer})
    @annotations.mapping.post
    def add_annotation(self, request, pk=None):
        """Add a box (pixels; inside the image; a class of the image's dataset)."""
        image = self.get_object()
        data = _valid(AnnotationWriteSerializer, request.data)
        box = services.annotation_create(
            user=request.user,
            image=image,
            dataset_class=_class_of(image.dataset, data["dataset_class"]),
            x=data["x"],
            y=data["y"],
            width=data["width"],
            height=data["height"],
            polygon=data.get("polygon"),
            enabled=data["enabled"],
        )
        return Response(AnnotationSerializer(box).data, status=status.HTTP_201_CREATED)


def _class_of(dataset: Dataset, class_id: int):
    found = dataset.classes.filter(pk=class_id).first()
    if found is None:
        raise ApplicationError(
            f"Class #{class_id} is not a class of dataset {dataset.name!r}.", {"dataset_class": "not of this dataset"}
        )
    return found


class AnnotationViewSet(mixins.RetrieveModelMixin, DatasetContentViewSet):
    """One box: read, change (class, geometry, enabled) or delete it."""

    serializer_class = AnnotationSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]
    action_permissions = {
        "retrieve": "datasets.view_dataset",
        "partial_update": "datasets.change_dataset",
        "destroy": "datasets.change_dataset",
    }

    def get_queryset(self):
        return Annotation.objects.filter(image__dataset__in=self.visible_datasets()).select_related(
            "dataset_class", "image__dataset"
        )

    def permission_object(self, annotation):
        return annotation.image.dataset

    @extend_schema(request=AnnotationUpdateSerializer, responses=AnnotationSerializer)
    def partial_update(self, request, pk=None):
        """Change the box's class, geometry or ``enabled`` (disabled boxes stay out of training and exports)."""
        box = self.get_object()
        data = _valid(AnnotationUpdateSerializer, request.data)
        dataset_class = data.get("dataset_class")
        box = services.annotation_update(
            annotation=box,
            user=request.user,
            dataset_class=None if dataset_class is None else _class_of(box.image.dataset, dataset_class),
            x=data.get("x"),
            y=data.get("y"),
            width=data.get("width"),
            height=data.get("height"),
            polygon=data.get("polygon", ...),
            enabled=data.get("enabled"),
        )
        return Response(AnnotationSerializer(box).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        """Delete the box for good (``enabled: false`` keeps it, out of training and exports)."""
        services.annotation_delete(annotation=self.get_object(), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
