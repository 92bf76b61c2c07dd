"""The site's MLflow tracking server (or local store), for the workers: a client, and a run ended from outside its
training. mlflow is imported inside the functions: workers only, never the web process."""

from __future__ import annotations

import logging
import os
from typing import Any

from django.conf import settings

logger = logging.getLogger("core.mlflow")


def mlflow_enabled() -> bool:
    return bool(settings.DUMPSITE_MLFLOW_TRACKING_URI)


def mlflow_client() -> Any:
    """A client of the site's tracking URI (and registry). A server that does not answer is given up after two
    retries of 10 s each, not mlflow's default of 7 retries with doubling waits, unless the environment says."""
    # mlflow loads in the workers only, where a run or a model is tracked
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    uri = settings.DUMPSITE_MLFLOW_TRACKING_URI
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def mlflow_run_terminated(run_id: str, status: str) -> None:
    """End an MLflow run whose training did not end it (a cancel, a time limit, a host gone): ``KILLED`` or
    ``FAILED``. A server that does not answer is logged: the platform's run ends all the same."""
    try:
        client = mlflow_client()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status=status)
    except Exception as exc:  # noqa: BLE001 - tracking is told what it can be; the run's own end comes first
        logger.warning("MLflow run %s could not be ended %s: %s", run_id, status, exc)
