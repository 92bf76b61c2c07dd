"""The life of a claimed training run inside a django-q2 worker, as a sequence of named steps: the dataset exported,
the child's job written, the child watched, the model registered. Every write goes through ``training.services``."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.db import transaction

from core.db import Outage, when_database_is_back
from core.errors import ApplicationError
from core.host_cache import local_files
from core.storage import delete_stored, fetch_to
from datasets.coco_export import CocoExport, export_coco
from datasets.splits import DEFAULT_CELL_M
from engine.config import build_overrides, checkpoint_epoch
from engine.events import metrics_history, registered_epoch
from engine.job import TrainingJob
from engine.pipelines import trained_gsd
from engine.presets import get_preset
from engine.supervisor import ChildResult, tail_text
from models_registry.evaluations import evaluation_store
from models_registry.models import Evaluation
from models_registry.services import trained_model_delete_artifacts, trained_model_register_from_run

from ..models import TrainingRun
from ..run_files import TENSORBOARD, checkpoint_folder, stored_events
from ..services import (
    nodes_of,
    training_run_progress,
    training_run_record,
    training_run_record_manifest,
    training_run_succeed,
)
from .common import crashed, end_unless_trained, fail, supervise, sync_of
from .nodes import leader_rendezvous, problem_of, waited_problem
from .scratch import cleanup_work_dir, prepare_work_dir
from .timings import PhaseTimer

Status = TrainingRun.Status


def execute(run: TrainingRun) -> str:
    """The whole life of a running training run (claimed by this worker); returns its final status."""
    run_id = run.pk
    log_file = run.work_dir / "train.log"
    timings = PhaseTimer(run)
    try:
        export = export_dataset(run)
        timings.lap("export")
        job_file = write_job(run, export)
        timings.lap("config")
        result = train(run, job_file)
        events = result.events  # kept as the supervisor read them while the child ran
        timings.child_exited(events)
        Outage(f"run {run_id}'s progress").call(lambda: training_run_progress(run_id=run_id, state=result.state), 0)
        ended = end_unless_trained(run, result)
        if ended is not None:
            return ended
        outcome = json.loads((run.work_dir / "result.json").read_text(encoding="utf-8"))
        history = metrics_history_of(run, events)
        sync_of(run).push_files()  # the log, events and result stored before the run is seen succeeded
        # One transaction that removes its stored artifacts if it rolls back: repeated once the database is back.
        when_database_is_back(
            lambda: register_and_succeed(run, export, outcome=outcome, history=history, log_tail=result.log_tail),
            within=settings.TRAINING_HEARTBEAT_LIMIT,
            what=f"run {run_id}'s registration",
        )
        timings.lap("registration")
        return Status.SUCCEEDED
    except ApplicationError as exc:
        return fail(run, message=str(exc), log_tail=tail_text(log_file))
    except Exception:  # noqa: BLE001 - a run must never stay 'running' after its worker gave up
        return crashed(run)
    finally:
        timings.save()


def export_dataset(run: TrainingRun, *, record: bool = True) -> CocoExport:
    """Step 1: a fresh work dir, and the dataset exported to COCO in it, split by the run's strategy; what went to
    each side is recorded as the run's manifest (by node 0 only, in a run across hosts)."""
    work = prepare_work_dir(run)
    params = run.parameters
    export = export_coco(
        run.dataset,
        work / "data",
        val_fraction=params["val_fraction"],
        seed=params["seed"],
        strategy=params.get("split", "random"),
        cell_size_m=params.get("split_cell_m", DEFAULT_CELL_M),
    )
    if record:
        training_run_record(run_id=run.pk, export_summary=export.as_dict())
        training_run_record_manifest(run_id=run.pk, manifest=export.manifest, validation=export.validation)
    return export


