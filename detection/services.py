"""Detection runs: a registered model over one or more stored orthophotos of a dataset, queued on the training
workers as a run of kind ``detect`` (``training.services.queueing.run_queue``: priority, queue share, time limit,
grants, audit), and the ignore zones of a dataset.

Who may start one: ``detection.run_detection`` (Trainer, Publisher, Administrator), a model the user may see, and
a dataset the user may see that holds the orthophotos. A hidden model or orthophoto gets the answer a missing one
gets. The model must be runnable (a checkpoint and a config that names a test pipeline).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.gis.geos import GEOSException, GEOSGeometry, MultiPolygon, Polygon
from django.core.files.storage import default_storage
from django.db import transaction

from access.rules import Actor, require
from audit.services import audit_record
from core.errors import ApplicationError
from core.storage import delete_file
from datasets.models import Dataset, Orthophoto
from datasets.orthophotos import orthophoto_store
from datasets.selectors import orthophotos_visible_to
from engine.presets import DEFAULT_PRESET, PRESETS
from models_registry.models import TrainedModel
from models_registry.selectors import models_visible_to
from training.models import TrainingRun
from training.services.queueing import next_attempt, run_queue

from .models import IgnoreZone, KnownSite
from .params import detection_parameters
from .sites import known_sites_read

MAX_ORTHOPHOTOS = 100
ZONE_MAX_BYTES = 10 * 2**20
ZONE_MAX_VERTICES = 100_000


def runnable_config(model: TrainedModel) -> None:
    """A checkpoint and a stored config with a test pipeline, or a refusal that says which is missing."""
    if not model.checkpoint or not default_storage.exists(model.checkpoint.name):
        raise ApplicationError(f"Model {model.name!r} has no checkpoint file.", {"model": "no checkpoint"})
    try:
        with model.config.open("rb") as fh:
            config = json.load(fh)
        pipeline = config["test_dataloader"]["dataset"]["pipeline"]
        if not isinstance(pipeline, list) or not pipeline:
            raise KeyError("pipeline")
    except (OSError, ValueError, KeyError, TypeError):
        raise ApplicationError(
            f"Model {model.name!r} has no runnable config (a stored MMDetection config with a test pipeline).",
            {"model": "no runnable config"},
        ) from None


def orthophotos_for(user: Actor, ids: list[Any]) -> list[Orthophoto]:
    """The orthophotos ``ids`` names, in that order, among those the user may see (through their dataset)."""
    if not isinstance(ids, list) or not ids or len(ids) > MAX_ORTHOPHOTOS:
        raise ApplicationError(
            "Name one or more orthophotos.", {"orthophotos": f"a list of 1 to {MAX_ORTHOPHOTOS} orthophoto ids"}
        )
    if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise ApplicationError("Orthophotos are named by id.", {"orthophotos": "a list of integer ids"})
    rows = (orthophotos_visible_to(user) if user is not None else Orthophoto.objects.all()).filter(pk__in=ids)
    rows = rows.select_related("dataset")
    found = {o.pk: o for o in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ApplicationError("No such orthophoto.", {"orthophotos": f"no such orthophoto: {missing[0]}"})
    return [found[i] for i in dict.fromkeys(ids)]


@transaction.atomic
def detection_run_create(
    *,
    model: TrainedModel,
    orthophotos: list[Orthophoto],
    parameters: dict | None = None,
    name: str = "",
    created_by: Actor = None,
    time_limit_seconds: int | None = None,
    priority: str | int | None = None,
    retry_of: TrainingRun | None = None,
    attempt: int = 1,
    known_sites: bytes | list[tuple[str, str, MultiPolygon]] | None = None,
) -> TrainingRun:
    """Queue a detection run of ``model`` over ``orthophotos`` (all of one dataset), judged against
    ``known_sites`` where given (a GeoJSON document, or sites already read: ``detection.sites``)."""
    if created_by is not None:
        require(created_by, "detection.run_detection", message="You may not run detections.")
        if not models_visible_to(created_by).filter(pk=model.pk).exists():
            raise ApplicationError("No such model.", {"model": "no such model"})
    orthophotos = orthophotos_for(created_by, [o.pk for o in orthophotos])
    datasets = {o.dataset_id for o in orthophotos}
    if len(datasets) > 1:
        raise ApplicationError(
            "The orthophotos of one detection run belong to one dataset (one area).",
            {"orthophotos": f"from {len(datasets)} datasets"},
        )
    dataset = orthophotos[0].dataset
    runnable_config(model)
    params = {"orthophotos": [o.pk for o in orthophotos], **detection_parameters(model, parameters)}
    sites = known_sites_read(known_sites, orthophotos) if isinstance(known_sites, bytes | str) else known_sites
    names = ", ".join(o.name for o in orthophotos[:3]) + (
        f" and {len(orthophotos) - 3} more" if len(orthophotos) > 3 else ""
    )
    run = run_queue(
        kind=TrainingRun.Kind.DETECT,
        name=name,
        default_name=f"Detect with {model.name} on {names}",
        created_by=created_by,
        time_limit_seconds=time_limit_seconds,
        priority=priority,
        retry_of=retry_of,
        attempt=attempt,
        audit={"kind": "detect", "model": model.pk, "dataset": dataset.pk, "orthophotos": params["orthophotos"]},
        dataset=dataset,
        evaluated_model=model,
        architecture=model.architecture if model.architecture in PRESETS else DEFAULT_PRESET,
        parameters=params,
        max_epochs=0,
    )
    KnownSite.objects.bulk_create(
        KnownSite(run=run, label=label, class_name=name, geometry=geometry) for label, name, geometry in sites or []
    )
    return run


def detection_run_again(*, run: TrainingRun, user: Any, resume: bool) -> TrainingRun:
    """A detection has no checkpoint to resume from: it is run again with the same model, orthophotos and
    parameters (the user who asks must still see them all, and becomes its owner)."""
    if resume:
        raise ApplicationError(
            f"Run #{run.pk} is a detection run; it has nothing to resume from. Retry it instead.", {"kind": "detect"}
        )
    if run.evaluated_model is None:
        raise ApplicationError(f"Run #{run.pk} detected with a model that was deleted since.", {"model": "deleted"})
    root = run.retry_of_root or run
    params = dict(run.parameters)
    ids = params.pop("orthophotos", [])
    with transaction.atomic():
        attempt = next_attempt(run)
        new = detection_run_create(
            model=run.evaluated_model,
            orthophotos=orthophotos_for(user, ids),
            parameters=params,
            name=f"{root.name} (attempt {attempt})"[:200],
            created_by=user,
            time_limit_seconds=run.time_limit_seconds,
            retry_of=run,
            attempt=attempt,
            known_sites=[(s.label, s.class_name, s.geometry) for s in run.known_sites.all()],
        )
        audit_record(action="retried", obj=run, actor=user, new_run=new.pk)
    return new


def zone_geometry(text: str | bytes) -> MultiPolygon:
    """The polygons of a GeoJSON document (a FeatureCollection, a Feature or a bare geometry) in WGS 84, as one
    multipolygon; refused when it is too large, not GeoJSON, or holds no polygon."""
    if len(text) > ZONE_MAX_BYTES:
        raise ApplicationError(f"The zone file is larger than {ZONE_MAX_BYTES:,} bytes.", {"geometry": "too large"})
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ApplicationError("The zone file is not JSON.", {"geometry": "not GeoJSON"}) from None
    if not isinstance(doc, dict):
        raise ApplicationError("The zone file is not GeoJSON.", {"geometry": "not GeoJSON"})
    if doc.get("type") == "FeatureCollection":
        features = doc["features"] if isinstance(doc.get("features"), list) else []
        geometries = [f.get("geometry") for f in features if isinstance(f, dict)]
    elif doc.get("type") == "Feature":
        geometries = [doc.get("geometry")]
    else:
        geometries = [doc]
    polygons: list[Polygon] = []
    for geometry in geometries:
        if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        try:
            parsed = GEOSGeometry(json.dumps(geometry), srid=4326)
        except (GEOSException, ValueError, TypeError):
            raise ApplicationError("A zone's geometry is not valid GeoJSON.", {"geometry": "invalid"}) from None
        parts = list(parsed) if isinstance(parsed, MultiPolygon) else [parsed]
        polygons.extend(p for p in parts if isinstance(p, Polygon))
    if not polygons:
        raise ApplicationError("The zone file holds no polygon.", {"geometry": "no Polygon or MultiPolygon"})
    zone = MultiPolygon(polygons, srid=4326)
    if zone.num_coords > ZONE_MAX_VERTICES:
        raise ApplicationError(f"The zone has more than {ZONE_MAX_VERTICES:,} vertices.", {"geometry": "too many"})
    if not zone.valid:
        mended = zone.buffer(0)
        zone = mended if isinstance(mended, MultiPolygon) else MultiPolygon([mended], srid=4326)
    return zone


def ignore_zone_create(*, dataset: Dataset, name: str, geojson: str | bytes, created_by: Actor = None) -> IgnoreZone:
    """An ignore zone of ``dataset``'s area (the user must be allowed to change the dataset)."""
    require(created_by, "datasets.change_dataset", dataset, message=f"You may not change {dataset}.")
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ApplicationError("An ignore zone needs a name of 1 to 200 characters.", {"name": "1 to 200 characters"})
    zone = IgnoreZone.objects.create(dataset=dataset, name=name, geometry=zone_geometry(geojson), created_by=created_by)
    audit_record(action="ignore zone added", obj=dataset, actor=created_by, zone=zone.pk, name=name)
    return zone


