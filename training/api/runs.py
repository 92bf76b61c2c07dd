"""REST API of training runs: create, watch (progress, metrics, log), cancel, retry, delete."""

from __future__ import annotations

from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from access.rules import can, visible
from core.api import ActionPermission, error_body
from core.storage import open_stored
from core.zip_stream import stream_stored_zip
from datasets.coco_zip import export_document, zip_response
from datasets.selectors import datasets_visible_to
from models_registry.selectors import models_visible_to

from .. import services
from ..models import TrainingManifest, TrainingRun
from ..run_files import stored_samples, stored_tensorboard_files
from ..selectors import run_log_file, run_log_lines, run_log_tail, run_metrics, run_pipeline, run_split_image_ids
from ..services.evaluation_runs import evaluation_run_create
from ..services.export_runs import onnx_export_create
from .serializers import (
    PROGRESS_MODEL_FIELDS,
    EvaluationRunCreateSerializer,
    OnnxExportCreateSerializer,
    ProgressSerializer,
    TrainingRunCreateSerializer,
    TrainingRunFilter,
    TrainingRunSerializer,
)


def no_such_dataset() -> Response:
    """A dataset that does not exist and one the user may not see get the same answer."""
    return Response(error_body("invalid", "Invalid input.", {"dataset": ["No such dataset."]}), status=400)


class TrainingRunViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Training runs the user may see. A run is private to its creator unless shared or the user's role sees all."""

    lookup_value_regex = "[0-9]+"  # ids are integers; anything else is a 404 at the URL

    permission_classes = [ActionPermission]
    action_permissions = {
        "list": None,
        "retrieve": "training.view_trainingrun",
        "progress": "training.view_trainingrun",
        "create": "training.add_trainingrun",
        "evaluate": "training.add_trainingrun",
        "onnx_export": "training.add_trainingrun",
        "manifest": "training.view_trainingrun_statistics",
        "export": "training.view_trainingrun_statistics",
        "destroy": "training.delete_trainingrun",
        "cancel": "training.schedule_trainingrun",
        "retry": "training.schedule_trainingrun",
        "resume": "training.schedule_trainingrun",
        "metrics": "training.view_trainingrun_statistics",
        "log": "training.view_trainingrun_statistics",
        "tensorboard": "training.view_trainingrun_statistics",
        "samples": "training.view_trainingrun_statistics",
        "sample": "training.view_trainingrun_statistics",
    }
    filterset_class = TrainingRunFilter
    search_fields = ["name", "dataset__name"]
    ordering_fields = ["created_at", "started_at", "finished_at", "name", "status", "progress_percent", "priority"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        runs = TrainingRun.objects.select_related("dataset", "created_by", "trained_model", "worker").defer("log_tail")
        return visible(self.request.user, "training.view_trainingrun", runs)

    def get_serializer_class(self):
        return TrainingRunCreateSerializer if self.action == "create" else TrainingRunSerializer

    @extend_schema(
        request=TrainingRunCreateSerializer, responses={201: TrainingRunSerializer, 200: OpenApiTypes.OBJECT}
    )
    def create(self, request, *args, **kwargs):
        payload = TrainingRunCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        dataset = datasets_visible_to(request.user).filter(pk=data["dataset"]).first()
        if dataset is None:
            return no_such_dataset()
        base_model = None
        if data.get("base_model") is not None:
            # Hidden and missing models get the same answer: a private model is not confirmed to exist.
            base_model = models_visible_to(request.user).filter(pk=data["base_model"]).first()
            if base_model is None:
                return Response(error_body("invalid", "Invalid input.", {"base_model": ["No such model."]}), status=400)
        if data.get("dry_run"):
            plan = services.training_run_preview(
                dataset=dataset,
                base_model=base_model,
                architecture=data.get("architecture"),
                parameters=data.get("parameters"),
                user=request.user,
            )
            return Response(
                {
                    "queued": False,
                    "parameters": plan.parameters,
                    "weight_transfer": plan.weight_transfer,
                    "split": plan.split,
                    "pipeline": plan.pipeline,
                    "boxes": plan.boxes,
                }
            )
        run = services.training_run_create(
            dataset=dataset,
            base_model=base_model,
            architecture=data.get("architecture"),
            parameters=data.get("parameters"),
            name=data.get("name", ""),
            created_by=request.user,
            time_limit_seconds=data.get("time_limit_seconds"),
            priority=data["priority"],
        )
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=EvaluationRunCreateSerializer, responses={202: TrainingRunSerializer})
    @action(detail=False, methods=["post"], filter_backends=[])
    def evaluate(self, request):
        """Queue an evaluation run: a model you may see over a dataset you may see (all of it, a validation split
        made now, or the model's own validation split from its training manifest). Watch it like any run; its
        results appear at ``/api/evaluations/?model=<id>``."""
        payload = EvaluationRunCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        model = models_visible_to(request.user).filter(pk=data["model"]).first()
        if model is None:
            return Response(error_body("invalid", "Invalid input.", {"model": ["No such model."]}), status=400)
        dataset = None
        if data.get("dataset") is not None:
            dataset = datasets_visible_to(request.user).filter(pk=data["dataset"]).first()
            if dataset is None:
                return no_such_dataset()
        run = evaluation_run_create(
            model=model,
            dataset=dataset,
            split=data["split"],
            parameters=data.get("parameters"),
            name=data.get("name", ""),
            created_by=request.user,
            time_limit_seconds=data.get("time_limit_seconds"),
            priority=data["priority"],
        )
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=OnnxExportCreateSerializer, responses={202: TrainingRunSerializer})
    @action(detail=False, methods=["post"], url_path="onnx-export", filter_backends=[])
    def onnx_export(self, request):
        """Queue the ONNX export of a model you may see: written to ONNX, checked against the model on its own
        validation split (the parity gate) and kept only if it passes. Watch it like any run; the gate's report is
        the model's ``onnx_report``, the file its ``onnx`` download."""
        payload = OnnxExportCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        model = models_visible_to(request.user).filter(pk=data["model"]).first()
        if model is None:
            return Response(error_body("invalid", "Invalid input.", {"model": ["No such model."]}), status=400)
        run = onnx_export_create(
            model=model,
            name=data.get("name", ""),
            created_by=request.user,
            time_limit_seconds=data.get("time_limit_seconds"),
            priority=data["priority"],
        )
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[OpenApiParameter("side", str, enum=["train", "val"], description="Which side of the split.")],
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def export(self, request, pk=None):
        """One side of the run's recorded split (``?side=train`` or ``val``) as a COCO zip, streamed: the images and
        boxes it trained or validated on, as they are now in the dataset."""

        run = self.get_object()
        if not can(request.user, "datasets.view_dataset", run.dataset):
            raise NotFound("No such dataset.")
        side = request.query_params.get("side", "val")
        ids = run_split_image_ids(run, side)
        return zip_response(export_document(run.dataset, image_ids=ids), f"run-{run.pk}-{side}.zip")

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"], filter_backends=[])
    def manifest(self, request, pk=None):
        """Exactly what the run trained and validated on: the split, and for each side the image ids, box ids and
        a content hash (equal hashes: the same data)."""
        run = self.get_object()
        manifest = TrainingManifest.objects.filter(run=run).first()
        if manifest is None:
            raise NotFound("This run has no manifest (it did not get to export its data, or is an evaluation).")
        return Response(
            {
                **manifest.summary(),
                "train_image_ids": manifest.train_image_ids,
                "train_box_ids": manifest.train_box_ids,
                "val_image_ids": manifest.val_image_ids,
                "val_box_ids": manifest.val_box_ids,
            }
        )

    def perform_destroy(self, instance):
        services.training_run_delete(run=instance, user=self.request.user)

    @extend_schema(request=None, responses=TrainingRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a queued or running run (a running one stops within seconds)."""
        return Response(
            TrainingRunSerializer(services.training_run_cancel(run=self.get_object(), user=request.user)).data
        )

    @extend_schema(request=None, responses={201: TrainingRunSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Queue a new attempt of a failed or cancelled run, linked to it."""
        attempt = services.training_run_retry(run=self.get_object(), user=request.user)
        return Response(TrainingRunSerializer(attempt).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={201: TrainingRunSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Queue a new attempt that continues a failed or cancelled run from its last epoch checkpoint."""
        attempt = services.training_run_resume(run=self.get_object(), user=request.user)
        return Response(TrainingRunSerializer(attempt).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=ProgressSerializer)
    @action(detail=True, methods=["get"], filter_backends=[])
    def progress(self, request, pk=None):
        """Live progress; a few indexed lookups, cheap to poll every second."""
        # The run by its key, then the permission on that one object: index probes, where filtering through
        # ``visible`` would hash every run the user may see first.
        run = TrainingRun.objects.only(*PROGRESS_MODEL_FIELDS).filter(pk=pk).first()
        if run is None or not can(request.user, "training.view_trainingrun", run):
            raise NotFound()  # the same answer for "no such run" and "not yours": ids are not probed
        return Response(ProgressSerializer(run).data)

    @extend_schema(
        responses=inline_serializer(
            "RunMetrics",
            {
                "epochs": serializers.ListField(child=serializers.DictField()),
                "iterations": serializers.ListField(child=serializers.DictField()),
            },
        )
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def metrics(self, request, pk=None):
        """Per-epoch validation metrics and mean loss, and per-iteration loss and learning rate (thinned)."""
        return Response(run_metrics(self.get_object()))

    @extend_schema(
        parameters=[OpenApiParameter("download", OpenApiTypes.BOOL, description="The whole log as a file.")],
        responses={
            (200, "application/json"): inline_serializer("RunLog", {"tail": serializers.CharField()}),
            (200, "text/plain"): OpenApiTypes.BINARY,
        },
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def log(self, request, pk=None):
        """The end of the training log, or (``?download=1``) the whole log."""
        run = self.get_object()
        path = run_log_file(run)
        if request.query_params.get("download") in ("1", "true", "yes"):
            if path is None:
                raise NotFound("This run has no log file.")
            response = StreamingHttpResponse(run_log_lines(path), content_type="text/plain; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="run-{run.pk}.log"'
            return response
        return Response({"tail": run_log_tail(run)})

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], filter_backends=[])
    def tensorboard(self, request, pk=None):
        """The run's TensorBoard event files as a zip (``run-N/events.out.tfevents.*``): unzip them into a folder
        and run ``tensorboard --logdir`` on it. Written as the run trains and stored with it."""
        run = self.get_object()
        names = stored_tensorboard_files(run.pk)
        if not names:
            raise NotFound("This run has no TensorBoard files (it has not logged yet).")
        members = [(f"run-{run.pk}/{name.rsplit('/', 1)[-1]}", name) for name in names]
        response = StreamingHttpResponse(stream_stored_zip(members), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-tensorboard.zip"'
        return response

    @extend_schema(
        responses=inline_serializer(
            "RunSamples",
            {
                "pipeline": serializers.ListField(child=serializers.CharField(), allow_null=True),
                "samples": serializers.ListField(child=serializers.DictField()),
            },
        )
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def samples(self, request, pk=None):
        """What the model was trained on: the pipeline in words, and the first training batch as the network saw
        it (scaled, cropped, oriented, coloured), each picture with its boxes drawn (green: learnt; orange: cut by
        a crop, ignored) and its URL. Empty until the run's first iteration."""
        run = self.get_object()
        pictures = [
            {
                "index": i,
                "url": request.build_absolute_uri(f"{request.path.rstrip('/')}/{i}/"),
                **{k: entry.get(k) for k in ("width", "height", "boxes", "ignored")},
            }
            for i, entry in enumerate(stored_samples(run.pk))
        ]
        return Response({"pipeline": run_pipeline(run), "samples": pictures})

    @extend_schema(
        operation_id="training_runs_sample_retrieve",
        parameters=[OpenApiParameter("index", OpenApiTypes.INT, OpenApiParameter.PATH)],
        responses={(200, "image/jpeg"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], url_path=r"samples/(?P<index>[0-9]{1,3})", filter_backends=[])
    def sample(self, request, pk=None, index=None):
        """One picture of the first training batch (JPEG)."""
        run = self.get_object()
        samples = stored_samples(run.pk)
        if int(index) >= len(samples):
            raise NotFound("This run has no such sample.")
        return FileResponse(open_stored(samples[int(index)]["name"]), content_type="image/jpeg")
