"""The predict check of a model: run it on images and see the boxes. Queued from the API and the admin (a worker
runs it), or run at once by ``manage.py predict``; the detection itself always runs in a child process
(``engine.predict``), never in a Django process.
"""

from __future__ import annotations

import functools
import logging
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from access.rules import require
from core.errors import ApplicationError
from core.host_cache import host_scratch, local_files
from core.quotas import queue_share_check
from core.redact import redact_paths
from core.storage import delete_stored, local_path, storage_errors, store_file
from datasets.images import clean_original_name, decode_image
from engine.predict import PredictionError, run_prediction
from engine.supervisor import child_environment
from engine.warm import WarmPredictor

from .card import stored_config
from .engines import ENGINES, onnx_refusal
from .models import Prediction, TrainedModel
from .selectors import models_visible_to

logger = logging.getLogger(__name__)
Status = Prediction.Status
TASK = "models_registry.tasks.execute_prediction"


def _check_threshold(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ApplicationError("Invalid score threshold.", {"score_threshold": "a number from 0 to 1"})
    return float(value)


def _check_model(model: TrainedModel, user) -> None:
    require(user, "models_registry.predict_trainedmodel", message="You may not run models on images.")
    if user is not None and not models_visible_to(user).filter(pk=model.pk).exists():
        raise ApplicationError("No such model.", {"model": "no such model"})
    config = stored_config(model)
    if not isinstance(config, dict) or "model" not in config:
        raise ApplicationError(
            "This model was registered without a runnable config; register its checkpoint again.",
            {"model": "no runnable config"},
        )


def _check_engine(model: TrainedModel, engine: str) -> str:
    if engine not in ENGINES:
        raise ApplicationError("Invalid engine.", {"engine": f"one of {', '.join(ENGINES)}"})
    if engine == "onnxruntime" and (refusal := onnx_refusal(model)):
        raise ApplicationError(f"This model cannot run on ONNX Runtime: {refusal}.", {"engine": refusal})
    return engine


def _job(model: TrainedModel, images: list[dict], out: Path, threshold: float, engine: str = "pytorch") -> dict:
    onnx = engine == "onnxruntime"
    files = [(model.config.name, model.config_sha256), (model.checkpoint.name, model.checkpoint_sha256)]
    # The model's files where this process reads them: in place, or this host's cached copies of a bucket's.
    local = local_files(files + ([(model.onnx.name, model.onnx_sha256)] if onnx else []))
    return {
        "config": local.path(model.config.name),
        "checkpoint": local.path(model.checkpoint.name),
        **({"onnx": local.path(model.onnx.name)} if onnx else {}),
        # what makes a warm child's loaded model this one: the model and its files' content
        "model_key": f"{model.pk}:{model.checkpoint_sha256}:{model.onnx_sha256 if onnx else ''}",
        "images": images,
        "score_threshold": threshold,
        "out": str(out),
    }


@functools.cache
def warm_predictor() -> WarmPredictor:
    """This worker process's warm child (started on its first check)."""
    return WarmPredictor(
        env=_environment(), max_models=settings.DUMPSITE_WARM_MODELS, max_rss_mb=settings.DUMPSITE_WARM_MEMORY_MB
    )


def run_check(job: dict, job_file: Path) -> dict:
    """A predict check in a worker: in its warm child where the site keeps models warm, else in a child of its own."""
    if settings.DUMPSITE_WARM_MODELS > 0:
        return warm_predictor().run(job, timeout=settings.DUMPSITE_PREDICT_TIMEOUT)
    return run_prediction(job, job_file, timeout=settings.DUMPSITE_PREDICT_TIMEOUT, env=_environment())


def _environment() -> dict:
    return child_environment(tuple(settings.TRAINING_CHILD_ENV))


def predict_files(
    *,
    model: TrainedModel,
    paths: list[Path],
    score_threshold: float = 0.3,
    preview_dir: Path | None = None,
    engine: str = "pytorch",
    user,
) -> dict:
    """Run ``model`` on image files now (the command line's batch path) and return the result. Every file is
    checked to be an image before the model is loaded."""

    _check_model(model, user)
    threshold = _check_threshold(score_threshold)
    engine = _check_engine(model, engine)
    images = []
    for index, path in enumerate(paths):
        try:
            decode_image(Path(path).read_bytes())
        except OSError as exc:
            raise ApplicationError(f"{path}: cannot read it ({exc.strerror or exc}).") from None
        except ApplicationError as exc:
            raise ApplicationError(f"{Path(path).name}: {exc.message}") from None
        item = {"path": str(Path(path).resolve()), "name": Path(path).name}
        if preview_dir is not None:
            item["preview"] = str(Path(preview_dir).resolve() / f"{index:04d}-{Path(path).stem}.jpg")
        images.append(item)
    if preview_dir is not None:
        Path(preview_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="predict-", dir=_scratch_root()) as tmp:
        try:
            return run_prediction(
                _job(model, images, Path(tmp) / "out.json", threshold, engine),
                Path(tmp) / "job.json",
                timeout=settings.DUMPSITE_PREDICT_TIMEOUT,
                env=_environment(),
            )
        except PredictionError as exc:
            raise ApplicationError(f"The model could not run: {redact_paths(str(exc))}") from None


def _scratch_root() -> Path:
    root = host_scratch("predictions")
    root.mkdir(parents=True, exist_ok=True)
    return root


def prediction_create(
    *,
    model: TrainedModel,
    content: bytes,
    original_name: str = "",
    score_threshold=0.3,
    engine: str = "pytorch",
    user,
) -> Prediction:
    """Check the image and queue a prediction of ``model`` on it for a worker. Nothing is stored or queued when
    the image, the threshold, the engine, the model or the user's permission is refused."""
    _check_model(model, user)
    threshold = _check_threshold(score_threshold)
    engine = _check_engine(model, engine)
    decoded = decode_image(content)
    key = secrets.token_hex(8)
    with transaction.atomic():
        queue_share_check(user)
        prediction = Prediction(
            model=model,
            key=key,
            original_name=clean_original_name(original_name),
            score_threshold=threshold,
            engine=engine,
            created_by=user,
        )
        prediction.image.save(f"input.{decoded.extension}", ContentFile(content), save=False)
        try:
            prediction.save()
        except BaseException:
            _remove_files(key)
            raise
        transaction.on_commit(lambda: _enqueue(prediction.pk))
    return prediction


def _enqueue(prediction_id: int) -> None:
    # django-q2 sets up its cluster configuration on import: only where it is used
    from django_q.tasks import async_task

    async_task(TASK, prediction_id, task_name=f"prediction-{prediction_id}", group="predictions")


def _remove_files(key: str) -> None:
    try:
        delete_stored(f"predictions/{key}")
    except storage_errors():
        logger.exception("prediction %s: its files were not removed from the storage", key)


def prediction_execute(*, prediction_id: int) -> str:
    """The worker's part: queued -> running (one winner), run the child, store the boxes and the preview."""

    claimed = Prediction.objects.filter(pk=prediction_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return Prediction.objects.filter(pk=prediction_id).values_list("status", flat=True).first() or "missing"
    prediction = Prediction.objects.select_related("model").get(pk=prediction_id)
    preview = f"predictions/{prediction.key}/preview.jpg"
    try:
        with tempfile.TemporaryDirectory(prefix="predict-", dir=_scratch_root()) as tmp:
            image = local_path(prediction.image.name, Path(tmp))
            images = [{"path": str(image), "name": prediction.original_name, "preview": f"{tmp}/preview.jpg"}]
            job = _job(prediction.model, images, Path(tmp) / "out.json", prediction.score_threshold, prediction.engine)
            result = run_check(job, Path(tmp) / "job.json")
            store_file(Path(tmp) / "preview.jpg", preview, move=True)
    except PredictionError as exc:
        message = f"The model could not run: {redact_paths(str(exc))}"
    except Exception:  # noqa: BLE001 - a prediction never stays 'running'
        reference = secrets.token_hex(4)
        logger.exception("prediction %s crashed (reference %s)", prediction_id, reference)
        message = f"Internal error in the worker (reference {reference}); the server log has the details."
    else:
        Prediction.objects.filter(pk=prediction_id, status=Status.RUNNING).update(
            status=Status.SUCCEEDED,
            result=result["images"][0]
            | {k: result[k] for k in ("classes", "device", "engine", "warm", "load_seconds") if k in result},
            preview=preview,
            finished_at=timezone.now(),
        )
        return Status.SUCCEEDED
    Prediction.objects.filter(pk=prediction_id, status=Status.RUNNING).update(
        status=Status.FAILED, error_message=message[:2000], finished_at=timezone.now()
    )
    return Status.FAILED


def predictions_expire(now=None) -> dict:
    """Remove the predict checks older than ``DUMPSITE_PREDICTION_RETENTION_DAYS`` (finished ones, and queued ones
    no worker ever took), with their uploaded image and preview. Rows a worker holds are skipped. Returns how many
    were removed."""
    now = now or timezone.now()
    limit = now - timedelta(days=settings.DUMPSITE_PREDICTION_RETENTION_DAYS)
    with transaction.atomic():
        old = Prediction.objects.filter(created_at__lt=limit).exclude(status=Status.RUNNING)
        expired = dict(old.select_for_update(skip_locked=True).values_list("pk", "key"))
        Prediction.objects.filter(pk__in=expired).delete()
    for key in expired.values():
        _remove_files(key)
    return {"removed": len(expired)}
