"""Reviewed sites back into training data: the confirmed detections of a run (corrected ones and the sites a
reviewer drew included) become boxes of tiles cut from its orthophotos, the rejected ones hard-negative tiles, by
the orthophoto tiling of ``datasets`` (windowed reads, the share rule, footprints) as a dataset import a worker runs
with progress.

- Classes are matched by name: a class the dataset lacks is added.
- Provenance: every new image records the detection run and its model; every box its detection, the model's
  score and class, and its reviewer (``DatasetImage.source``, ``Annotation.source``).
- Only a finished run of georeferenced orthophotos: the tiling works in map coordinates.
"""

from __future__ import annotations

import io
import json

from access.rules import Actor, require
from core.errors import ApplicationError
from datasets.imports import StoredUpload, orthophoto_tiling_create
from datasets.models import Dataset, DatasetImport, Orthophoto
from training.models import TrainingRun

from .models import Detection
from .selectors import detection_runs_visible_to


def feature(d: Detection, *, kind: str) -> dict:
    source = {
        "detection": d.pk,
        "run": d.run_id,
        "score": round(d.score, 4),
        "origin": d.origin,
        "reviewer": d.reviewed_by.username if d.reviewed_by else None,
    }
    if d.model_class:
        source["model_class"] = d.model_class
    return {
        "type": "Feature",
        "properties": {"class": d.class_name if kind == "site" else "false alarm", "source": source},
        "geometry": json.loads(d.geometry.geojson) if d.geometry is not None else None,
    }


def collection(rows, kind: str) -> io.BytesIO:
    document = {"type": "FeatureCollection", "features": [feature(d, kind=kind) for d in rows]}
    out = io.BytesIO(json.dumps(document).encode())
    out.name = f"{kind}s.geojson"
    return out


def reviewed_sites_to_dataset(
    *,
    run: TrainingRun,
    user: Actor,
    dataset: Dataset | None = None,
    dataset_name: str | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    hard_negatives: bool = True,
) -> DatasetImport:
    """Queue the import of ``run``'s reviewed sites into ``dataset`` (or a new one, ``dataset_name``)."""
    require(user, "detection.review_detection", message="You may not add reviewed detections to a dataset.")
    if user is not None and not detection_runs_visible_to(user).filter(pk=run.pk).exists():
        raise ApplicationError("No such detection run.", {"run": "no such detection run"})
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise ApplicationError(
            f"Run #{run.pk} is {run.status}: its detections are added once it has finished.", {"run": run.status}
        )
    orthos = list(Orthophoto.objects.filter(pk__in=run.parameters.get("orthophotos") or []).order_by("id"))
    if not all(o.georeferenced for o in orthos):
        raise ApplicationError(
            "The run's orthophotos are not georeferenced: tiles are cut in map coordinates.", {"run": "pixels"}
        )
    reviewed = Detection.objects.filter(run=run, geometry__isnull=False).select_related("reviewed_by")
    sites = list(reviewed.filter(state=Detection.State.CONFIRMED).order_by("id"))
    if not sites:
        raise ApplicationError(
            f"Run #{run.pk} has no confirmed detection yet: review it first.", {"run": "nothing confirmed"}
        )
    rejected = list(reviewed.filter(state=Detection.State.REJECTED).order_by("id")) if hard_negatives else []
    tile = tile_size or int(run.parameters.get("tile_size") or 1024)
    return orthophoto_tiling_create(
        orthophotos=[StoredUpload(o.file.name, o.size_bytes, o.name) for o in orthos],
        annotations=collection(sites, "site"),
        negatives=collection(rejected, "false alarm") if rejected else None,
        options={
            "tile_size": tile,
            "overlap": tile // 4 if overlap is None else overlap,
            "background_ratio": 0.0,  # background comes as hard negatives, where the model was wrong
        },
        dataset=dataset,
        dataset_name=dataset_name,
        add_classes=True,
        user=user,
        source={"detection_run": run.pk, "model": run.evaluated_model_id},
    )
