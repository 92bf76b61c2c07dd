"""gunicorn's settings for the web process (``gunicorn -c python:dumpsite.gunicorn_conf dumpsite.wsgi``): with
PROMETHEUS_MULTIPROC_DIR set, every worker process writes its metrics there and ``/metrics`` sums them, whichever
process answers; the folder is emptied when gunicorn starts and a dead worker's live gauges are dropped."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
