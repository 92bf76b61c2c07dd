"""Small detection runs in the worker's warm child (``engine.warm``), where the model may already be loaded: a run
of at most ``DUMPSITE_WARM_DETECT_WINDOWS`` windows, on the CPU, over orthophotos in the local folder (a bucket's
credentials go to a detection child of its own, never to the long-lived one). Watched like a child of its own:
progress every tick, its pid recorded for the reaper, cancel and the time limit end the warm child (the next job
starts a new one)."""

from __future__ import annotations

from dataclasses import asdict

from django.conf import settings

from core.storage import in_bucket
from engine.detect import DetectionJob, window_total
from engine.supervisor import ChildResult, tail_text
from models_registry.predictions import warm_predictor
from training.execution.common import progress_of
from training.models import TrainingRun
from training.run_files import LOG
from training.services import training_run_child_started


def runs_warm(job: DetectionJob) -> bool:
    """Whether this run's job goes to the warm child."""
    limit = settings.DUMPSITE_WARM_DETECT_WINDOWS
    if settings.DUMPSITE_WARM_MODELS <= 0 or limit <= 0 or job.device == "gpu" or in_bucket():
        return False
    return window_total(job) <= limit


def supervise_warm(run: TrainingRun, job: DetectionJob) -> ChildResult:
    log = run.work_dir / LOG
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"{window_total(job)} windows: detecting in the worker's warm child, where the model stays loaded\n")
    predictor = warm_predictor()
    result = predictor.detect(
        asdict(job),
        on_progress=progress_of(run),
        on_start=lambda pid: training_run_child_started(run_id=run.pk, pid=pid),
        interval=settings.TRAINING_PROGRESS_INTERVAL,
        timeout=run.effective_time_limit,
    )
    answer = predictor.last_answer.get("result") or {}
    if "warm" in answer:
        with open(log, "a", encoding="utf-8") as fh:
            loaded = "was loaded already" if answer["warm"] else f"loaded in {answer['load_seconds']} s"
            fh.write(f"the model {loaded}\n")
    result.log_tail = tail_text(log)
    return result
