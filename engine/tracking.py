"""Experiment tracking of a training run, through mmengine's visualization backends. Child-process only (mmengine).

Every run writes TensorBoard event files into its own folder (the job's ``tracking["tensorboard_dir"]``; none where
the site turned them off), which the worker stores with the run. With an MLflow tracking URI in the job, the run is
also an MLflow run: the platform's run parameters and tags when it starts, every logged scalar (the loss and
learning rate each logging interval, the validation metrics each epoch), the config as an artifact, and FINISHED or
FAILED at its end.

mmengine's own backends write the config as Python source (``pretty_text``: ``config.py`` for MLflow, a text summary
for TensorBoard) and MLflow's uploads every ``.py``, ``.json`` and ``.log`` file of the work dir at its close
(detections, annotation files and the log with this server's folders included). These subclasses record the published
config as JSON instead, and upload nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from mmengine.logging import print_log
from mmengine.registry import VISBACKENDS
from mmengine.visualization.vis_backend import MLflowVisBackend, TensorboardVisBackend, force_init_env

from .config import publishable_config

TENSORBOARD_FLUSH_SECONDS = 30  # SummaryWriter's default is 120: a live run's files would lag two minutes


def _config_json(config: Any) -> str:
    """The config as it is published: no folder of this server in it, user text as JSON literals."""
    return json.dumps(publishable_config(json.loads(json.dumps(config.to_dict()))), ensure_ascii=False, indent=1)


@VISBACKENDS.register_module(force=True)
class DumpsiteTensorboardVisBackend(TensorboardVisBackend):
    def _init_env(self) -> None:
        os.makedirs(self._save_dir, exist_ok=True)
        # the tensorboard package loads with the first scalar a run writes
        from torch.utils.tensorboard import SummaryWriter

        self._tensorboard = SummaryWriter(self._save_dir, flush_secs=TENSORBOARD_FLUSH_SECONDS)

    @force_init_env
    def add_config(self, config: Any, **kwargs: Any) -> None:
        self._tensorboard.add_text("config", "```json\n" + _config_json(config) + "\n```")


@VISBACKENDS.register_module(force=True)
class DumpsiteMLflowVisBackend(MLflowVisBackend):
    """A tracking server that does not answer (at the start, or later) never stops the training: the backend says so
    in the log once and records nothing more."""

    def __init__(self, save_dir: str, *, events_file: str | None = None, **kwargs: Any):
        super().__init__(save_dir, **kwargs)
        self._events_file = events_file
        self._broken = False

    def _guarded(self, what: str, call: Callable[[], Any]) -> None:
        if self._broken:
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - tracking is told what it can be; the training goes on
            self._broken = True
            print_log(
                f"MLflow tracking stopped ({what}): {type(exc).__name__}: {exc}"[:1000], "current", logging.WARNING
            )

    def _init_env(self) -> None:
        # Given up after two retries of 10 s each, not mlflow's seven with doubling waits, unless the site says.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self._guarded("connecting", self._start)

    def _start(self) -> None:
        super()._init_env()
        run = self._mlflow.active_run() or self._mlflow.start_run()
        if self._events_file:  # the worker records the MLflow run's id with the platform's run (``tracking`` event)
            mlflow = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}
            with open(self._events_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"event": "tracking", "time": time.time(), "mlflow": mlflow}) + "\n")

    @force_init_env
    def add_config(self, config: Any, **kwargs: Any) -> None:
        self.cfg = config
        self._guarded("the config", lambda: self._mlflow.log_text(_config_json(config), "config.json"))

    @force_init_env
    def add_image(self, name: str, image: Any, step: int = 0, **kwargs: Any) -> None:
        self._guarded("an image", lambda: self._mlflow.log_image(image, name))

    @force_init_env
    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self._guarded("a scalar", lambda: self._mlflow.log_metric(name, value, step))

    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: str | None = None, **kwargs: Any) -> None:
        self._guarded("scalars", lambda: self._mlflow.log_metrics(scalar_dict, step))

    def close(self) -> None:
        if hasattr(self, "_mlflow"):
            self._guarded("the end of the run", self._mlflow.end_run)


def backends(tracking: dict) -> list[dict]:
    """The visualizer's backends for a run: the local one (mmengine's scalars.json and config.json, kept for whoever
    inspects a work dir), TensorBoard, and MLflow when the job names a tracking URI."""
    out: list[dict] = [{"type": "JsonConfigLocalVisBackend"}]
    if tracking.get("tensorboard_dir"):
        out.append({"type": "DumpsiteTensorboardVisBackend", "save_dir": tracking["tensorboard_dir"]})
    mlflow = tracking.get("mlflow")
    if mlflow:
        out.append(
            {
                "type": "DumpsiteMLflowVisBackend",
                # Unused with a tracking URI, but mmengine's backend needs a folder that exists.
                "save_dir": os.path.dirname(os.path.abspath(tracking["events_file"])),
                "tracking_uri": mlflow["tracking_uri"],
                "exp_name": mlflow["experiment"],
                "run_name": mlflow["run_name"],
                "tags": mlflow["tags"],
                "params": mlflow["params"],
                "artifact_location": mlflow.get("artifact_location") or None,
                "events_file": tracking.get("events_file"),
            }
        )
    return out


def end_failed() -> None:
    """Mark the active MLflow run FAILED (a training that raised): its atexit hook would end it FINISHED."""
    mlflow = sys.modules.get("mlflow")  # imported only where a run tracks to MLflow
    if mlflow is not None and mlflow.active_run() is not None:
        try:
            mlflow.end_run(status="FAILED")
        except Exception:  # noqa: BLE001 - the training's own error is what the run reports
            pass
