"""The registry API's shapes: serializers of trained models, evaluations and predict checks, and the model
list's filters."""

from __future__ import annotations

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from access.rules import can
from core.filters import ApiFilterSet, UtcIsoDateTimeFilter
from engine.presets import preset_choices

from .. import services
from ..engines import ENGINES
from ..evaluations import validation_of
from ..models import METRIC_FIELDS, Evaluation, EvaluationImage, Prediction, TrainedModel
from ..selectors import visible_related_ids


@extend_schema_field(OpenApiTypes.INT)
class VisibleIdField(serializers.Field):
    """The id of a related object, or null when the user may not see it: a published model does not confirm that
    a private run or model exists. The view puts the visible ids of the page in the context
    (``visible_related``); an object fresh from a service is asked about on its own."""

    def __init__(self, **kwargs):
        super().__init__(read_only=True, allow_null=True, **kwargs)

    def get_attribute(self, instance):
        pk = getattr(instance, f"{self.field_name}_id")
        if pk is None:
            return None
        visible_ids = self.context.get("visible_related")
        if visible_ids is None:  # one object: asked once for all its related fields (the context is shared)
            asked = self.context.setdefault("visible_related_of", {})
            if instance.pk not in asked:
                asked[instance.pk] = visible_related_ids(getattr(self.context.get("request"), "user", None), [instance])
            visible_ids = asked[instance.pk]
        return pk if pk in visible_ids[self.field_name] else None

    def to_representation(self, value):
        return value


class TrainedModelSerializer(serializers.ModelSerializer):
    dataset = VisibleIdField(help_text="Dataset it was trained on (null if you may not see it).")
    base_model = VisibleIdField(help_text="Model it was fine-tuned from (null if none, or you may not see it).")
    source_run = VisibleIdField(help_text="Run that trained it (null if none, or you may not see it).")
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)
    published_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)
    training_duration_seconds = serializers.SerializerMethodField()

    class Meta:
        model = TrainedModel
        fields = [
            "id",
            "name",
            "description",
            "origin",
            "architecture",
            "class_names",
            "dataset",
            "base_model",
            "source_run",
            "is_published",
            "published_at",
            "published_by",
            "best_epoch",
            *METRIC_FIELDS,
            "parameter_count",
            "gsd_m",
            "training_duration_seconds",
            "checkpoint_sha256",
            "config_sha256",
            "onnx_sha256",
            "onnx_report",
            "mlflow_registration",
            "created_by",
            "created_at",
        ]
        read_only_fields = [f for f in fields if f not in ("name", "description")]

    def get_training_duration_seconds(self, obj) -> float | None:
        return obj.training_duration.total_seconds() if obj.training_duration else None

    def update(self, instance, validated_data):
        return services.trained_model_update(
            model=instance,
            name=validated_data.get("name"),
            description=validated_data.get("description"),
            user=self.context["request"].user,
        )


class TrainedModelDetailSerializer(TrainedModelSerializer):
    validation = serializers.SerializerMethodField(
        help_text=(
            "Per-class results on its validation split (AP, AP50, AP75, precision, recall, boxes) with the "
            "evaluation's id (/api/evaluations/<id>/: PR curves, confusion matrix, gallery); null without the "
            "statistics permission or for a model without one."
        )
    )

    class Meta(TrainedModelSerializer.Meta):
        fields = [*TrainedModelSerializer.Meta.fields, "validation"]
        read_only_fields = [*TrainedModelSerializer.Meta.read_only_fields, "validation"]

    def get_validation(self, obj) -> dict | None:
        user = getattr(self.context.get("request"), "user", None)
        if not can(user, "models_registry.view_trainedmodel_statistics"):
            return None
        evaluation = validation_of(obj)
        if evaluation is None:
            return None
        return {
            "evaluation": evaluation.pk,
            "split": evaluation.split,
            "score_threshold": evaluation.score_threshold,
            "iou_threshold": evaluation.iou_threshold,
            "metrics": evaluation.metrics,
            "per_class": evaluation.per_class,
        }


class RegisterSerializer(serializers.Serializer):
    checkpoint = serializers.FileField(help_text="The checkpoint (.pth): a dict with state_dict (and meta).")
    name = serializers.CharField(max_length=200)
    architecture = serializers.ChoiceField(choices=preset_choices())
    classes = serializers.ListField(
        child=serializers.CharField(max_length=200, trim_whitespace=False),
        required=False,
        help_text="Class names in label order (repeat the field). Default: from the file, or COCO's 80.",
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")


class TrainedModelFilter(ApiFilterSet):
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lte")
    published = django_filters.BooleanFilter(field_name="is_published")
    created_by = django_filters.CharFilter(field_name="created_by__username")
    min_map50 = django_filters.NumberFilter(field_name="bbox_mAP_50", lookup_expr="gte")

    class Meta:
        model = TrainedModel
        fields = ["dataset", "base_model", "source_run", "architecture", "origin", "published", "created_by"]


class EvaluationSerializer(serializers.ModelSerializer):
    run = serializers.SerializerMethodField(help_text="The run that made it (null if you may not see it).")
    gallery_url = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "model",
            "dataset",
            "run",
            "kind",
            "split",
            "split_details",
            "score_threshold",
            "iou_threshold",
            "metrics",
            "per_class",
            "pr_curves",
            "confusion",
            "counts",
            "seconds",
            "gallery_url",
            "created_at",
        ]
        read_only_fields = fields

    def get_run(self, obj) -> int | None:
        visible_runs = self.context.get("visible_runs")
        return obj.run_id if visible_runs is not None and obj.run_id in visible_runs else None

    def get_gallery_url(self, obj) -> str:
        return f"/api/evaluations/{obj.pk}/images/"


class EvaluationSummarySerializer(EvaluationSerializer):
    class Meta(EvaluationSerializer.Meta):
        fields = [f for f in EvaluationSerializer.Meta.fields if f not in ("pr_curves", "confusion")]
        read_only_fields = fields


class EvaluationImageSerializer(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField(help_text="The image with boxes and detections drawn (JPEG).")

    class Meta:
        model = EvaluationImage
        fields = [
            "id",
            "image",
            "file_name",
            "width",
            "height",
            "true_positives",
            "false_positives",
            "false_negatives",
            "errors",
            "classes",
            "detections",
            "ground_truth",
            "image_url",
        ]
        read_only_fields = fields

    def get_image_url(self, obj) -> str:
        return f"/api/evaluations/{obj.evaluation_id}/images/{obj.pk}/picture/"


class PredictRequestSerializer(serializers.Serializer):
    image = serializers.FileField(help_text="The image (JPEG, PNG, TIFF, BMP or WebP).")
    score_threshold = serializers.FloatField(
        required=False, default=0.3, min_value=0.0, max_value=1.0, help_text="Keep boxes scoring at least this."
    )
    engine = serializers.ChoiceField(
        choices=list(ENGINES),
        default="pytorch",
        help_text="pytorch: the checkpoint; onnxruntime: the model's ONNX export (one that passed the parity gate).",
    )


class PredictionSerializer(serializers.ModelSerializer):
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)
    preview_url = serializers.SerializerMethodField(help_text="The image with the boxes drawn (when succeeded).")

    class Meta:
        model = Prediction
        fields = [
            "id",
            "model",
            "status",
            "original_name",
            "score_threshold",
            "engine",
            "result",
            "error_message",
            "preview_url",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_preview_url(self, obj) -> str | None:
        if not obj.preview:
            return None
        return f"/api/predictions/{obj.pk}/preview/"
