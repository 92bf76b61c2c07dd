"""A worker cluster (``manage.py worker``) as the database knows it: where it runs, what it declared, its heartbeat."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class Worker(models.Model):
    """A worker cluster (``manage.py worker``): where it runs, what it declared it has, and its last heartbeat."""

    name = models.CharField(max_length=300, unique=True, help_text="host:pid of the cluster's main process.")
    host = models.CharField(max_length=255, db_index=True, help_text="The host identity (DUMPSITE_HOST_ID).")
    pid = models.IntegerField()
    address = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="Where other hosts reach it (DUMPSITE_HOST_ADDRESS; empty: no runs across hosts).",
    )
    gpus = ArrayField(models.CharField(max_length=32), default=list, blank=True, help_text="GPU ids it declared.")
    gpu_memory = models.JSONField(
        default=list, blank=True, help_text="Per declared GPU: memory in use and in all (bytes), as last reported."
    )
    cpu_slots = models.PositiveIntegerField(default=1, help_text="Training processes it runs at once on its CPUs.")
    processes = models.PositiveIntegerField(default=1, help_text="Runs it executes at once (django-q2 workers).")
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "training_worker"  # made by the training app before workers had an app of their own
        ordering = ["host", "name"]

    def __str__(self) -> str:
        return self.name

    def describe_resources(self) -> str:
        gpus = f"GPUs {','.join(self.gpus)}" if self.gpus else "no GPU"
        return f"{gpus}; {self.cpu_slots} CPU slot{'s' if self.cpu_slots != 1 else ''}"