def ignore_zone_delete(*, zone: IgnoreZone, user: Actor = None) -> None:
    """Remove an ignore zone (the user must be allowed to change its dataset); detections flagged by it keep their
    flag (a later run decides afresh)."""
    require(user, "datasets.change_dataset", zone.dataset, message=f"You may not change {zone.dataset}.")
    audit_record(action="ignore zone removed", obj=zone.dataset, actor=user, zone=zone.pk, name=zone.name)
    zone.delete()


def known_sites_of(data: dict) -> bytes | None:
    """The known sites a request gave, as the GeoJSON document's bytes (bounded like any sites file)."""
    if data.get("known_sites_file") is not None:
        upload = data["known_sites_file"]
        limit = settings.DUMPSITE_GEOJSON_MAX_BYTES
        if upload.size > limit:
            raise ApplicationError(
                f"The known sites file is larger than {limit:,} bytes (DUMPSITE_GEOJSON_MAX_BYTES).",
                {"known_sites_file": "too large"},
            )
        return upload.read()
    if data.get("known_sites") is not None:
        return json.dumps(data["known_sites"]).encode()
    return None


def forget_uploads(stored: list[Orthophoto]) -> None:
    """Files of orthophotos whose rows a refused request rolled back: removed, so that nothing is half-kept."""
    for ortho in stored:
        if not Orthophoto.objects.filter(pk=ortho.pk).exists():
            delete_file(ortho.file.name)


def detection_run_create_with_uploads(
    *,
    model: TrainedModel,
    orthophotos: list[Orthophoto],
    uploads: list,
    dataset: Dataset | None,
    created_by: Actor,
    **run: Any,
) -> TrainingRun:
    """``detection_run_create`` over ``orthophotos`` and ``uploads`` kept with ``dataset`` first, all in one
    transaction: a refused run keeps neither the uploads' rows nor their files."""
    stored: list[Orthophoto] = []
    try:
        with transaction.atomic():
            for upload in uploads:
                if dataset is None:
                    raise ApplicationError("No such dataset.", {"dataset": "no such dataset"})
                stored.append(orthophoto_store(dataset=dataset, source=upload, name=upload.name, created_by=created_by))
            return detection_run_create(model=model, orthophotos=[*orthophotos, *stored], created_by=created_by, **run)
    except BaseException:
        forget_uploads(stored)
        raise
