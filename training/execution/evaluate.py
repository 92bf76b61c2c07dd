"""The life of a claimed evaluation run inside a django-q2 worker: the document to evaluate on, the child (the
training child's process, supervision, cancel and time limit), and the results stored with the model."""

from __future__ import annotations

import json
from pathlib import Path

from django.db import transaction

from core.errors import ApplicationError
from datasets.coco_export import build_coco, merge_documents, remap_classes
from engine.evaluate import EvaluationJob
from engine.supervisor import tail_text
from models_registry.evaluations import evaluation_store
from models_registry.models import Evaluation, TrainedModel

from ..models import TrainingManifest, TrainingRun
from ..services import training_run_progress, training_run_record, training_run_succeed
from .common import crashed, end_unless_trained, fail, localized_document, stored_pictures, supervise, sync_of
from .scratch import cleanup_work_dir, prepare_work_dir

Status = TrainingRun.Status


def evaluated_model(run: TrainingRun) -> TrainedModel:
    """The model an evaluation run evaluates (kept while the run exists: the foreign key protects it)."""
    if run.evaluated_model is None:
        raise ApplicationError(f"Run #{run.pk} names no model to evaluate.")
    return run.evaluated_model


def evaluation_document(run: TrainingRun) -> tuple[dict, str, dict]:
    """The COCO document the model is evaluated on (categories in the model's class order), a label of the split
    and what it was made of."""
    params = run.parameters
    model = evaluated_model(run)
    split = params.get("evaluate", "all")
    if split == "model":
        manifest = TrainingManifest.objects.get(run_id=model.source_run_id)
        doc, gone = stored_pictures(manifest.validation_coco)
        details = {
            "source": f"manifest of run #{manifest.run_id}",
            "val_hash": manifest.val_hash,
            "images_gone": gone,
            **(manifest.split or {}),
        }
        label = f"its own validation split (run #{manifest.run_id})"
    else:
        train, val = build_coco(
            run.dataset,
            val_fraction=params["val_fraction"],
            seed=params["seed"],
            strategy=params.get("split", "random") if split == "validation" else "random",
            cell_size_m=params.get("split_cell_m", 250.0),
        )
        doc = val if split == "validation" else merge_documents(train, val)
        details = dict(val["info"].get("split") or {}) if split == "validation" else {"strategy": "all"}
        label = f"validation split ({details.get('strategy')})" if split == "validation" else "all images"
    doc, dropped = remap_classes(doc, list(model.class_names))
    if not doc["images"]:
        raise ApplicationError("There is no image to evaluate on (the split is empty).")
    details["boxes_of_other_classes"] = dropped
    return doc, label, details


def execute(run: TrainingRun) -> str:
    """The whole life of a running evaluation run; returns its final status."""
    log_file = run.work_dir / "train.log"
    try:
        work = prepare_work_dir(run)
        doc, label, details = evaluation_document(run)
        model = evaluated_model(run)
        local, gt_file = localized_document(model, doc, work)
        training_run_record(
            run_id=run.pk,
            export_summary={
                "split": details,
                "val_images": len(doc["images"]),
                "val_annotations": len(doc["annotations"]),
            },
        )
        job = EvaluationJob(
            config_file=local.path(model.config.name),
            checkpoint=local.path(model.checkpoint.name),
            classes=list(model.class_names),
            gt_file=str(gt_file),
            image_root=str(local.root),
            work_dir=str(work / "mmengine"),
            events_file=str(work / "events.jsonl"),
            result_file=str(work / "evaluation.json"),
            score_threshold=run.parameters["score_threshold"],
            iou_threshold=run.parameters["iou_threshold"],
            batch_size=run.parameters.get("batch_size", 1),
        )
        job.write(work / "job.json")
        result = supervise(run, work / "job.json")
        training_run_progress(run_id=run.pk, state=result.state)
        ended = end_unless_trained(run, result)
        if ended is not None:
            return ended
        sync_of(run).push_files()  # the log and events stored before the run is seen succeeded
        store_and_succeed(run, job=job, label=label, details=details, doc=doc, log_tail=result.log_tail)
        return Status.SUCCEEDED
    except ApplicationError as exc:
        return fail(run, message=str(exc), log_tail=tail_text(log_file))
    except Exception:  # noqa: BLE001 - a run must never stay 'running' after its worker gave up
        return crashed(run)


def store_and_succeed(run: TrainingRun, *, job, label: str, details: dict, doc: dict, log_tail: str) -> None:
    result = json.loads(Path(job.result_file).read_text(encoding="utf-8"))
    with transaction.atomic():
        evaluation_store(
            model=evaluated_model(run),
            run=run,
            dataset=run.dataset,
            kind=Evaluation.Kind.EVALUATION,
            split=label,
            split_details=details,
            result=result,
            gt_doc=doc,
        )
        if not training_run_succeed(
            run_id=run.pk, log_tail=log_tail, stop_reason=f"Evaluated {len(doc['images'])} images."
        ):
            raise ApplicationError("The run stopped being 'running' before its results could be stored.")
    cleanup_work_dir(run)