def write_job(run: TrainingRun, export: CocoExport) -> Path:
    """Step 2: the child's job file: the preset's base config and the run's overrides, as data."""
    work = run.work_dir
    preset = get_preset(run.architecture)
    job = TrainingJob(
        base_config=preset.base_config,
        overrides=build_overrides(
            preset=preset,
            params=run.parameters,
            classes=export.classes,
            train_ann_file=str(export.train_file),
            val_ann_file=str(export.val_file),
            image_root=str(export.image_root),
            work_dir=str(work / "mmengine"),
            load_from=base_checkpoint(run),
            resume_from=resume_checkpoint(run),
        ),
        classes=export.classes,
        work_dir=str(work / "mmengine"),
        events_file=str(work / "events.jsonl"),
        result_file=str(work / "result.json"),
        output_dir=str(work / "output"),
        transfer=transfer_of(run),
        amp=bool(run.parameters.get("amp")),
        device=run.parameters.get("device", "cpu"),
        evaluation=thresholds_of(run),
        tracking=tracking_of(run, export),
    )
    job.write(work / "job.json")
    return work / "job.json"


def tracking_of(run: TrainingRun, export: CocoExport) -> dict | None:
    """Where the child records the run besides its own files: TensorBoard event files in the scratch folder (stored
    with the run), and an MLflow run where the site names a tracking URI, tagged with the platform's ids and links."""
    mlflow = None
    if settings.DUMPSITE_MLFLOW_TRACKING_URI:
        public = settings.DUMPSITE_PUBLIC_URL.rstrip("/")
        mlflow = {
            "tracking_uri": settings.DUMPSITE_MLFLOW_TRACKING_URI,
            "experiment": settings.DUMPSITE_MLFLOW_EXPERIMENT,
            "artifact_location": settings.DUMPSITE_MLFLOW_ARTIFACT_LOCATION,
            "run_name": f"run-{run.pk} {run.name}"[:250],
            "tags": {
                "dumpsite.run_id": str(run.pk),
                "dumpsite.run_url": f"{public}/api/training-runs/{run.pk}/",
                "dumpsite.admin_url": f"{public}/admin/training/trainingrun/{run.pk}/change/",
                "dumpsite.dataset_id": str(run.dataset_id),
                "dumpsite.architecture": run.architecture,
                "dumpsite.classes": json.dumps(export.classes, ensure_ascii=False)[:5000],
                **({"dumpsite.base_model_id": str(run.base_model_id)} if run.base_model_id else {}),
                **({"dumpsite.resumes_run_id": str(run.retry_of_id)} if run.resume_checkpoint else {}),
            },
            "params": {
                "architecture": run.architecture,
                "dataset_id": run.dataset_id,
                "classes": len(export.classes),
                "train_images": export.train_images,
                "val_images": export.val_images,
                "train_boxes": export.train_annotations,
                "val_boxes": export.val_annotations,
                **{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in run.parameters.items()},
            },
        }
    tensorboard = str(run.work_dir / TENSORBOARD) if settings.DUMPSITE_TENSORBOARD else None
    return {"tensorboard_dir": tensorboard, "mlflow": mlflow} if tensorboard or mlflow else None


def base_checkpoint(run: TrainingRun) -> str | None:
    """The local path of the base model's checkpoint (this host's cached copy where the files are in a bucket)."""
    model = run.base_model
    if model is None:
        return None
    return local_files([(model.checkpoint.name, model.checkpoint_sha256)]).path(model.checkpoint.name)


def resume_checkpoint(run: TrainingRun) -> str | None:
    """The stored checkpoint a resumed attempt continues from, fetched into its scratch folder: the attempt it
    resumes may have run on another host."""
    if not run.resume_checkpoint:
        return None
    target = run.work_dir / "resume" / Path(run.resume_checkpoint).name
    try:
        return str(fetch_to(run.resume_checkpoint, target))
    except FileNotFoundError:
        raise ApplicationError(
            f"The checkpoint this run resumes from is no longer stored ({Path(run.resume_checkpoint).name}); "
            "retry the run instead."
        ) from None


