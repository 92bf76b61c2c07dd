"""The shapes of the training-run API: what a run looks like, what creating one takes, and its list filter. Only
shapes are checked here; every rule lives in the services."""

from __future__ import annotations

from typing import Any

import django_filters
from rest_framework import serializers

from core.filters import ApiFilterSet, UtcIsoDateTimeFilter
from engine.params import PARAM_SPECS, total_batch_size
from engine.presets import preset_choices

from ..models import TrainingRun
from ..selectors import run_pipeline
from ..services.evaluation_runs import EVALUATION_PARAMS, SPLITS


class ProgressSerializer(serializers.ModelSerializer):
    epoch = serializers.IntegerField(source="current_epoch", read_only=True)
    iteration = serializers.IntegerField(source="current_iter", read_only=True)
    max_iterations = serializers.IntegerField(source="max_iters", read_only=True)
    percent = serializers.FloatField(source="progress_percent", read_only=True)
    losses = serializers.DictField(source="latest_losses", child=serializers.FloatField(), read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "status",
            "percent",
            "epoch",
            "max_epochs",
            "iteration",
            "max_iterations",
            "eta_seconds",
            "losses",
            "learning_rate",
            "started_at",
            "heartbeat_at",
            "finished_at",
        ]
        read_only_fields = fields


# The model fields the progress endpoint loads: exactly what its serializer reads.
PROGRESS_MODEL_FIELDS = [field.source for field in ProgressSerializer().fields.values()]


class TrainingRunSerializer(serializers.ModelSerializer):
    progress = ProgressSerializer(source="*", read_only=True)  # bound once per list, not once per run
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)
    dataset_name = serializers.CharField(source="dataset.name", read_only=True)
    trained_model = serializers.SerializerMethodField(help_text="Id of the model this run registered, if any.")
    duration_seconds = serializers.FloatField(read_only=True)
    priority = serializers.SerializerMethodField(help_text="normal or high.")
    processes = serializers.SerializerMethodField(
        help_text="Training processes of the run (torch.distributed), on each of its hosts."
    )
    nodes = serializers.SerializerMethodField(help_text="Hosts the run trains on together (1: one host).")
    total_batch_size = serializers.SerializerMethodField(
        help_text="Images per iteration over all processes of all hosts: the batch size is per process."
    )
    worker: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", read_only=True, help_text="The worker cluster (host:pid) that took the run."
    )
    pipeline = serializers.SerializerMethodField(
        help_text="A training run's pipeline in words, one step each: how its images were scaled, cropped, oriented "
        "and coloured, and how validation saw them (null for other kinds)."
    )

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "kind",
            "name",
            "dataset",
            "dataset_name",
            "base_model",
            "evaluated_model",
            "architecture",
            "parameters",
            "status",
            "progress",
            "error_message",
            "weight_transfer",
            "device",
            "priority",
            "processes",
            "nodes",
            "total_batch_size",
            "pipeline",
            "worker",
            "assigned_gpus",
            "stop_reason",
            "trained_model",
            "retry_of",
            "time_limit_seconds",
            "timings",
            "tracking",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
        ]
        read_only_fields = fields

    def get_trained_model(self, obj) -> int | None:
        model = getattr(obj, "trained_model", None)
        return model.pk if model else None

    def get_priority(self, obj) -> str:
        return TrainingRun.Priority(obj.priority).name.lower()

    def get_processes(self, obj) -> int:
        return int(obj.parameters.get("processes") or 1)

    def get_nodes(self, obj) -> int:
        return int(obj.parameters.get("nodes") or 1)

    def get_total_batch_size(self, obj) -> int | None:
        return total_batch_size(obj.parameters) or None

    def get_pipeline(self, obj) -> list[str] | None:
        return run_pipeline(obj)


PRIORITY_FIELD: dict[str, Any] = {
    "choices": ["normal", "high"],
    "default": "normal",
    "help_text": "high: started before every normal run (needs the permission to prioritize runs).",
}


class TrainingRunCreateSerializer(serializers.Serializer):
    """Only the shapes are checked here; every rule lives in ``training_run_create``."""

    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    dataset = serializers.IntegerField(help_text="Dataset id.")
    base_model = serializers.IntegerField(required=False, allow_null=True, help_text="Trained model id to fine-tune.")
    architecture = serializers.ChoiceField(choices=preset_choices(), required=False)
    time_limit_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Wall-clock limit; default: the site's limit."
    )
    parameters = serializers.DictField(
        required=False,
        default=dict,
        help_text="Hyper-parameters; missing ones take the preset's defaults (resize by the dataset's image size, and "
        "with crops the aerial augmentations; a dry run shows the result). "
        + "; ".join(f"{s.name}: {s.describe()}" for s in PARAM_SPECS.values()),
    )
    priority = serializers.ChoiceField(**PRIORITY_FIELD)
    dry_run = serializers.BooleanField(
        required=False,
        default=False,
        help_text=(
            "Check everything and answer 200 with the complete parameters and what the run would do with the base "
            "model's weights (which layers load, which are re-initialised), without queueing it."
        ),
    )


class EvaluationRunCreateSerializer(serializers.Serializer):
    """Only the shapes are checked here; every rule lives in ``evaluation_run_create``."""

    model = serializers.IntegerField(help_text="Trained model id to evaluate.")
    dataset = serializers.IntegerField(
        required=False, allow_null=True, help_text="Dataset id (not needed for split=model)."
    )
    split = serializers.ChoiceField(
        choices=list(SPLITS), default="all", help_text="; ".join(f"{k}: {v}" for k, v in SPLITS.items())
    )
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    time_limit_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    priority = serializers.ChoiceField(**PRIORITY_FIELD)
    parameters = serializers.DictField(
        required=False,
        default=dict,
        help_text="; ".join(f"{k}: {PARAM_SPECS[k].describe()}" for k in EVALUATION_PARAMS),
    )


class OnnxExportCreateSerializer(serializers.Serializer):
    """Only the shapes are checked here; every rule lives in ``onnx_export_create``."""

    model = serializers.IntegerField(help_text="Trained model id to export.")
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    time_limit_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    priority = serializers.ChoiceField(**PRIORITY_FIELD)


class TrainingRunFilter(ApiFilterSet):
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lte")
    finished_after = UtcIsoDateTimeFilter(field_name="finished_at", lookup_expr="gte")
    finished_before = UtcIsoDateTimeFilter(field_name="finished_at", lookup_expr="lte")
    created_by = django_filters.CharFilter(field_name="created_by__username")
    priority = django_filters.ChoiceFilter(
        choices=[("normal", "normal"), ("high", "high")], method="filter_priority", help_text="normal or high."
    )
    host = django_filters.CharFilter(field_name="worker_host", help_text="Host identity of the worker that ran it.")

    class Meta:
        model = TrainingRun
        fields = ["kind", "status", "dataset", "base_model", "evaluated_model", "architecture", "created_by"]

    def filter_priority(self, queryset, name, value):
        return queryset.filter(priority=TrainingRun.Priority[value.upper()])
