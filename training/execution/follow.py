"""The life of a host's part of a run across hosts other than node 0 (see ``training.execution.nodes``): the same
split exported into this host's scratch folder and checked against node 0's, node 0's port waited for, and this
host's ranks run and watched."""

from __future__ import annotations

import logging
import secrets

from django.conf import settings

from core.errors import ApplicationError
from engine.supervisor import ChildResult, Rendezvous, tail_text

from ..models import RunNode, TrainingManifest, TrainingRun
from ..run_files import LOG
from ..services import run_node_end, training_run_fail
from .common import watched_child
from .nodes import LeaderLost, SplitChanged, problem_of, rendezvous_of, wait_for_node0, waited_problem
from .scratch import cleanup_work_dir
from .train import export_dataset, write_job

logger = logging.getLogger("training.execution")
Status = TrainingRun.Status


def same_split(run: TrainingRun, export, rank: int) -> None:
    """This host exported the split node 0 recorded (the same dataset, seed and strategy give the same split, unless
    the dataset changed in between)."""
    manifest = wait_for_node0(
        "the run's split",
        lambda: TrainingManifest.objects.filter(run_id=run.pk).first(),
        run,
        rank,
        timeout=run.effective_time_limit,
    )
    ours = export.manifest
    if (manifest.train_hash, manifest.val_hash) != (ours["train"]["content_hash"], ours["val"]["content_hash"]):
        raise SplitChanged(
            "The dataset changed while the run's hosts exported it: this host's split differs from node 0's. Retry "
            "the run once the dataset is no longer being edited."
        )


def training_run_follow(*, node_id: int) -> str:
    """The life of a part other than node 0: the same split exported here, this host's ranks run and watched.
    Returns how the part ended."""
    part = RunNode.objects.select_related("run__dataset", "run__base_model", "run__retry_of").get(pk=node_id)
    run, rank = part.run, part.node_rank or 0
    try:
        export = export_dataset(run, record=False)
        same_split(run, export, rank)
        job_file = write_job(run, export)
        port = wait_for_node0(
            "its rendezvous port",
            lambda: RunNode.objects.filter(run_id=run.pk, node_rank=0).values_list("port", flat=True).first(),
            run,
            rank,
            timeout=settings.DUMPSITE_GANG_TIMEOUT,
        )
        result = run_part(run, part, job_file, rendezvous_of(run, part, port))
        failed = "" if result.returncode == 0 or result.stopped else (result.error or "its processes failed")
        lost = waited_problem(run, rank, only=0) if failed else None
        if lost:
            raise LeaderLost(lost)
    except (LeaderLost, SplitChanged) as exc:  # nobody else would fail the run (node 0 waits, or is gone)
        failed = str(exc)
        training_run_fail(run_id=run.pk, message=failed, log_tail=tail_text(run.work_dir / LOG))
    except ApplicationError as exc:
        failed = str(exc)
    except Exception:  # noqa: BLE001 - a part must end recorded, whatever broke: node 0 then fails the run
        reference = secrets.token_hex(4)
        logger.exception("run %s: the part of host %s crashed (reference %s)", run.pk, part.host, reference)
        failed = f"Internal error in the worker (reference {reference}); the server log has the details."
    finally:
        cleanup_work_dir(run)
    run_node_end(node_id=node_id, failed=failed)
    return "failed" if failed else "done"


def run_part(run: TrainingRun, part: RunNode, job_file, rendezvous: Rendezvous) -> ChildResult:
    """This host's ranks, watched: stopped at the next tick once the run is no longer running, or once node 0 is
    lost (the run is then failed here: node 0's worker cannot)."""

    def progress(_state: dict) -> bool:
        if not TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING).exists():
            return False
        problem = problem_of(run, part.node_rank or 0, only=0)
        if problem:
            training_run_fail(run_id=run.pk, message=problem, log_tail=tail_text(run.work_dir / LOG))
            return False
        return True

    return watched_child(
        run,
        job_file,
        on_progress=progress,
        processes=int(run.parameters.get("processes") or 1),
        rendezvous=rendezvous,
        gpus=list(part.gpus),
    )
