"""Writes to the model registry: registering trained and base models, publishing."""

from __future__ import annotations

import hashlib
import logging
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from access.roles import CREATOR_PERMS
from access.rules import Actor, grant, require
from audit.services import audit_record
from core.errors import ApplicationError
from core.storage import delete_stored, storage_errors, store_file
from datasets.services import validate_class_names
from engine.config import dumps_config_json, set_classes
from engine.inspect import inspect_checkpoint
from engine.presets import PRESETS

from .mlflow_versions import mlflow_sync_enqueue
from .models import METRIC_FIELDS, TrainedModel
from .notices import publication_told

logger = logging.getLogger("models_registry")


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _store_artifacts(
    *,
    checkpoint: Path,
    config: Path,
    config_name: str = "config.json",
    extra_files: dict | None = None,
    move: bool = False,
) -> tuple[str, dict]:
    """Store the files under models/<new key>/ (moved when ``move`` and the storage is the local folder on the same
    file system: see ``core.storage.store_file``) and return the key and the stored names + hashes. Stored before
    any row names them (upload, then commit): a failure leaves no file and no row."""
    key = secrets.token_hex(8)
    folder = f"models/{key}"
    try:
        checkpoint_sha256 = store_file(Path(checkpoint), f"{folder}/model.pth", move=move)
        config_sha256 = store_file(Path(config), f"{folder}/{config_name}", move=move)
        for name, source in (extra_files or {}).items():
            store_file(Path(source), f"{folder}/{name}", move=move)
    except storage_errors() as exc:
        delete_stored(folder)
        # The details (the store's address among them) go to the log, not to the users.
        logger.warning("the storage did not take the files of model %s: %s", key, exc)
        raise ApplicationError(
            f"The storage did not take the model's files ({type(exc).__name__}); nothing was registered."
        ) from exc
    except BaseException:
        delete_stored(folder)
        raise
    return key, {
        "checkpoint": f"{folder}/model.pth",
        "checkpoint_sha256": checkpoint_sha256,
        "config": f"{folder}/{config_name}",
        "config_sha256": config_sha256,
    }


def _remove_artifacts(key: str) -> None:
    delete_stored(f"models/{key}")


def trained_model_delete_artifacts(model: TrainedModel) -> None:
    """Remove a model's stored files (after its row is gone or was never committed)."""
    if model.artifact_key:
        _remove_artifacts(model.artifact_key)


def _create_with_artifacts(
    *,
    checkpoint: Path,
    config: Path,
    config_name: str = "config.json",
    extra_files: dict | None = None,
    move: bool = False,
    **fields: Any,
) -> TrainedModel:
    key, files = _store_artifacts(
        checkpoint=checkpoint, config=config, config_name=config_name, extra_files=extra_files, move=move
    )
    try:
        with transaction.atomic():
            model = TrainedModel.objects.create(artifact_key=key, **files, **fields)
            grant(fields.get("created_by"), CREATOR_PERMS["trainedmodel"], model)
            audit_record(
                action="registered",
                obj=model,
                actor=fields.get("created_by"),
                checkpoint_sha256=files["checkpoint_sha256"],
                source_run=model.source_run_id,
            )
            return model
    except BaseException:
        _remove_artifacts(key)
        raise


def trained_model_register_from_run(
    *, run: Any, result: dict, history: list[dict], best: dict | None, gsd_m: float | None = None
) -> TrainedModel:
    """Register what a successful run produced: the slim best checkpoint, its config, class map and metrics.

    The caller (training) decides which epoch is registered and passes its entry of ``history`` as ``best``, and
    the ground resolution the network saw (``gsd_m``, metres per pixel; None: unknown)."""
    if best is None:
        raise ApplicationError("The run produced no validation metrics; nothing to register.")
    metrics: dict[str, Any] = {field: best.get(field) for field in METRIC_FIELDS}
    return _create_with_artifacts(
        checkpoint=Path(result["model_file"]),
        config=Path(result["config_file"]),
        move=True,  # the run's output folder goes with its scratch space: its files are moved, not copied
        name=run.name,
        origin=TrainedModel.Origin.TRAINED,
        source_run=run,
        base_model=run.base_model,
        dataset=run.dataset,
        architecture=run.architecture,
        class_names=list(result["classes"]),
        best_epoch=best["epoch"],
        metrics_history=history,
        parameter_count=result.get("parameter_count"),
        library_versions=result.get("versions") or {},
        training_duration=timedelta(seconds=float(result.get("duration_s") or 0)),
        gsd_m=gsd_m,
        created_by=run.created_by,
        **metrics,
    )


