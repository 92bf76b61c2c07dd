"""A training run: one attempt to train a detector on a dataset, with its live progress and outcome."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from core.host_cache import host_scratch
from engine.presets import DEFAULT_PRESET, preset_choices


class TrainingRun(models.Model):
    # The phases of ``timings`` in the order they happen (a JSON object keeps no order in PostgreSQL's jsonb).
    PHASES = ("queued", "export", "config", "startup", "training", "registration")

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Kind(models.TextChoices):
        TRAIN = "train", "Training"
        EVALUATE = "evaluate", "Evaluation"
        DETECT = "detect", "Detection"
        ONNX_EXPORT = "onnx_export", "ONNX export"

    class Priority(models.IntegerChoices):
        NORMAL = 0, "Normal"
        HIGH = 10, "High"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    name = models.CharField(max_length=200)
    kind = models.CharField(
        max_length=16,
        choices=Kind.choices,
        default=Kind.TRAIN,
        db_index=True,
        help_text=(
            "Training trains a model; an evaluation runs a registered model over a dataset and stores results; a "
            "detection runs one over whole orthophotos and stores the sites it finds; an ONNX export writes a model "
            "to ONNX and keeps the file if it passes the parity gate."
        ),
    )
    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.PROTECT, related_name="training_runs")
    base_model = models.ForeignKey(
        "models_registry.TrainedModel", null=True, blank=True, on_delete=models.PROTECT, related_name="fine_tuning_runs"
    )
    evaluated_model = models.ForeignKey(
        "models_registry.TrainedModel",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="evaluation_runs",
        help_text="The model an evaluation run evaluates, a detection run detects with, or an export exports.",
    )
    architecture = models.CharField(max_length=64, choices=preset_choices(), default=DEFAULT_PRESET)
    parameters = models.JSONField(default=dict, help_text="Validated hyper-parameters (preset defaults filled in).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    priority = models.SmallIntegerField(
        choices=Priority.choices,
        default=Priority.NORMAL,
        help_text="Queued runs start by priority, then first come first served.",
    )

    # Live progress, written by the worker about once a second.
    current_epoch = models.PositiveIntegerField(default=0)
    max_epochs = models.PositiveIntegerField(default=0)
    current_iter = models.PositiveIntegerField(default=0)
    max_iters = models.PositiveIntegerField(default=0)
    progress_percent = models.FloatField(default=0.0)
    eta_seconds = models.FloatField(null=True, blank=True)
    latest_losses = models.JSONField(default=dict, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    training_pid = models.IntegerField(
        null=True, blank=True, help_text="Process id of the training child (its process group leader)."
    )
    training_started = models.FloatField(
        null=True,
        blank=True,
        help_text="Start of the training child (engine.processes.started_at): its pid's identity.",
    )
    worker_host = models.CharField(max_length=255, blank=True)
    worker_process = models.CharField(max_length=300, blank=True, help_text="host:pid of the worker that ran it.")
    worker_pid = models.IntegerField(null=True, blank=True, help_text="Pid of the worker process that runs it.")
    worker_started = models.FloatField(
        null=True,
        blank=True,
        help_text="Start of that worker process (``engine.processes.started_at``): its pid's identity.",
    )
    worker = models.ForeignKey(
        "workers.Worker",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The cluster that ran it.",
    )
    assigned_gpus = ArrayField(
        models.CharField(max_length=32),
        default=list,
        blank=True,
        help_text="The GPUs its worker gave it (CUDA_VISIBLE_DEVICES of its training processes).",
    )

    weight_transfer = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "How the base model's weights were used: what was said before the run was queued (mode, summary) and, "
            "once training started, what loaded and what was re-initialised, layer by layer, and why."
        ),
    )
    device = models.CharField(max_length=200, blank=True, help_text="The device the training ran on.")
    stop_reason = models.CharField(
        max_length=300, blank=True, help_text="Why the training ended: all epochs done, or stopped early."
    )
    error_message = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    export_summary = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "Seconds spent in each phase: queued, export, config, startup (process start, imports, model and data "
            "loading), training (until the process exits), registration. A run that failed lacks the later ones."
        ),
    )
    tracking = models.JSONField(
        default=dict,
        blank=True,
        help_text="Where the run is tracked besides: its MLflow run ({mlflow: {run_id, experiment_id}}).",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_runs"
    )
    time_limit_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Wall-clock limit of this run; empty: the site's DUMPSITE_RUN_TIMEOUT."
    )
    resume_checkpoint = models.CharField(
        max_length=500, blank=True, help_text="Checkpoint of the attempt this run resumes (epoch, optimizer, schedule)."
    )
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        help_text="The failed or cancelled run this one retries.",
    )
    retry_of_root = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The first run of this chain of retries and resumes.",
    )
    attempt = models.PositiveIntegerField(default=1, help_text="1 for a new run; retries and resumes count on.")

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("schedule_trainingrun", "Can cancel and retry training runs"),
            ("view_trainingrun_statistics", "Can view metrics and logs of training runs"),
            ("prioritize_trainingrun", "Can queue training runs with high priority"),
        ]
        indexes = [models.Index(fields=["status", "-priority", "created_at"], name="trainingrun_queue_order")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress_percent__gte=0) & models.Q(progress_percent__lte=100),
                name="trainingrun_percent_range",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    @property
    def mlflow_tracking(self) -> dict:
        """Its MLflow run as its training reported it (``run_id``, ``experiment_id``); empty when it has none."""
        return (self.tracking or {}).get("mlflow") or {}

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def work_dir(self) -> Path:
        """Scratch directory of this run; derived from the id only, never from user text."""
        return host_scratch(f"run-{self.pk}")

    @property
    def effective_time_limit(self) -> int:
        return self.time_limit_seconds or settings.TRAINING_RUN_TIMEOUT

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None

        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class TrainingManifest(models.Model):
    """Exactly what a run trained and validated on: image ids and box ids of each side with a content hash, and the
    validation document as it was (so a model is re-evaluated on its own split after the dataset changed)."""

    run = models.OneToOneField(TrainingRun, on_delete=models.CASCADE, primary_key=True, related_name="manifest")
    split = models.JSONField(default=dict, help_text="The split strategy and what it did.")
    train_image_ids = ArrayField(models.BigIntegerField(), default=list)
    train_box_ids = ArrayField(models.BigIntegerField(), default=list)
    val_image_ids = ArrayField(models.BigIntegerField(), default=list)
    val_box_ids = ArrayField(models.BigIntegerField(), default=list)
    train_hash = models.CharField(max_length=64, help_text="SHA-256 of the training side's images and boxes.")
    val_hash = models.CharField(max_length=64, help_text="SHA-256 of the validation side's images and boxes.")
    validation_coco = models.JSONField(default=dict, help_text="The validation COCO document the run used.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Manifest of run #{self.run_id}"

    def summary(self) -> dict:
        return {
            "split": self.split,
            "train": {
                "images": len(self.train_image_ids),
                "boxes": len(self.train_box_ids),
                "content_hash": self.train_hash,
            },
            "val": {"images": len(self.val_image_ids), "boxes": len(self.val_box_ids), "content_hash": self.val_hash},
        }


class RunNode(models.Model):
    """One host's part in a run across several hosts (``nodes`` > 1): first its reservation (held until
    ``reserved_until``, so no host waits for the others for ever), then, once every host has reserved, its node rank
    and its heartbeat while its processes train. Node 0 hosts the rendezvous and rank 0, which alone writes."""

    class State(models.TextChoices):
        RESERVED = "reserved", "Reserved"
        RUNNING = "running", "Running"
        GAVE_UP = "gave_up", "Gave up waiting"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="nodes")
    worker = models.ForeignKey("workers.Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    host = models.CharField(max_length=255, help_text="The host identity (DUMPSITE_HOST_ID).")
    address = models.CharField(max_length=255, help_text="Where the other hosts reach it (DUMPSITE_HOST_ADDRESS).")
    pid = models.IntegerField(help_text="The worker process that holds this part.")
    process_started = models.FloatField(help_text="That process's start (engine.processes.started_at).")
    gpus = ArrayField(models.CharField(max_length=32), default=list, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RESERVED)
    node_rank = models.PositiveSmallIntegerField(null=True, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True, help_text="Node 0's rendezvous port.")
    reserved_until = models.DateTimeField(help_text="A reservation's end; for a host that gave up, its pause.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    message = models.TextField(blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "host"], name="one_part_per_host")]
        ordering = ["run", "node_rank", "address"]

    def __str__(self) -> str:
        return f"run #{self.run_id} on {self.host} (node {self.node_rank if self.node_rank is not None else '?'})"


class TrainingRunUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(TrainingRun, on_delete=models.CASCADE)


class TrainingRunGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(TrainingRun, on_delete=models.CASCADE)
