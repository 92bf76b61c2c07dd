"""The one way a run of any kind (training, evaluation) is queued: the rules every kind obeys, checked here once.

A kind's own service checks what is its own (a training run's dataset and base model, an evaluation's model and
split), then calls ``run_queue``: the priority the user may give, the site's share of the queue, the time limit,
the name (a default one is shortened to fit; a given one that does not fit is refused), the creator's object
permissions, the audit trail, and the task that tells the workers, sent once the transaction commits.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q

from access.roles import CREATOR_PERMS
from access.rules import grant, require
from audit.services import audit_record
from core.errors import ApplicationError
from core.quotas import queue_share_check
from workers.resources import site_defaults

from ..models import TrainingRun

# The scheduler's task that takes the next run (a name, not an import: the scheduler sits above this app).
TASK = "scheduler.tasks.execute_training_run"
NAME_MAX = TrainingRun._meta.get_field("name").max_length or 200


def with_site_defaults(parameters: dict | None) -> dict | None:
    """The given parameters, with the site's defaults (``workers.resources.site_defaults``) where they say
    nothing."""
    if not isinstance(parameters, dict):
        return parameters
    return {**parameters, **{k: v for k, v in site_defaults().items() if parameters.get(k) is None}}


def priority_checked(user: Any, priority: Any) -> int:
    """A run's priority: normal, or high for users with ``training.prioritize_trainingrun`` (and the platform)."""
    if priority in (None, "", "normal", TrainingRun.Priority.NORMAL):
        return TrainingRun.Priority.NORMAL
    if priority not in ("high", TrainingRun.Priority.HIGH):
        raise ApplicationError("Invalid priority.", {"priority": "normal or high"})
    require(user, "training.prioritize_trainingrun", message="You may not queue runs with high priority.")
    return TrainingRun.Priority.HIGH


def may_prioritize(user: Any) -> bool:
    return user is None or user.has_perm("training.prioritize_trainingrun")


def time_limit_checked(time_limit_seconds: Any) -> int | None:
    """None (the site's limit, DUMPSITE_RUN_TIMEOUT) or a whole number of seconds up to it."""
    if time_limit_seconds is not None and (
        isinstance(time_limit_seconds, bool)
        or not isinstance(time_limit_seconds, int)
        or not 1 <= time_limit_seconds <= settings.TRAINING_RUN_TIMEOUT
    ):
        raise ApplicationError(
            "Invalid time limit.",
            {"time_limit_seconds": f"a whole number of seconds from 1 to {settings.TRAINING_RUN_TIMEOUT}"},
        )
    return time_limit_seconds


def name_checked(name: str, *, default: str) -> str:
    """The name given (refused when it is too long), or ``default`` shortened to fit: a default obeys the same
    rule as input, and never refuses a run the user did not name."""
    name = (name or "").strip()
    if not name:
        default = " ".join(default.split())
        return default if len(default) <= NAME_MAX else default[: NAME_MAX - 1].rstrip() + "…"
    if len(name) > NAME_MAX:
        raise ApplicationError("The run name is too long.", {"name": f"at most {NAME_MAX} characters"})
    return name


def next_attempt(run: TrainingRun) -> int:
    """The number of the next attempt in ``run``'s chain of retries."""
    root = run.retry_of_root or run
    chain = TrainingRun.objects.filter(Q(pk=root.pk) | Q(retry_of_root=root))
    return (chain.aggregate(n=Max("attempt"))["n"] or 0) + 1


def run_queue(
    *,
    kind: str,
    name: str,
    default_name: str,
    created_by: Any,
    time_limit_seconds: Any = None,
    priority: Any = None,
    retry_of: TrainingRun | None = None,
    attempt: int = 1,
    audit: dict | None = None,
    **fields: Any,
) -> TrainingRun:
    """Create the queued run of ``kind`` (the kind's own checks done) under the rules every kind shares. Runs in
    the caller's transaction; the workers hear of the run once it commits."""
    priority = priority_checked(created_by, priority)
    queue_share_check(created_by)  # runs, evaluations and predict checks share it
    run = TrainingRun.objects.create(
        kind=kind,
        name=name_checked(name, default=default_name),
        created_by=created_by,
        time_limit_seconds=time_limit_checked(time_limit_seconds),
        priority=priority,
        retry_of=retry_of,
        retry_of_root=(retry_of.retry_of_root or retry_of) if retry_of else None,
        attempt=attempt,
        **fields,
    )
    grant(created_by, CREATOR_PERMS["trainingrun"], run)
    audit_record(action="created", obj=run, actor=created_by, **(audit or {}))
    transaction.on_commit(lambda: training_run_enqueue(run_id=run.pk))
    return run


def training_run_enqueue(*, run_id: int) -> str:
    from django_q.tasks import async_task  # django-q2's task module loads its cluster machinery: only when sending

    return str(async_task(TASK, run_id, task_name=f"training-run-{run_id}", group="training"))