def trained_model_register_base(
    *,
    name: str,
    architecture: str,
    checkpoint: Path,
    class_names: list[str],
    inspection: dict,
    config: Path | None = None,
    description: str = "",
    created_by: Actor = None,
) -> TrainedModel:
    """Register an existing checkpoint as a model without a run (the start of a lineage).

    ``inspection`` is what ``engine.inspect`` reported after loading the file weights-only in a child
    process; the caller runs that (the Django process never unpickles a checkpoint).
    """

    require(created_by, "models_registry.add_trainedmodel", message="You may not register models.")
    if architecture not in PRESETS:
        raise ApplicationError(f"Unknown architecture {architecture!r}.", {"architecture": list(PRESETS)})
    names = validate_class_names(class_names)
    if not name or not name.strip():
        raise ApplicationError("A model needs a name.", {"name": "empty"})
    if inspection.get("num_classes") is not None and inspection["num_classes"] != len(names):
        raise ApplicationError(
            f"The checkpoint's head predicts {inspection['num_classes']} classes but {len(names)} class names "
            f"were given.",
            {"classes": len(names)},
        )
    # The stored config is always the preset's, for these classes, as inspected (a file the user hands in is kept
    # beside it as a document, never run).
    runnable = inspection.get("config")
    if not isinstance(runnable, dict) or "model" not in runnable:
        raise ApplicationError("The checkpoint inspection produced no config; inspect the file again.")
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8", delete=False) as written:
        written.write(dumps_config_json(set_classes(runnable, names)))
    tmp = Path(written.name)
    try:
        model = _create_with_artifacts(
            checkpoint=Path(checkpoint),
            config=tmp,
            name=name.strip()[:200],
            description=description,
            origin=TrainedModel.Origin.REGISTERED,
            architecture=architecture,
            class_names=names,
            parameter_count=inspection.get("parameter_count"),
            library_versions=inspection.get("versions") or {},
            created_by=created_by,
            extra_files={f"source_config{Path(config).suffix[:16]}": Path(config)} if config else None,
        )
    finally:
        tmp.unlink(missing_ok=True)
    return model


def trained_model_register_file(
    *,
    checkpoint: Path,
    name: str,
    architecture: str,
    classes: list[str] | None = None,
    description: str = "",
    config: Path | None = None,
    created_by: Actor = None,
) -> tuple[TrainedModel, dict]:
    """Inspect a checkpoint file (weights-only, in a child process) and register it as a base model.

    Class names: ``classes`` when given, else the ones stored in the file (MMDetection 3's ``dataset_meta`` or the
    2.x model zoo's ``CLASSES``), else COCO's for an 80-class head. Returns the model and the inspection report.
    """

    require(created_by, "models_registry.add_trainedmodel", message="You may not register models.")
    if architecture not in PRESETS:
        raise ApplicationError(f"Unknown architecture {architecture!r}.", {"architecture": list(PRESETS)})
    if not name or not str(name).strip():
        raise ApplicationError("A model needs a name.", {"name": "empty"})
    size = Path(checkpoint).stat().st_size
    if size > settings.DUMPSITE_MAX_CHECKPOINT_BYTES:
        raise ApplicationError(
            f"The checkpoint is {size:,} bytes; this site accepts at most {settings.DUMPSITE_MAX_CHECKPOINT_BYTES:,}.",
            {"checkpoint": "too large"},
        )
    with open(checkpoint, "rb") as fh:
        magic = fh.read(4)
    # torch.save writes a zip archive (the legacy format: a pickle); anything else is refused before a process
    # is started to look at it.
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        reason = "not a PyTorch checkpoint (neither a zip archive nor a pickle)"
        raise ApplicationError(f"Refused the checkpoint: {reason}", {"checkpoint": reason})
    try:
        report = inspect_checkpoint(
            str(Path(checkpoint).resolve()),
            architecture,
            timeout=settings.DUMPSITE_INSPECT_TIMEOUT,
            extra_env=tuple(settings.TRAINING_CHILD_ENV),
        )
    except ValueError as exc:
        raise ApplicationError(f"Refused the checkpoint: {exc}", {"checkpoint": str(exc)}) from None
    names = classes or report.get("classes")
    if not names:
        raise ApplicationError(
            f"The checkpoint stores no class names and its head predicts {report.get('num_classes')} classes; "
            f"give the names in label order.",
            {"classes": "required"},
        )
    model = trained_model_register_base(
        name=name,
        architecture=architecture,
        checkpoint=Path(checkpoint),
        config=config,
        class_names=list(names),
        inspection=report,
        description=description,
        created_by=created_by,
    )
    return model, report


