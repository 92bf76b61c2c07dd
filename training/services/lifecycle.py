"""Transitions the platform makes while a run executes: claim (queued -> running, one winner), the child's start,
progress and heartbeat, measurements, and the end (succeeded, failed, or failed for lack of heartbeats). Each is
one conditional UPDATE where two processes could race.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from core.redact import redact_paths
from engine.processes import started_at, this_process
from workers.models import Worker

from ..models import TrainingManifest, TrainingRun
from ..notices import run_ended

logger = logging.getLogger(__name__)
Status = TrainingRun.Status


def training_run_claim(*, run_id: int, worker: Worker | None = None, gpus: list[str] | None = None) -> bool:
    """queued -> running, as one conditional UPDATE: of several workers handed the same run, one wins. ``worker``
    (its cluster) and ``gpus`` (the GPUs it gave the run) are recorded with it."""
    now = timezone.now()
    host = worker.host if worker is not None else settings.DUMPSITE_HOST_ID
    pid, started = this_process()
    claimed = (
        TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
            status=Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            worker_host=host,
            worker_process=f"{host}:{pid}"[:300],
            worker_pid=pid,
            worker_started=started,
            worker=worker,
            assigned_gpus=list(gpus or []),
        )
        == 1
    )
    if claimed:
        detail: dict[str, Any] = {"worker": f"{host}:{os.getpid()}", **({"gpus": ",".join(gpus)} if gpus else {})}
        audit_record(
            action="started",
            obj=TrainingRun.objects.only("name").get(pk=run_id),
            **detail,
        )
    return claimed


def training_run_child_started(*, run_id: int, pid: int) -> None:
    """The training child of a running run started: its pid and start time, for the reaper of an orphan."""
    TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(
        training_pid=pid, training_started=started_at(pid)
    )


def training_run_record(*, run_id: int, **fields: Any) -> None:
    """What the worker measured about a run (``export_summary``, ``timings``); no state change."""
    allowed = {"export_summary", "timings"}
    if not set(fields) <= allowed:
        raise ValueError(f"training_run_record writes only {sorted(allowed)}")
    TrainingRun.objects.filter(pk=run_id).update(**fields)


def training_run_record_manifest(*, run_id: int, manifest: dict, validation: dict) -> None:
    """What went to each side of the run's split (``datasets.coco_export.manifest_of``), and the validation
    document itself, so that the model can be evaluated on exactly that split later."""
    TrainingManifest.objects.update_or_create(
        run_id=run_id,
        defaults={
            "split": manifest["split"],
            "train_image_ids": manifest["train"]["image_ids"],
            "train_box_ids": manifest["train"]["box_ids"],
            "val_image_ids": manifest["val"]["image_ids"],
            "val_box_ids": manifest["val"]["box_ids"],
            "train_hash": manifest["train"]["content_hash"],
            "val_hash": manifest["val"]["content_hash"],
            "validation_coco": validation,
        },
    )


def training_run_progress(*, run_id: int, state: dict) -> bool:
    """Store live progress (and the heartbeat). Returns False once the run is no longer running."""
    fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
    setup = state.pop("setup", None)  # sent once by the child, right before it builds the runner
    if setup is not None:
        fields["device"] = (setup.get("device") or "")[:200]
        if setup.get("transfer"):
            transfer = TrainingRun.objects.values_list("weight_transfer", flat=True).get(pk=run_id) or {}
            fields["weight_transfer"] = {**transfer, "applied": setup["transfer"]}
    tracking = state.pop("tracking", None)  # sent once by a run that tracks to MLflow
    if tracking is not None:
        fields["tracking"] = tracking
    if state.get("max_iters"):
        fields.update(max_iters=state["max_iters"], progress_percent=min(100.0, state.get("percent") or 0.0))
    if state.get("max_epochs"):
        fields["max_epochs"] = state["max_epochs"]
    if state.get("iter") is not None:
        fields.update(
            current_iter=state["iter"],
            current_epoch=state.get("epoch") or 0,
            latest_losses=state.get("losses") or {},
            learning_rate=state.get("lr"),
            eta_seconds=state.get("eta"),
        )
    return TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(**fields) == 1


@transaction.atomic
def _finish(run_id: int, status: str, **fields: Any) -> bool:
    finished = (
        TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(
            status=status, finished_at=timezone.now(), heartbeat_at=timezone.now(), training_pid=None, **fields
        )
        == 1
    )
    if finished:
        audit_record(
            action=str(status),
            obj=TrainingRun.objects.only("name").get(pk=run_id),
            **({"reason": fields["error_message"][:500]} if fields.get("error_message") else {}),
        )
        run_ended(run_id)
    return finished


def training_run_fail_stale(*, run: TrainingRun, cutoff: datetime, message: str) -> bool:
    """running -> failed for a run whose last heartbeat is older than ``cutoff`` (its worker is gone). One
    conditional UPDATE: of several reapers, or a reaper and a last heartbeat, exactly one outcome wins."""
    with transaction.atomic():
        return _fail_stale(run, cutoff, message)


def _fail_stale(run: TrainingRun, cutoff: datetime, message: str) -> bool:
    updated = TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=Status.FAILED, finished_at=timezone.now(), training_pid=None, error_message=redact_paths(message)
    )
    if updated:
        audit_record(action="failed", obj=run, reason=message, reaped=True)
        run_ended(run.pk)
    return updated == 1


def training_run_fail_gone(*, run: TrainingRun, message: str) -> bool:
    """running -> failed for a run whose worker process is gone (seen on its own host). Conditional on the same
    worker process still being recorded: a run claimed again meanwhile is not touched."""
    with transaction.atomic():
        return _fail_gone(run, message)


def _fail_gone(run: TrainingRun, message: str) -> bool:
    updated = TrainingRun.objects.filter(
        pk=run.pk, status=Status.RUNNING, worker_pid=run.worker_pid, worker_started=run.worker_started
    ).update(status=Status.FAILED, finished_at=timezone.now(), training_pid=None, error_message=redact_paths(message))
    if updated:
        audit_record(action="failed", obj=run, reason=message, reaped=True)
        run_ended(run.pk)
    return updated == 1


def training_run_fail(*, run_id: int, message: str, log_tail: str = "") -> bool:
    """running -> failed. Users read the message and the log tail: the server's paths are replaced (the server
    log keeps the original)."""
    logger.warning("training run %s failed: %s", run_id, message)
    return _finish(
        run_id, Status.FAILED, error_message=redact_paths(message)[:10_000], log_tail=redact_paths(log_tail)[-20_000:]
    )


def training_run_succeed(*, run_id: int, log_tail: str = "", stop_reason: str = "") -> bool:
    return _finish(
        run_id,
        Status.SUCCEEDED,
        progress_percent=100.0,
        eta_seconds=0.0,
        stop_reason=stop_reason[:300],
        log_tail=redact_paths(log_tail)[-20_000:],
    )
