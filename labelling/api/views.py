"""REST API of labelling tasks: create one (a detection run's tiles or a dataset run through a model, chosen by a
rule), watch it, download its archives (CVAT COCO 1.0, CVAT for images 1.1, Label Studio tasks), and report what
came back (the acceptance rate, per task and per model version)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from core.api import ActionPermission, error_body
from core.errors import ApplicationError
from core.storage import stored_file_response
from datasets.selectors import datasets_visible_to
from detection.selectors import detection_runs_visible_to
from models_registry.selectors import models_visible_to

from ..acceptance import acceptance_by_model_version, labelling_task_acceptance
from ..building import task_archive
from ..formats import FORMATS, archive_name
from ..selectors import labelling_tasks_visible_to
from ..services import labelling_task_create
from .serializers import AcceptanceSerializer, LabellingTaskCreateSerializer, LabellingTaskSerializer


def _one(queryset, pk, field: str, what: str):
    if pk is None:
        return None
    found = queryset.filter(pk=pk).first()
    if found is None:
        raise ApplicationError(f"No such {what}.", {field: f"no such {what}"})
    return found


class LabellingTaskViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Labelling tasks you may see: images with a model's boxes, for people to correct in CVAT or Label Studio."""

    lookup_value_regex = "[0-9]+"
    permission_classes = [ActionPermission]
    action_permissions = {
        "list": None,
        "retrieve": "labelling.view_labellingtask",
        "create": "labelling.add_labellingtask",
        "download": "labelling.view_labellingtask",
        "acceptance": "labelling.add_labellingtask",
        "by_model_version": None,
    }
    serializer_class = LabellingTaskSerializer
    filterset_fields = ["status", "model", "detection_run", "dataset"]

    def get_queryset(self):
        return labelling_tasks_visible_to(self.request.user).defer("images").order_by("-id")

    @extend_schema(request=LabellingTaskCreateSerializer, responses={201: LabellingTaskSerializer})
    def create(self, request, *args, **kwargs):
        payload = LabellingTaskCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data, user = payload.validated_data, request.user
        task = labelling_task_create(
            user=user,
            name=data.get("name", ""),
            detection_run=_one(
                detection_runs_visible_to(user), data.get("detection_run"), "detection_run", "detection run"
            ),
            dataset=_one(datasets_visible_to(user), data.get("dataset"), "dataset", "dataset"),
            model=_one(models_visible_to(user), data.get("model"), "model", "model"),
            second_model=_one(models_visible_to(user), data.get("second_model"), "second_model", "model"),
            parameters=data["parameters"],
            to_label=_one(datasets_visible_to(user), data.get("to_label"), "to_label", "dataset"),
        )
        return Response(LabellingTaskSerializer(task).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("as", str, enum=list(FORMATS), required=True)],
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def download(self, request, pk=None):
        """The task's archive: ``?as=cvat_coco`` (CVAT's COCO 1.0 task), ``cvat_xml`` (CVAT for images 1.1) or
        ``label_studio`` (tasks JSON with predictions, the labelling config, the pictures)."""
        task = self.get_object()
        fmt = request.query_params.get("as", "")
        if fmt not in FORMATS:
            return Response(error_body("invalid", "Invalid input.", {"as": [f"One of {', '.join(FORMATS)}."]}), 400)
        if task.status != task.Status.SUCCEEDED:
            raise ApplicationError(f"Task #{task.pk} is {task.status}: nothing to download yet.", {"task": task.status})
        name = f"labelling-task-{task.pk}-{archive_name(fmt)}"
        try:
            return stored_file_response(task_archive(task.pk, fmt), filename=name, content_type="application/zip")
        except FileNotFoundError:
            raise NotFound("The archive is no longer stored.") from None

    @extend_schema(request=AcceptanceSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], filter_backends=[])
    def acceptance(self, request, pk=None):
        """Compare the task's pre-annotations with the labelled images imported into ``dataset``: how many boxes
        came back unchanged (IoU ≥ 0.95, same class), corrected, removed, and how many were added."""
        task = self.get_object()
        payload = AcceptanceSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        dataset = _one(datasets_visible_to(request.user), payload.validated_data["dataset"], "dataset", "dataset")
        return Response(labelling_task_acceptance(task=task, dataset=dataset, user=request.user))

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["get"], url_path="by-model-version", filter_backends=[])
    def by_model_version(self, request):
        """The acceptance reports of the tasks you may see, summed per model version."""
        tasks = labelling_tasks_visible_to(request.user).exclude(acceptance={}).select_related(None)
        tasks = tasks.only("model", "model_version", "acceptance")
        return Response({"results": acceptance_by_model_version(tasks)})
