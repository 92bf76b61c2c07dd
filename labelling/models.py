"""Labelling tasks: images with a model's boxes for people to correct in CVAT or Label Studio, chosen where
labelling pays most, and what came back (the acceptance report)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class LabellingTask(models.Model):
    """A set of images with a model's boxes as pre-annotations, exported as a CVAT task archive (COCO 1.0 and CVAT
    for images 1.1) and as Label Studio tasks; built by a worker from a detection run's tiles or from a dataset
    run through the model. ``images`` keeps what was exported (the boxes a person starts from), so that the
    labelled images that come back can be compared with it."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=200)
    model = models.ForeignKey("models_registry.TrainedModel", on_delete=models.PROTECT, related_name="labelling_tasks")
    model_version = models.CharField(max_length=300, help_text="The model as the tools show it: name, id, weights.")
    second_model = models.ForeignKey(
        "models_registry.TrainedModel",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The other model of the disagreement rule.",
    )
    detection_run = models.ForeignKey(
        "training.TrainingRun", null=True, blank=True, on_delete=models.CASCADE, related_name="labelling_tasks"
    )
    dataset = models.ForeignKey(
        "datasets.Dataset", null=True, blank=True, on_delete=models.CASCADE, related_name="labelling_tasks"
    )
    parameters = models.JSONField(default=dict, help_text="Threshold, tile size, the selection rule and its figures.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    stage = models.CharField(max_length=100, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="When its worker last reported.")
    error = models.TextField(blank=True)
    stats = models.JSONField(default=dict, blank=True)
    images = models.JSONField(default=list, blank=True, help_text="What was exported: [{name, width, height, boxes}].")
    to_label_dataset = models.ForeignKey(
        "datasets.Dataset",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Where the chosen pictures were also added, disabled and marked to label.",
    )
    returned_dataset = models.ForeignKey(
        "datasets.Dataset", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acceptance = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(detection_run__isnull=True) & Q(dataset__isnull=False))
                | (Q(detection_run__isnull=False) & Q(dataset__isnull=True)),
                name="labellingtask_one_source",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    @property
    def percent(self) -> float:
        if self.status == self.Status.SUCCEEDED:
            return 100.0
        return round(100.0 * self.progress_done / self.progress_total, 1) if self.progress_total else 0.0

    def eta_seconds(self, now) -> float | None:
        """Seconds left in the current stage, from its pace so far (None before there is a pace)."""
        if self.status != self.Status.RUNNING or not self.progress_done or self.stage_started_at is None:
            return None
        elapsed = (now - self.stage_started_at).total_seconds()
        return round(elapsed / self.progress_done * (self.progress_total - self.progress_done), 1)