def thresholds_of(run: TrainingRun) -> dict:
    return {
        "score_threshold": run.parameters.get("score_threshold", 0.3),
        "iou_threshold": run.parameters.get("iou_threshold", 0.5),
    }


def transfer_of(run: TrainingRun) -> dict | None:
    """How the child loads the base model (None: no base model, or a resumed attempt: its checkpoint is its own)."""
    if run.base_model is None or run.resume_checkpoint:
        return None
    return {
        "mode": run.weight_transfer.get("mode"),
        "reason": run.weight_transfer.get("reason", ""),
        "class_dependent": list(get_preset(run.architecture).class_dependent),
    }


def stop_reason_of(outcome: dict) -> str:
    trained, planned = outcome.get("epochs_trained"), outcome.get("max_epochs")
    if outcome.get("stopped_early"):
        return (
            f"Stopped early after epoch {trained} of {planned}: the validation mAP did not improve for "
            f"{outcome.get('patience', '?')} epochs (early stopping)."
        )
    return f"Trained all {planned} epochs." if planned else ""


def train(run: TrainingRun, job_file: Path) -> ChildResult:
    """Step 3: the training child, watched until it exits, is cancelled or runs out of time. Node 0 of a run across
    hosts starts the rendezvous and watches the other hosts; a failure there explains its own."""
    processes = int(run.parameters.get("processes") or 1)
    if nodes_of(run) == 1:
        return supervise(run, job_file, processes=processes)
    result = supervise(
        run, job_file, processes=processes, rendezvous=leader_rendezvous(run), watch=lambda: problem_of(run, 0)
    )
    if result.returncode != 0 and not (result.stopped or result.timed_out):
        result.error = waited_problem(run, 0) or result.error
    return result


def metrics_history_of(run: TrainingRun, events: list[dict]) -> list[dict]:
    """Step 5: per-epoch metrics. A resumed attempt continues the earlier one: that one's epochs up to the
    checkpoint it resumed from come first."""

    if run.resume_checkpoint and run.retry_of is not None:
        upto = checkpoint_epoch(run.resume_checkpoint)
        events = [e for e in stored_events(run.retry_of.pk) if (e.get("epoch") or 0) <= upto] + events
    return metrics_history(events)


def end_files(run: TrainingRun) -> None:
    """Once a success has committed: no scratch folder, and no stored epoch checkpoint (only a failed or cancelled
    run is resumed; the model is in the registry)."""
    cleanup_work_dir(run)
    delete_stored(checkpoint_folder(run.pk))


def register_and_succeed(
    run: TrainingRun, export: CocoExport, *, outcome: dict, history: list[dict], log_tail: str
) -> None:
    """Step 6: register the model and mark the run succeeded in one transaction; stored artifacts go if it rolls
    back, and the scratch space only once it has committed. Which epoch is registered is training's decision; the
    registry stores what it is given. The run's stored epoch checkpoint goes with the scratch space."""

    model = None
    try:
        with transaction.atomic():
            best = registered_epoch(history, outcome.get("checkpoint_epoch"))
            model = trained_model_register_from_run(
                run=run,
                result=outcome,
                history=history,
                best=best,
                gsd_m=trained_gsd(run.parameters, export.ground_resolution),
            )
            if outcome.get("evaluation_file"):
                split = export.validation["info"].get("split") or {}
                evaluation_store(
                    result=json.loads(Path(outcome["evaluation_file"]).read_text(encoding="utf-8")),
                    gt_doc=export.validation,
                    model=model,
                    run=run,
                    dataset=run.dataset,
                    kind=Evaluation.Kind.VALIDATION,
                    split=f"validation split ({split.get('strategy', 'random')})",
                    split_details=split,
                )
            if not training_run_succeed(run_id=run.pk, log_tail=log_tail, stop_reason=stop_reason_of(outcome)):
                raise ApplicationError("The run stopped being 'running' before its model could be registered.")
            transaction.on_commit(lambda: end_files(run))
    except BaseException:
        if model is not None:
            trained_model_delete_artifacts(model)
        raise
