"""What the life of every kind of run shares once its child has exited: the child's environment, the end of a run
that did not get to the end, and a failure that leaves nothing in flight."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from core.db import DATABASE_ERRORS, Outage, first_line, when_database_is_back
from core.host_cache import LocalFiles, local_files
from core.mlflow_client import mlflow_enabled, mlflow_run_terminated
from core.storage import in_bucket, missing_files, site_bucket
from datasets.coco_export import localized
from datasets.selectors import describe_image_paths
from engine.raster import BUCKET_KEY_ENV, BUCKET_SECRET_ENV
from engine.supervisor import (
    ChildResult,
    Rendezvous,
    child_environment,
    resource_environment,
    run_child,
    tail_text,
)
from models_registry.models import TrainedModel

from ..models import TrainingRun
from ..run_files import LOG
from ..services import training_run_child_started, training_run_fail, training_run_progress
from .scratch import cleanup_work_dir
from .sync import RunSync

logger = logging.getLogger("training.execution")
Status = TrainingRun.Status


def stored_pictures(doc: dict) -> tuple[dict, int]:
    """A recorded COCO document (a manifest's split) with only the pictures still in the storage, and their boxes;
    and how many pictures are gone since it was recorded."""
    missing = set(missing_files([i["file_name"] for i in doc["images"]]))
    present = [i for i in doc["images"] if i["file_name"] not in missing]
    kept = {i["id"] for i in present}
    annotations = [a for a in doc["annotations"] if a["image_id"] in kept]
    return {**doc, "images": present, "annotations": annotations}, len(doc["images"]) - len(present)


def localized_document(model: TrainedModel, doc: dict, work: Path) -> tuple[LocalFiles, Path]:
    """The model's files and the COCO document's pictures where this worker reads them (in place, or this host's
    cached copies of a bucket's), and the document written for the child with their paths (``gt.json``)."""
    local = local_files(
        [(model.config.name, model.config_sha256), (model.checkpoint.name, model.checkpoint_sha256)]
        + [(i["file_name"], i.get("sha256", "")) for i in doc["images"]]
    )
    gt_file = work / "gt.json"
    gt_file.write_text(json.dumps(localized(doc, local), ensure_ascii=False), encoding="utf-8")
    return local, gt_file


def child_environment_of(run: TrainingRun, gpus: list[str] | None = None) -> dict:
    """The child's environment: the basics and the site's additions, and what the worker gave the run (its GPUs,
    or none; thread counts for several processes). A detection child reading orthophotos from the site's bucket
    gets its credentials here, never in its job file, as a training that tracks to MLflow gets the server's. Another
    host's part of a run across hosts gives its own ``gpus``: the run records node 0's."""
    extra = tuple(settings.TRAINING_CHILD_ENV)
    if run.kind == TrainingRun.Kind.TRAIN and settings.DUMPSITE_MLFLOW_TRACKING_URI:
        extra += tuple(settings.DUMPSITE_MLFLOW_CHILD_ENV)  # the tracking server's credentials, where it has some
    env = resource_environment(
        child_environment(extra),
        device=run.parameters.get("device", "cpu"),
        gpus=run.assigned_gpus if gpus is None else gpus,
        processes=int(run.parameters.get("processes") or 1),
    )
    if run.kind == TrainingRun.Kind.DETECT and in_bucket():
        bucket = site_bucket()
        env.update({BUCKET_KEY_ENV: bucket.access_key, BUCKET_SECRET_ENV: bucket.secret_key})
    return env


def end_unless_trained(run: TrainingRun, result: ChildResult) -> str | None:
    """Step 4: a child that was stopped, ran out of time or failed ends the run here (its status returned);
    None when it trained to the end."""
    if result.stopped:  # cancelled meanwhile: the cancel already set the status
        sync_of(run).push_quietly()
        cleanup_work_dir(run)
        tracking_ended(run, "KILLED")
        return TrainingRun.objects.values_list("status", flat=True).get(pk=run.pk)
    if result.timed_out:
        return fail(
            run,
            log_tail=result.log_tail,
            message=(f"The run exceeded its time limit of {run.effective_time_limit} s and was stopped."),
        )
    if result.returncode != 0:
        return fail(run, message=describe_image_paths(result.error or "training failed"), log_tail=result.log_tail)
    return None


def fail(run: TrainingRun, *, message: str, log_tail: str) -> str:
    """Push what the run wrote (its log, its last checkpoint to resume from) to the storage if it answers, and clean
    the scratch folder, so that a run seen as finished has nothing left in flight. Written once the database is back
    if it is away (a restart): a run must not wait for the reaper to be seen failed."""
    sync_of(run).push_quietly()
    cleanup_work_dir(run)
    tracking_ended(run, "FAILED")
    when_database_is_back(
        lambda: training_run_fail(run_id=run.pk, message=message, log_tail=log_tail),
        within=settings.TRAINING_HEARTBEAT_LIMIT,
        what=f"run {run.pk}'s failure",
    )
    return Status.FAILED


def tracking_ended(run: TrainingRun, status: str) -> None:
    """The MLflow run of a training that did not end it itself (stopped, out of time, failed): ended ``status``."""
    if run.kind != TrainingRun.Kind.TRAIN or not mlflow_enabled():
        return
    try:
        tracking = TrainingRun.objects.values_list("tracking", flat=True).get(pk=run.pk) or {}
    except DATABASE_ERRORS:
        return  # the database is away: the run's failure waits for it, the MLflow run stays as it is
    run_id = (tracking.get("mlflow") or {}).get("run_id")
    if run_id:
        mlflow_run_terminated(run_id, status)


def sync_of(run: TrainingRun) -> RunSync:
    """The pusher of the run's files to the storage: one per run object in this worker (it remembers what it
    pushed)."""
    sync = run.__dict__.get("_file_sync")
    if sync is None:
        sync = run.__dict__["_file_sync"] = RunSync(run.pk, run.work_dir)
    return sync


def supervise(
    run: TrainingRun,
    job_file: Path,
    *,
    processes: int = 1,
    rendezvous: Rendezvous | None = None,
    watch: Callable[[], str | None] | None = None,
) -> ChildResult:
    """The child of every kind, watched until it exits, is cancelled or runs out of time: its progress into the
    run about once a second, its pid recorded for the reaper, the run's time limit and environment. While the
    database is away (a restart), the child trains on and its progress waits: the heartbeat resumes when the database
    is back, unless the reaper failed the run meanwhile (then the child is stopped at the next write). Its files go
    to the storage as it writes them (``RunSync``), and once more when the run ends. Node 0 of a run across hosts
    (``rendezvous``) also asks ``watch`` at each tick whether another host was lost or failed: the run then fails
    with what it says, and this host's processes stop."""
    return watched_child(
        run,
        job_file,
        on_progress=progress_of(run, watch),
        on_start=lambda pid: training_run_child_started(run_id=run.pk, pid=pid),
        processes=processes,
        rendezvous=rendezvous,
    )


def progress_of(run: TrainingRun, watch: Callable[[], str | None] | None = None) -> Callable[[dict], bool]:
    """What a run's watcher does with its child's progress at each tick (``supervise``'s): files to the storage,
    the progress into the run (waiting out a database restart), and False when the run is to stop."""
    outage = Outage(f"run {run.pk}'s progress")
    sync = sync_of(run)

    def progress(state: dict) -> bool:
        sync.tick()
        going = outage.call(lambda: training_run_progress(run_id=run.pk, state=state), True)
        problem = watch() if going and watch is not None else None
        if problem:
            training_run_fail(run_id=run.pk, message=problem, log_tail=tail_text(run.work_dir / LOG))
            return False
        return going

    return progress


def watched_child(
    run: TrainingRun,
    job_file: Path,
    *,
    on_progress: Callable[[dict], bool],
    on_start: Callable[[int], None] | None = None,
    processes: int = 1,
    rendezvous: Rendezvous | None = None,
    gpus: list[str] | None = None,
) -> ChildResult:
    """The run's child (or this host's ranks of it) in the run's scratch folder, with its time limit and
    environment, watched by ``on_progress`` at the site's progress interval."""
    return run_child(
        job_file=job_file,
        events_file=run.work_dir / "events.jsonl",
        log_file=run.work_dir / LOG,
        on_progress=on_progress,
        on_start=on_start,
        interval=settings.TRAINING_PROGRESS_INTERVAL,
        timeout=run.effective_time_limit,
        env=child_environment_of(run, gpus=gpus),
        processes=processes,
        rendezvous=rendezvous,
    )


def crashed(run: TrainingRun) -> str:
    """A worker-side error no check foresaw: logged with a reference the user is given, and the run failed (a run
    must never stay 'running' after its worker gave up). Call from an ``except`` block."""
    reference = secrets.token_hex(4)
    logger.exception("%s run %s crashed in the worker (reference %s)", run.kind, run.pk, reference)
    error = sys.exc_info()[1]
    if isinstance(error, DATABASE_ERRORS):
        message = (
            f"The worker lost the database and could not record the run ({first_line(error)}; reference "
            f"{reference}). Retry it, or resume it from its last checkpoint."
        )
    else:
        message = f"Internal error in the worker (reference {reference}); the server log has the details."
    return fail(run, message=message, log_tail=tail_text(run.work_dir / LOG))