@transaction.atomic
def trained_model_publish(*, model: TrainedModel, user: Actor = None) -> TrainedModel:
    require(user, "models_registry.publish_trainedmodel", model, message=f"You may not publish model #{model.pk}.")
    model = TrainedModel.objects.select_for_update().get(pk=model.pk)
    # A trained model is registered only when its run succeeds; its run may have been deleted since.
    run = model.source_run
    if model.origin == TrainedModel.Origin.TRAINED and run is not None and run.status != "succeeded":
        raise ApplicationError("Only models of succeeded runs (or registered base models) can be published.")
    if model.is_published:
        if (model.mlflow_registration or {}).get("error"):  # publishing again retries what MLflow refused
            mlflow_sync_enqueue(model.pk)
        return model
    model.is_published, model.published_at, model.published_by = True, timezone.now(), user
    model.save(update_fields=["is_published", "published_at", "published_by"])
    audit_record(action="published", obj=model, actor=user)
    publication_told(model, published=True, user=user)
    mlflow_sync_enqueue(model.pk)
    return model


@transaction.atomic
def trained_model_unpublish(*, model: TrainedModel, user: Actor = None) -> TrainedModel:
    require(user, "models_registry.publish_trainedmodel", model, message=f"You may not unpublish model #{model.pk}.")
    model = TrainedModel.objects.select_for_update().get(pk=model.pk)
    if model.is_published:
        model.is_published, model.published_at, model.published_by = False, None, None
        model.save(update_fields=["is_published", "published_at", "published_by"])
        audit_record(action="unpublished", obj=model, actor=user)
        publication_told(model, published=False, user=user)
        mlflow_sync_enqueue(model.pk)
    return model


@transaction.atomic
def trained_model_update(
    *, model: TrainedModel, name: str | None = None, description: str | None = None, user: Actor = None
) -> TrainedModel:
    require(user, "models_registry.change_trainedmodel", model, message=f"You may not change model #{model.pk}.")
    fields = []
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ApplicationError("A model needs a name.", {"name": "empty"})
        if len(name) > 200:
            raise ApplicationError("The name is too long.", {"name": "at most 200 characters"})
        model.name = name.strip()
        fields.append("name")
    if description is not None:
        if not isinstance(description, str):
            raise ApplicationError("The description must be text.", {"description": "not text"})
        model.description = description
        fields.append("description")
    if fields:
        model.save(update_fields=fields)
    return model


def trained_model_delete(*, model: TrainedModel, user: Actor = None) -> None:
    """Delete a model and, once the deletion is committed, its files. Published models and models others build
    on are kept: unpublish first; a lineage is never cut."""
    require(user, "models_registry.delete_trainedmodel", model, message=f"You may not delete model #{model.pk}.")
    with transaction.atomic():
        model = TrainedModel.objects.select_for_update().get(pk=model.pk)
        if model.is_published:
            raise ApplicationError("A published model cannot be deleted; unpublish it first.", {"is_published": True})
        derived = list(model.derived_models.values_list("pk", flat=True)[:5])
        runs = list(model.fine_tuning_runs.values_list("pk", flat=True)[:5])
        if derived or runs:
            raise ApplicationError(
                "This model is the base of other models or runs and cannot be deleted.",
                {"derived_models": derived, "fine_tuning_runs": runs},
            )
        used = list(model.evaluation_runs.values_list("pk", flat=True)[:5])
        if used:
            raise ApplicationError(
                f"Evaluation or detection runs used this model (#{', #'.join(map(str, used))}); their results name "
                "it. Delete those runs first.",
                {"runs": used},
            )
        key = model.artifact_key
        audit_record(action="deleted", obj=model, actor=user)
        model.delete()
        transaction.on_commit(lambda: _remove_artifacts(key))
