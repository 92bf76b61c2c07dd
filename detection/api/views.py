"""REST API of detection: orthophotos to detect on, detection runs (start, watch, cancel, retry), their detections
(filtered, paged, as JSON or GeoJSON) and downloads of a whole run (GeoPackage, GeoJSON, CSV), ignore zones."""

from __future__ import annotations

import json

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from core.api import ActionPermission, error_body
from core.errors import ApplicationError
from datasets.models import Dataset
from datasets.orthophotos import orthophoto_store
from datasets.selectors import datasets_visible_to, orthophotos_visible_to
from models_registry.selectors import models_visible_to
from training.services import training_run_cancel, training_run_retry

from ..exports import FORMATS, export, feature_collection
from ..models import Detection, IgnoreZone
from ..review import detection_add, detection_review, detection_review_bulk
from ..selectors import detection_runs_visible_to, detections_of, ignore_zones_visible_to
from ..services import (
    detection_run_create_with_uploads,
    ignore_zone_create,
    ignore_zone_delete,
    known_sites_of,
    orthophotos_for,
)
from ..to_dataset import reviewed_sites_to_dataset
from .serializers import (
    BulkReviewSerializer,
    DetectionAddSerializer,
    DetectionReviewSerializer,
    DetectionRunCreateSerializer,
    DetectionRunSerializer,
    DetectionSerializer,
    IgnoreZoneCreateSerializer,
    IgnoreZoneSerializer,
    OrthophotoSerializer,
    OrthophotoUploadSerializer,
    ToDatasetSerializer,
)


def invalid(field: str, message: str) -> Response:
    return Response(error_body("invalid", "Invalid input.", {field: [message]}), status=400)


def dataset_for_upload(user, dataset_id) -> Dataset:
    """The dataset uploads go to: seen by the user (else 'no such dataset', as for a missing one)."""
    dataset = datasets_visible_to(user).filter(pk=dataset_id).first() if dataset_id is not None else None
    if dataset is None:
        raise ApplicationError("No such dataset.", {"dataset": "no such dataset"})
    return dataset


class OrthophotoViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Orthophotos of the datasets you may see. Upload one (multipart: ``dataset``, ``file``) into a dataset you
    may change; the same file uploaded twice is one orthophoto."""

    lookup_value_regex = "[0-9]+"
    permission_classes = [ActionPermission]
    action_permissions = {"list": None, "retrieve": None, "create": "datasets.change_dataset"}
    serializer_class = OrthophotoSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    filterset_fields = ["dataset", "georeferenced"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        return orthophotos_visible_to(self.request.user).order_by("-id")

    @extend_schema(request={"multipart/form-data": OrthophotoUploadSerializer}, responses={201: OrthophotoSerializer})
    def create(self, request, *args, **kwargs):
        payload = OrthophotoUploadSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        dataset = dataset_for_upload(request.user, payload.validated_data["dataset"])
        upload = payload.validated_data["file"]
        ortho = orthophoto_store(dataset=dataset, source=upload, name=upload.name, created_by=request.user)
        return Response(OrthophotoSerializer(ortho).data, status=status.HTTP_201_CREATED)


DETECTION_FILTERS = [
    OpenApiParameter("bbox", str, description="min_lon,min_lat,max_lon,max_lat (WGS 84)"),
    OpenApiParameter("class", str, description="Class names, comma-separated."),
    OpenApiParameter("min_score", float),
    OpenApiParameter("ignored", bool),
    OpenApiParameter("as", str, enum=["json", "geojson"], description="geojson: a FeatureCollection page."),
]


class DetectionRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Detection runs you may see: a model over whole orthophotos, the sites it found stored in PostGIS. Start
    one with stored orthophotos (JSON: ``model``, ``orthophotos``) or uploads (multipart: ``model``, ``dataset``,
    ``files``); cancel and retry it like any run."""

    lookup_value_regex = "[0-9]+"
    permission_classes = [ActionPermission]
    action_permissions = {
        "list": None,
        "retrieve": "training.view_trainingrun",
        "create": "detection.run_detection",
        "cancel": "training.schedule_trainingrun",
        "retry": "training.schedule_trainingrun",
        "detections": "training.view_trainingrun",
        "download": "training.view_trainingrun",
        "sites": "training.view_trainingrun",
        "review": None,  # detection_review_bulk checks detection.review_detection (a permission of detections)
        "to_dataset": None,  # reviewed_sites_to_dataset checks it, and the target dataset's permission
    }
    serializer_class = DetectionRunSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        runs = detection_runs_visible_to(self.request.user)
        return runs.select_related("dataset", "evaluated_model", "created_by").defer("log_tail").order_by("-id")

    @extend_schema(
        request={"application/json": DetectionRunCreateSerializer, "multipart/form-data": DetectionRunCreateSerializer},
        responses={201: DetectionRunSerializer},
    )
    def create(self, request, *args, **kwargs):
        payload = DetectionRunCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        model = models_visible_to(request.user).filter(pk=data["model"]).first()
        if model is None:
            return invalid("model", "No such model.")
        if not data["orthophotos"] and not data["files"]:
            return invalid("orthophotos", "Name stored orthophotos or upload files.")
        run = detection_run_create_with_uploads(
            model=model,
            orthophotos=orthophotos_for(request.user, data["orthophotos"]) if data["orthophotos"] else [],
            uploads=data["files"],
            dataset=dataset_for_upload(request.user, data.get("dataset")) if data["files"] else None,
            known_sites=known_sites_of(data),
            parameters=data["parameters"],
            name=data.get("name", ""),
            created_by=request.user,
            time_limit_seconds=data.get("time_limit_seconds"),
            priority=data["priority"],
        )
        return Response(DetectionRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: DetectionRunSerializer})
    @action(detail=True, methods=["post"], filter_backends=[])
    def cancel(self, request, pk=None):
        """Cancel a queued or running detection run (its child stops within about a second; nothing is stored)."""
        run = training_run_cancel(run=self.get_object(), user=request.user)
        return Response(DetectionRunSerializer(run).data)

    @extend_schema(request=None, responses={201: DetectionRunSerializer})
    @action(detail=True, methods=["post"], filter_backends=[])
    def retry(self, request, pk=None):
        """Run a failed or cancelled detection run again: same model, orthophotos and parameters."""
        run = training_run_retry(run=self.get_object(), user=request.user)
        return Response(DetectionRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=DETECTION_FILTERS, responses={200: DetectionSerializer(many=True)})
    @action(detail=True, methods=["get"], filter_backends=[])
    def detections(self, request, pk=None):
        """The run's detections, best first, paged; filtered by area (bbox), class, score and ignored."""
        run = self.get_object()
        ignored = request.query_params.get("ignored")
        min_score = request.query_params.get("min_score")
        try:
            score = float(min_score) if min_score not in (None, "") else None
        except ValueError:
            return invalid("min_score", "A number.")
        rows = detections_of(
            run,
            bbox=request.query_params.get("bbox") or None,
            classes=[c for c in (request.query_params.get("class") or "").split(",") if c] or None,
            min_score=score,
            ignored=None if ignored in (None, "") else ignored.lower() in ("1", "true", "yes"),
        )
        page = self.paginate_queryset(rows)
        assert page is not None  # the API always pages
        if request.query_params.get("as") == "geojson":
            body = feature_collection(page, count=self.paginator.page.paginator.count)
            body["next"], body["previous"] = self.paginator.get_next_link(), self.paginator.get_previous_link()
            return Response(body, content_type="application/geo+json")
        return self.get_paginated_response(DetectionSerializer(page, many=True).data)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"], filter_backends=[])
    def sites(self, request, pk=None):
        """The known sites the run was judged against (GeoJSON, WGS 84), each ``found`` or not at the run's score
        threshold; the figures are the run's ``summary.sites``."""
        run = self.get_object()
        features = [
            {
                "type": "Feature",
                "id": site.pk,
                "geometry": json.loads(site.geometry.geojson),
                "properties": {"label": site.label, "class": site.class_name, "found": site.found},
            }
            for site in run.known_sites.all()
        ]
        body = {"type": "FeatureCollection", "features": features, "figures": run.export_summary.get("sites")}
        return Response(body, content_type="application/geo+json")

    @extend_schema(request=BulkReviewSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], filter_backends=[])
    def review(self, request, pk=None):
        """One decision (``confirmed``, ``rejected``, or ``new`` to undo) on many of the run's detections."""
        run = self.get_object()
        payload = BulkReviewSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        decided = detection_review_bulk(
            run=run, user=request.user, detection_ids=data["detections"], state=data["state"]
        )
        return Response({"decided": decided, "state": data["state"]})

    @extend_schema(request=ToDatasetSerializer, responses={202: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path="to-dataset", filter_backends=[])
    def to_dataset(self, request, pk=None):
        """Add the run's reviewed detections to a dataset (``dataset``) or a new one (``dataset_name``): confirmed
        ones as boxes, rejected ones as hard-negative tiles. A dataset import a worker runs; follow it at ``url``."""
        run = self.get_object()
        payload = ToDatasetSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        dataset = None
        if data.get("dataset") is not None:
            dataset = datasets_visible_to(request.user).filter(pk=data["dataset"]).first()
            if dataset is None:
                return invalid("dataset", "No such dataset.")
        job = reviewed_sites_to_dataset(
            run=run,
            user=request.user,
            dataset=dataset,
            dataset_name=data.get("dataset_name") or None,
            tile_size=data.get("tile_size"),
            overlap=data.get("overlap"),
            hard_negatives=data["hard_negatives"],
        )
        body = {"import": job.pk, "status": job.status, "url": f"/api/dataset-imports/{job.pk}/"}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[OpenApiParameter("as", str, enum=list(FORMATS), required=True)],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def download(self, request, pk=None):
        """Every detection of the run as one file: ``?as=gpkg`` (GeoPackage), ``geojson`` or ``csv``."""
        run = self.get_object()
        fmt = request.query_params.get("as", "")
        if fmt not in FORMATS:
            return invalid("as", f"One of {', '.join(FORMATS)}.")
        body = export(detections_of(run).iterator(chunk_size=2000), fmt)
        response = HttpResponse(body, content_type=FORMATS[fmt])
        response["Content-Disposition"] = f'attachment; filename="detection-run-{run.pk}.{fmt}"'
        return response


class IgnoreZoneViewSet(mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Ignore zones of the datasets you may see: detections inside them are flagged ``ignored``, never deleted.
    Adding or removing one needs the permission to change its dataset."""

    lookup_value_regex = "[0-9]+"
    permission_classes = [ActionPermission]
    action_permissions = {"list": None, "retrieve": None, "create": None, "destroy": "datasets.change_dataset"}
    serializer_class = IgnoreZoneSerializer
    filterset_fields = ["dataset"]
    permission_object = staticmethod(lambda zone: zone.dataset)

    def get_queryset(self):
        return ignore_zones_visible_to(self.request.user).order_by("-id")

    @extend_schema(request=IgnoreZoneCreateSerializer, responses={201: IgnoreZoneSerializer})
    def create(self, request, *args, **kwargs):
        payload = IgnoreZoneCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        dataset = dataset_for_upload(request.user, data["dataset"])
        zone = ignore_zone_create(
            dataset=dataset, name=data["name"], geojson=json.dumps(data["geometry"]), created_by=request.user
        )
        return Response(IgnoreZoneSerializer(zone).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: IgnoreZone) -> None:
        ignore_zone_delete(zone=instance, user=self.request.user)  # type: ignore[arg-type]  # signed in: ActionPermission


class DetectionViewSet(
    mixins.CreateModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """Detections of the runs you may see, one at a time: read one, review it (``PATCH``: a decision, a corrected
    box or class), or add a site the model missed (``POST``). A run's list and bulk decisions are under
    ``/api/detection-runs/{id}/``."""

    lookup_value_regex = "[0-9]+"
    permission_classes = [ActionPermission]
    action_permissions = {
        "retrieve": None,
        "partial_update": "detection.review_detection",
        "create": "detection.review_detection",
    }
    serializer_class = DetectionSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        runs = detection_runs_visible_to(self.request.user)
        return Detection.objects.filter(run__in=runs).select_related("orthophoto", "run").order_by("-id")

    @extend_schema(request=DetectionReviewSerializer, responses={200: DetectionSerializer})
    def partial_update(self, request, *args, **kwargs):
        payload = DetectionReviewSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        detection = detection_review(detection=self.get_object(), user=request.user, **payload.validated_data)
        return Response(DetectionSerializer(detection).data)

    @extend_schema(request=DetectionAddSerializer, responses={201: DetectionSerializer})
    def create(self, request, *args, **kwargs):
        payload = DetectionAddSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        run = detection_runs_visible_to(request.user).filter(pk=data["run"]).first()
        if run is None:
            return invalid("run", "No such detection run.")
        orthophoto = orthophotos_for(request.user, [data["orthophoto"]])[0]
        detection = detection_add(
            run=run,
            user=request.user,
            orthophoto=orthophoto,
            pixel_box=data["pixel_box"],
            class_name=data["class_name"],
        )
        return Response(DetectionSerializer(detection).data, status=status.HTTP_201_CREATED)
