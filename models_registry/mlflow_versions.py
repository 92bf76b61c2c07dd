"""A published model as a version of an MLflow registered model ("<DUMPSITE_MLFLOW_MODEL_PREFIX><model name>"),
pointing at the platform's model: its source is the model's bundle on the API, its tags the platform's ids, links
and checksum, and its run the MLflow run that trained it (where the run tracked to MLflow). Written by a worker
task after the publication commits; an unpublished model's version is tagged ``dumpsite.published=false``. What
happened (the version, or why it failed) is recorded on the model."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.mlflow_client import mlflow_client, mlflow_enabled

from .models import TrainedModel

logger = logging.getLogger("models_registry.mlflow")
TASK = "models_registry.tasks.sync_to_mlflow"


def mlflow_sync_enqueue(model_id: int) -> None:
    """After the transaction that published or unpublished the model commits, when the site tracks to MLflow."""
    if not mlflow_enabled():
        return

    def send() -> None:
        # django-q2's task module loads its cluster machinery: only when sending
        from django_q.tasks import async_task

        async_task(TASK, model_id, task_name=f"mlflow-model-{model_id}", group="mlflow")

    transaction.on_commit(send)


def registered_name(model: TrainedModel) -> str:
    """MLflow refuses "/" and ":" in a registered model's name: they become "-"."""
    name = f"{settings.DUMPSITE_MLFLOW_MODEL_PREFIX}{model.name}"[:256]
    return name.replace("/", "-").replace(":", "-")


def version_fields(model: TrainedModel) -> dict:
    public = settings.DUMPSITE_PUBLIC_URL.rstrip("/")
    run = model.source_run
    mlflow_run = run.mlflow_tracking if run is not None else {}
    return {
        "source": f"{public}/api/trained-models/{model.pk}/download/?artifact=bundle",
        "run_id": mlflow_run.get("run_id") or None,
        "description": model.description or f"{model.architecture} model #{model.pk} of the dump-site platform",
        "tags": {
            "dumpsite.model_id": str(model.pk),
            "dumpsite.model_url": f"{public}/api/trained-models/{model.pk}/",
            "dumpsite.admin_url": f"{public}/admin/models_registry/trainedmodel/{model.pk}/change/",
            "dumpsite.architecture": model.architecture,
            "dumpsite.checkpoint_sha256": model.checkpoint_sha256,
            "dumpsite.bbox_mAP_50": "" if model.bbox_mAP_50 is None else f"{model.bbox_mAP_50:.4f}",
            **({"dumpsite.base_model_id": str(model.base_model_id)} if model.base_model_id else {}),
        },
    }


def mlflow_model_sync(*, model_id: int) -> dict:
    """Bring MLflow in line with the model's publication; returns what is recorded on the model."""
    with transaction.atomic():  # one sync of a model at a time: a quick publish and unpublish apply in order
        model = (
            TrainedModel.objects.select_for_update(of=("self",))
            .select_related("source_run")
            .filter(pk=model_id)
            .first()
        )
        if model is None:
            return {}
        registration = dict(model.mlflow_registration or {})
        try:
            client = mlflow_client()
            if model.is_published and not registration.get("version"):
                name = registered_name(model)
                try:
                    client.get_registered_model(name)
                except Exception as exc:  # noqa: BLE001 - mlflow's MlflowException, told apart by its code
                    if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                        raise
                    client.create_registered_model(name, description="Dump-site detectors of the platform")
                version = client.create_model_version(name=name, **version_fields(model))
                registration = {"name": name, "version": str(version.version), "at": timezone.now().isoformat()}
            if registration.get("version"):
                published = "true" if model.is_published else "false"
                client.set_model_version_tag(
                    registration["name"], registration["version"], "dumpsite.published", published
                )
            registration["error"] = ""
        except Exception as exc:  # noqa: BLE001 - recorded on the model (an unreachable server, a refusal)
            logger.warning("model %s: MLflow did not take it: %s", model_id, exc)
            text = str(exc).strip().splitlines()
            registration["error"] = f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
        TrainedModel.objects.filter(pk=model_id).update(mlflow_registration=registration)
        return registration
