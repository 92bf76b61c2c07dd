"""The suite runs on two pytest-xdist workers (scripts/test.sh): each has its own test database and file tree, and
the workers share this machine's PostgreSQL server. A test marked ``exclusive`` (it stops that server) runs alone:
every test holds a shared lock while it runs, an exclusive one waits for the lock whole, and a gate taken first keeps
new tests from starting meanwhile (so the exclusive test is not starved). Once it is over, the other worker's broken
database connections are closed, to be opened again by its next test.

The longest tests are sent first (``LONGEST_FIRST``): a ten-minute test started last would end the run alone."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Node ids (file::test) of the tests measured longest, longest first: they start before the rest.
LONGEST_FIRST = (
    "tests/e2e/test_training_pipeline.py::test_train_from_scratch_then_fine_tune",
    "tests/e2e/test_admin_browser.py::test_operator_starts_watches_and_publishes",
    "tests/e2e/test_bucket_runs.py::test_runs_share_nothing_but_the_database_and_the_bucket",
    "tests/e2e/test_nodes.py::test_a_cancel_or_a_time_limit_ends_every_rank_on_both_hosts_within_seconds",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "exclusive: the test stops a service the pytest-xdist workers share; it runs while no other does"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {node: position for position, node in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))  # stable: the rest keep their order


@contextmanager
def _locked(exclusive: bool) -> Iterator[None]:
    stem = Path(tempfile.gettempdir()) / f"dumpsite-tests-{os.environ['PYTEST_XDIST_TESTRUNUID']}"  # one per run
    with open(f"{stem}.gate", "a") as gate, open(f"{stem}.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield  # both are released when the files close


def _drop_broken_connections() -> None:
    # Imported here: Django is set up by pytest-django after this plugin is loaded.
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and not connection.is_usable():
            connection.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    with _locked(exclusive=item.get_closest_marker("exclusive") is not None):
        _drop_broken_connections()
        yield
