"""Living through a database restart. A worker's connections break when PostgreSQL stops; Django reconnects only once
the broken connection is closed. What must be written (a run's end, an import's end) is written once the database is
back, within a deadline; what is only progress is skipped meanwhile, and the work goes on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)
T = TypeVar("T")

DATABASE_ERRORS = (OperationalError, InterfaceError)


def drop_broken_connections() -> None:
    """Close this thread's connections, so that the next query connects afresh (outside a transaction only)."""
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except DATABASE_ERRORS:
            pass


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def when_database_is_back(call: Callable[[], T], *, within: float, what: str, poll: float = 1.0) -> T:
    """``call()``, again every ``poll`` seconds while the database is unreachable, for at most ``within`` seconds;
    then its error. ``call`` must be safe to repeat: a transaction that failed was rolled back whole."""
    deadline = time.monotonic() + within
    warned = False
    while True:
        try:
            result = call()
        except DATABASE_ERRORS as exc:
            drop_broken_connections()
            if time.monotonic() >= deadline:
                raise
            if not warned:
                logger.warning(
                    "%s: the database is unreachable (%s); trying again until it is back", what, first_line(exc)
                )
                warned = True
            time.sleep(poll)
            continue
        if warned:
            logger.warning("%s: the database is back", what)
        return result


class Outage:
    """Progress writes that may fail while the database is away: a failed write is skipped (logged once per outage)
    and the connection dropped, so the next write reconnects. ``call`` wraps one write and returns its result, or
    ``default`` while the database is unreachable."""

    def __init__(self, what: str):
        self.what = what
        self.since: float | None = None

    def call(self, write: Callable[[], T], default: T) -> T:
        try:
            result = write()
        except DATABASE_ERRORS as exc:
            drop_broken_connections()
            if self.since is None:
                self.since = time.monotonic()
                logger.warning("%s: the database is unreachable (%s); going on without it", self.what, first_line(exc))
            return default
        if self.since is not None:
            logger.warning("%s: the database is back after %.0f s", self.what, time.monotonic() - self.since)
            self.since = None
        return result
