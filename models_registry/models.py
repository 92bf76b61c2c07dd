"""Trained models: checkpoint + config + class map + metrics, with their lineage."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from engine.config import METRIC_KEYS

# The metric names are the engine's (a Django-free library both apps use); the model has one field per name.
METRIC_FIELDS = METRIC_KEYS


def artifact_upload_to(instance: TrainedModel, filename: str) -> str:
    return f"models/{instance.artifact_key}/{filename}"


class TrainedModel(models.Model):
    class Origin(models.TextChoices):
        TRAINED = "trained", "Trained by a run here"
        REGISTERED = "registered", "Registered from files"

    name = models.CharField(max_length=200)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.TRAINED)
    description = models.TextField(blank=True)
    source_run = models.OneToOneField(
        "training.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="trained_model"
    )
    base_model = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="derived_models",
        help_text="The model this one was fine-tuned from.",
    )
    dataset = models.ForeignKey(
        "datasets.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="trained_models"
    )
    architecture = models.CharField(max_length=64)
    class_names = models.JSONField(help_text="Ordered class names; index i is the model's label i.")

    # Artifacts stored under models/<artifact_key>/ (a random key: no user text in names).
    artifact_key = models.CharField(max_length=32, unique=True)
    checkpoint = models.FileField(upload_to=artifact_upload_to, max_length=500)
    checkpoint_sha256 = models.CharField(max_length=64)
    config = models.FileField(upload_to=artifact_upload_to, max_length=500)
    config_sha256 = models.CharField(max_length=64)
    onnx = models.FileField(
        upload_to=artifact_upload_to,
        max_length=500,
        blank=True,
        help_text="Its ONNX export for ONNX Runtime (CPU servers), kept only once it passed the parity gate.",
    )
    onnx_sha256 = models.CharField(max_length=64, blank=True)
    onnx_report = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "The last ONNX export's parity gate: passed, mAP50 of both, the share of PyTorch detections matched, "
            "seconds per image of both, and where they differ."
        ),
    )

    is_published = models.BooleanField(default=False, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    best_epoch = models.PositiveIntegerField(null=True, blank=True)
    bbox_mAP = models.FloatField(null=True, blank=True)
    bbox_mAP_50 = models.FloatField(null=True, blank=True)
    bbox_mAP_75 = models.FloatField(null=True, blank=True)
    bbox_mAP_s = models.FloatField(null=True, blank=True)
    bbox_mAP_m = models.FloatField(null=True, blank=True)
    bbox_mAP_l = models.FloatField(null=True, blank=True)
    metrics_history = models.JSONField(
        default=list, blank=True, help_text="Per-epoch validation metrics and mean loss."
    )
    training_duration = models.DurationField(null=True, blank=True)
    gsd_m = models.FloatField(
        null=True,
        blank=True,
        help_text=(
            "Ground resolution the network saw in training, metres per pixel (the run's target_gsd, else the median "
            "of its training images'); detection resamples imagery to it. Null: unknown (no footprints)."
        ),
    )
    parameter_count = models.BigIntegerField(null=True, blank=True)
    library_versions = models.JSONField(
        default=dict, blank=True, help_text="Versions of Python, torch, CUDA, mmcv, mmengine and mmdet that made it."
    )
    mlflow_registration = models.JSONField(
        default=dict,
        blank=True,
        help_text="Its version in the site's MLflow registry once published: {name, version, at, error}.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="trained_models"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("publish_trainedmodel", "Can publish and unpublish trained models"),
            ("view_trainedmodel_statistics", "Can view per-epoch metrics of trained models"),
            ("view_published_trainedmodel", "Can view published trained models"),
            ("predict_trainedmodel", "Can run models they may see on uploaded images"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"


def prediction_upload_to(instance: Prediction, filename: str) -> str:
    return f"predictions/{instance.key}/{filename}"


class Prediction(models.Model):
    """One check of a model on an uploaded image, run by a worker (never in the web process)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    model = models.ForeignKey(TrainedModel, on_delete=models.CASCADE, related_name="predictions")
    key = models.CharField(max_length=32, unique=True, help_text="Random folder name of the files.")
    image = models.FileField(upload_to=prediction_upload_to, max_length=500)
    original_name = models.CharField(max_length=255, blank=True)
    score_threshold = models.FloatField(default=0.3)
    engine = models.CharField(
        max_length=16,
        default="pytorch",
        help_text="pytorch: the checkpoint; onnxruntime: the model's ONNX export (one that passed the parity gate).",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    result = models.JSONField(default=dict, blank=True, help_text="Size and boxes: class name, score, x1 y1 x2 y2.")
    preview = models.FileField(upload_to=prediction_upload_to, max_length=500, blank=True)
    error_message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Prediction #{self.pk} of model #{self.model_id}"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)


class Evaluation(models.Model):
    """A model's results on a set of annotated images: overall COCO figures, per-class AP / precision / recall,
    precision-recall curves, a confusion matrix with background, and each image's outcome (``EvaluationImage``).

    Made by the model's own training run (on its validation split) and by evaluation runs."""

    class Kind(models.TextChoices):
        VALIDATION = "validation", "Validation split of its training run"
        EVALUATION = "evaluation", "Evaluation run"

    model = models.ForeignKey(TrainedModel, on_delete=models.CASCADE, related_name="evaluations")
    run = models.ForeignKey(
        "training.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    dataset = models.ForeignKey(
        "datasets.Dataset", null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    split = models.CharField(max_length=200, help_text="Which images: the run's validation split, all, ...")
    split_details = models.JSONField(default=dict, blank=True)
    score_threshold = models.FloatField()
    iou_threshold = models.FloatField()
    metrics = models.JSONField(default=dict, help_text="Overall COCO figures (bbox_mAP, bbox_mAP_50, ...).")
    per_class = models.JSONField(default=list, help_text="Per class: AP, AP50, AP75, precision, recall, boxes.")
    pr_curves = models.JSONField(default=dict, help_text="Per IoU threshold and class: [recall, precision] points.")
    confusion = models.JSONField(default=dict, help_text="labels (classes + background) and matrix[true][predicted].")
    counts = models.JSONField(default=dict)
    seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Evaluation #{self.pk} of model #{self.model_id}"


class EvaluationImage(models.Model):
    """One image's outcome in an evaluation: its boxes and the detections above the score threshold, each marked
    (found / missed / wrong class; true positive / false positive / wrong class)."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="images")
    image = models.ForeignKey(
        "datasets.DatasetImage", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    file_name = models.CharField(max_length=500)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    true_positives = models.PositiveIntegerField(default=0)
    false_positives = models.PositiveIntegerField(default=0)
    false_negatives = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0, help_text="False positives + false negatives.")
    classes = ArrayField(models.PositiveSmallIntegerField(), default=list, help_text="Classes on the image.")
    detections = models.JSONField(default=list, help_text="[class, score, x, y, w, h, status]")
    ground_truth = models.JSONField(default=list, help_text="[class, x, y, w, h, status]")

    class Meta:
        ordering = ["evaluation", "-errors", "id"]
        indexes = [
            models.Index(fields=["evaluation", "-errors", "id"], name="evalimage_worst_first"),
            GinIndex(fields=["classes"], name="evalimage_classes"),
        ]

    def __str__(self) -> str:
        return self.file_name


class TrainedModelUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(TrainedModel, on_delete=models.CASCADE)


class TrainedModelGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(TrainedModel, on_delete=models.CASCADE)
