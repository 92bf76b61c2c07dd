"""What detection runs find: a ``Detection`` per site (its polygon in WGS 84, class, score, source orthophoto and
pixel box, state), and the ignore zones of a dataset's area, over which detections are flagged, never deleted.

A detection run itself is a ``training.TrainingRun`` of kind ``detect`` (queue, progress, cancel, time limit,
reaper, retry and permissions are the runs'); its figures are the run's ``export_summary``.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.contrib.gis.db import models

from training.models import TrainingRun


class IgnoreZone(models.Model):
    """An area whose detections are discounted (a known legal depot, a quarry, a recycling yard): detections that
    intersect it are kept and flagged ``ignored``. Per dataset: the area a dataset's orthophotos cover."""

    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.CASCADE, related_name="ignore_zones")
    name = models.CharField(max_length=200)
    geometry = models.MultiPolygonField(srid=4326)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "name", "id"]

    def __str__(self) -> str:
        return self.name


class Detection(models.Model):
    class State(models.TextChoices):
        NEW = "new", "New"
        CONFIRMED = "confirmed", "Confirmed"
        REJECTED = "rejected", "Rejected"

    class Origin(models.TextChoices):
        MODEL = "model", "Model"
        REVIEWER = "reviewer", "Reviewer"

    run = models.ForeignKey("training.TrainingRun", on_delete=models.CASCADE, related_name="detections")
    orthophoto = models.ForeignKey("datasets.Orthophoto", on_delete=models.PROTECT, related_name="detections")
    label = models.PositiveSmallIntegerField(help_text="The model's class index.")
    class_name = models.CharField(max_length=100)
    score = models.FloatField()
    geometry = models.PolygonField(
        srid=4326, null=True, blank=True, help_text="WGS 84; a rotated pixel box is a rotated polygon. Empty: pixels."
    )
    area_m2 = models.FloatField(null=True, blank=True, help_text="Computed in a metric projection (UTM).")
    pixel_box = models.JSONField(help_text="[x1, y1, x2, y2] in the source orthophoto's pixels.")
    merged = models.PositiveIntegerField(default=1, help_text="How many window boxes were merged into it.")
    ignored = models.BooleanField(default=False, help_text="It lies in an ignore zone of the dataset.")
    ignore_zone = models.ForeignKey(IgnoreZone, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.NEW, db_index=True)
    origin = models.CharField(
        max_length=16,
        choices=Origin.choices,
        default=Origin.MODEL,
        help_text="model: found by the run; reviewer: a missed site a reviewer drew.",
    )
    model_box = models.JSONField(
        null=True, blank=True, help_text="The model's pixel box, kept when a reviewer moved or resized it."
    )
    model_class = models.CharField(
        max_length=100, blank=True, help_text="The model's class, kept when a reviewer changed it."
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "-score", "id"]
        indexes = [models.Index(fields=["run", "-score"], name="detection_run_score")]
        permissions = [("run_detection", "Can run detections"), ("review_detection", "Can review detections")]

    def __str__(self) -> str:
        return f"{self.class_name} {self.score:.2f} (run #{self.run_id})"

    @property
    def corrected(self) -> bool:
        """A reviewer moved, resized or reclassified the model's detection."""
        return self.model_box is not None or bool(self.model_class)

    @property
    def coordinates(self) -> str:
        return "map" if self.geometry is not None else "pixel"


class KnownSite(models.Model):
    """A dump site of the area known before the run (a municipality's register), given with a detection run to
    judge it: found when a detection covers enough of it (``detection.sites``)."""

    run = models.ForeignKey("training.TrainingRun", on_delete=models.CASCADE, related_name="known_sites")
    label = models.CharField(max_length=200, help_text="The feature it came from (its id where it had one).")
    class_name = models.CharField(max_length=100)
    geometry = models.MultiPolygonField(srid=4326)
    found = models.BooleanField(default=False, help_text="Matched by a detection at the run's score threshold.")

    class Meta:
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return f"{self.label} (run #{self.run_id})"


class DetectionRunManager(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(kind=TrainingRun.Kind.DETECT)


class DetectionRun(TrainingRun):
    """The detection runs among the runs (kind ``detect``), for their own pages in the admin: the map, the site
    figures, the crops. The same rows and permissions as any run (``training.view_trainingrun``, ...): a proxy
    has no table and no permissions of its own."""

    objects: ClassVar[DetectionRunManager] = DetectionRunManager()

    class Meta:
        proxy = True
        default_permissions = ()
        verbose_name = "detection run"
