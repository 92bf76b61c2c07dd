"""Reads of training runs that need more than a query: curves from the stored progress events, the stored log."""

from __future__ import annotations

import io
from typing import Any, cast

from django.core.files.storage import default_storage
from django.db.models import F

from core.errors import ApplicationError
from core.redact import redact_paths
from core.storage import open_stored
from datasets.models import Annotation
from engine.events import metrics_history
from engine.pipelines import describe as describe_pipeline
from engine.pipelines import gsd_factor

from .models import TrainingManifest, TrainingRun
from .run_files import LOG, stored_checkpoint, stored_events, stored_log_tail, stored_name

BOX_SAMPLE = 200_000  # boxes a dry run's size report looks at, at most
MAX_CURVE_POINTS = 500


def last_checkpoint(run: TrainingRun) -> str | None:
    """The stored name of the newest epoch checkpoint a failed or cancelled run kept (for resuming), or None."""
    return stored_checkpoint(run.pk)


def run_log_file(run: TrainingRun) -> str | None:
    """The stored name of the run's log, None when it has none."""
    name = stored_name(run.pk, LOG)
    return name if default_storage.exists(name) else None


def run_log_tail(run: TrainingRun) -> str:
    """The end of the log as last pushed while the run trains; the stored tail once it has ended (paths redacted)."""
    live = stored_log_tail(run.pk) if not run.is_finished else ""
    return redact_paths(live or run.log_tail)


def run_log_lines(name: str, chunk_lines: int = 2000):
    """The whole stored log as redacted chunks of lines, for streaming a download without reading it whole."""
    with open_stored(name) as raw:
        batch = []
        for line in io.TextIOWrapper(io.BufferedReader(cast(Any, raw)), encoding="utf-8", errors="replace"):
            batch.append(line)
            if len(batch) >= chunk_lines:
                yield redact_paths("".join(batch)).encode()
                batch = []
        if batch:
            yield redact_paths("".join(batch)).encode()


def run_metrics(run: TrainingRun) -> dict:
    """Per-epoch metrics (the registered model's copy once there is one) and the per-iteration curve."""
    events = stored_events(run.pk)
    model = getattr(run, "trained_model", None)
    epochs = model.metrics_history if model is not None else metrics_history(events)
    iterations = [
        {
            "iteration": e.get("iter"),
            "epoch": e.get("epoch"),
            "loss": (e.get("losses") or {}).get("loss"),
            "lr": e.get("lr"),
        }
        for e in events
        if e.get("event") == "iter"
    ]
    step = max(1, -(-len(iterations) // MAX_CURVE_POINTS))
    thinned = iterations[::step]
    if iterations and thinned[-1] is not iterations[-1]:
        thinned.append(iterations[-1])
    return {"epochs": epochs, "iterations": thinned}


def run_split_image_ids(run: TrainingRun, side: str) -> list[int]:
    """The image ids of one side (``train`` or ``val``) of a run's recorded split (its manifest)."""
    if side not in ("train", "val"):
        raise ApplicationError("Choose the side of the split: train or val.", {"side": "train or val"})
    manifest = TrainingManifest.objects.filter(run=run).first()
    if manifest is None:
        raise ApplicationError(
            f"Run #{run.pk} recorded no split (it did not get to export its data, or is an evaluation).",
            {"run": "no recorded split"},
        )
    return list(manifest.train_image_ids if side == "train" else manifest.val_image_ids)


def box_sizes_seen(dataset: Any, params: dict, *, limit: int = BOX_SAMPLE) -> list[tuple[float, float]]:
    """The (width, height) of the dataset's enabled boxes as a run of ``params`` shows them to the network: scaled
    with the whole image to image_size, or at full resolution (resampled to target_gsd where the image's ground
    resolution is known). Up to ``limit`` boxes, a deterministic spread over the dataset."""
    boxes = Annotation.objects.filter(image__dataset=dataset, image__enabled=True, enabled=True)
    step = max(1, boxes.count() // limit)
    if step > 1:  # the sample is taken by the database: only the rows used travel
        boxes = boxes.annotate(spread=F("id") % step).filter(spread=0)
    rows = boxes.order_by("id").values_list("width", "height", "image__width", "image__height", "image__gsd_m")
    size, crops = params["image_size"], params.get("resize") == "crops"
    target = float(params.get("target_gsd") or 0)
    out = []
    for width, height, image_w, image_h, gsd in rows.iterator(chunk_size=20000):
        factor = gsd_factor(gsd, target) if crops else size / max(image_w, image_h)
        out.append((width * factor, height * factor))
    return out


def run_pipeline(run: TrainingRun) -> list[str] | None:
    """A training run's pipeline in words (``engine.pipelines.describe``); None for other kinds."""
    if run.kind != TrainingRun.Kind.TRAIN or "image_size" not in (run.parameters or {}):
        return None
    return describe_pipeline(run.parameters)
