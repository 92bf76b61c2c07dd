"""gunicorn's settings for the web process (``gunicorn -c python:dumpsite.gunicorn_conf dumpsite.wsgi``): with
PROMETHEUS_MULTIPROC_DIR set, every worker process writes its metrics there and ``/metrics`` sums them, whichever
process answers; the folder is emptied when gunicorn starts and a dead worker's live gauges are dropped.

Each web process keeps its database connection between requests (``POSTGRES_CONN_MAX_AGE``, 600 s unless set;
checked before use, so a restarted database is reconnected to): a new connection per request costs PostgreSQL a
process and cold catalog caches, which under load (bench/load.py) cost more than the request itself."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Read by the settings when each worker process loads the application, after this file.
os.environ.setdefault("POSTGRES_CONN_MAX_AGE", "600")


def on_starting(server) -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus_client only where its multiprocess mode is on
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
