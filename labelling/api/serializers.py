"""Serializers of the labelling API: shapes only; every rule is checked by the services."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from ..formats import FORMATS
from ..models import LabellingTask


class LabellingTaskSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    percent = serializers.FloatField(read_only=True)
    eta_seconds = serializers.SerializerMethodField()
    downloads = serializers.SerializerMethodField()
    images = serializers.SerializerMethodField()

    class Meta:
        model = LabellingTask
        fields = [
            "id",
            "name",
            "status",
            "stage",
            "progress",
            "percent",
            "eta_seconds",
            "error",
            "model",
            "model_version",
            "second_model",
            "detection_run",
            "dataset",
            "parameters",
            "stats",
            "images",
            "downloads",
            "to_label_dataset",
            "returned_dataset",
            "acceptance",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_progress(self, task: LabellingTask) -> dict:
        """What the current stage has done of its total."""
        return {"done": task.progress_done, "total": task.progress_total}

    def get_eta_seconds(self, task: LabellingTask) -> float | None:
        return task.eta_seconds(timezone.now())

    def get_downloads(self, task: LabellingTask) -> dict[str, str]:
        if task.status != LabellingTask.Status.SUCCEEDED:
            return {}
        return {fmt: f"/api/labelling-tasks/{task.pk}/download/?as={fmt}" for fmt in FORMATS}

    def get_images(self, task: LabellingTask) -> int:
        # the count the worker recorded: the list defers the pictures' JSON, which would load once per row here
        return task.stats.get("chosen", 0)


class LabellingTaskCreateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    detection_run = serializers.IntegerField(required=False)
    dataset = serializers.IntegerField(required=False)
    model = serializers.IntegerField(required=False)
    second_model = serializers.IntegerField(required=False)
    to_label = serializers.IntegerField(
        required=False, help_text="A dataset the chosen pictures are also added to, disabled and marked to label."
    )
    parameters = serializers.DictField(
        required=False,
        default=dict,
        help_text="rule, count, band, weak_classes, min_distance_m, score_threshold, tile_size, image_url",
    )


class AcceptanceSerializer(serializers.Serializer):
    dataset = serializers.IntegerField(help_text="The dataset the tool's export was imported into.")
