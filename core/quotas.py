"""One queue share per user, whatever the job: training and evaluation runs and predict checks all wait on the same
workers, so at most ``TRAINING_MAX_QUEUED_PER_USER`` of a user's jobs of every kind may wait at once.

Each app that queues jobs for the workers registers a counter of a user's waiting jobs when it starts
(``AppConfig.ready``); the check sums them, with the user's row locked for the rest of the transaction so that two
requests of one user cannot both pass.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import get_user_model

from .errors import ApplicationError

_counters: dict[str, Callable[[object], int]] = {}


def register_queued_counter(kind: str, counter: Callable[[object], int]) -> None:
    """``counter(user)`` counts the user's waiting jobs of ``kind`` (e.g. "runs", "predict checks")."""
    _counters[kind] = counter


def queue_share_check(user) -> None:
    """Refuse a new job when the user already has the limit of jobs waiting (ApplicationError naming them)."""
    limit = settings.TRAINING_MAX_QUEUED_PER_USER
    if user is None or not limit:
        return
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    counts = {kind: counter(user) for kind, counter in sorted(_counters.items())}
    queued = sum(counts.values())
    if queued >= limit:
        kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        raise ApplicationError(
            f"You already have {queued} queued jobs ({kinds}; the limit is {limit}); wait for them to start or "
            "cancel some.",
            {"queued_jobs": queued, **{f"queued_{k.replace(' ', '_')}": n for k, n in counts.items()}},
        )
