"""The life of a claimed ONNX export inside a django-q2 worker: the model's validation split where the child reads
it, the child (export, then the parity gate; the training child's process, supervision, cancel and time limit),
then the file stored with the model if it passed, and the gate's report kept with the model either way."""

from __future__ import annotations

import json
from pathlib import Path

from django.db import transaction

from core.errors import ApplicationError
from core.storage import delete_file, store_file
from datasets.coco_export import remap_classes
from engine.onnx_export import OnnxExportJob
from engine.supervisor import tail_text
from models_registry.models import TrainedModel

from ..models import TrainingRun
from ..services import training_run_fail, training_run_progress, training_run_record, training_run_succeed
from ..services.export_runs import export_manifest
from .common import crashed, end_unless_trained, fail, localized_document, stored_pictures, supervise, sync_of
from .scratch import cleanup_work_dir, prepare_work_dir

Status = TrainingRun.Status


def exported_model(run: TrainingRun) -> TrainedModel:
    if run.evaluated_model is None:
        raise ApplicationError(f"Run #{run.pk} names no model to export.")
    return run.evaluated_model


def export_job(run: TrainingRun, work: Path) -> OnnxExportJob:
    model = exported_model(run)
    doc, gone = stored_pictures(export_manifest(model).validation_coco)
    if not doc["images"]:
        raise ApplicationError("The pictures of the model's validation split are gone: nothing to check the export on.")
    doc, _ = remap_classes(doc, list(model.class_names))
    local, gt_file = localized_document(model, doc, work)
    training_run_record(run_id=run.pk, export_summary={"val_images": len(doc["images"]), "images_gone": gone})
    return OnnxExportJob(
        config_file=local.path(model.config.name),
        checkpoint=local.path(model.checkpoint.name),
        classes=list(model.class_names),
        gt_file=str(gt_file),
        image_root=str(local.root),
        out_file=str(work / "model.onnx"),
        events_file=str(work / "events.jsonl"),
        result_file=str(work / "report.json"),
    )


def execute(run: TrainingRun) -> str:
    """The whole life of a running export; returns its final status."""
    log_file = run.work_dir / "train.log"
    try:
        work = prepare_work_dir(run)
        job = export_job(run, work)
        job.write(work / "job.json")
        result = supervise(run, work / "job.json")
        training_run_progress(run_id=run.pk, state=result.state)
        ended = end_unless_trained(run, result)
        if ended is not None:
            return ended
        sync_of(run).push_files()  # the log and events stored before the run is seen finished
        return store_and_finish(run, job=job, log_tail=result.log_tail)
    except ApplicationError as exc:
        return fail(run, message=str(exc), log_tail=tail_text(log_file))
    except Exception:  # noqa: BLE001 - a run must never stay 'running' after its worker gave up
        return crashed(run)


def gate_summary(report: dict) -> str:
    maps, matched = report["map50"], report["matched"]
    return (
        f"mAP50 {maps['pytorch']} (PyTorch) / {maps['onnxruntime']} (ONNX Runtime), "
        f"{matched['count']} of {matched['total']} detections matched, {report.get('speedup')}x the speed"
    )


def store_and_finish(run: TrainingRun, *, job: OnnxExportJob, log_tail: str) -> str:
    """Keep the report with the model; a passing export's file too (replacing the model's earlier one), and the run
    succeeds; a failing one ends the run failed with where the two differ, and the model keeps no ONNX file: the
    one it had was made from another attempt the report no longer speaks for."""
    report = json.loads(Path(job.result_file).read_text(encoding="utf-8"))
    model = exported_model(run)
    report = {**report, "run": run.pk}
    stored, digest, earlier = "", "", model.onnx.name
    if report["passed"]:
        stored = f"models/{model.artifact_key}/model.onnx"
        digest = store_file(job.out_file, stored, move=True)  # in place of an earlier export's
    with transaction.atomic():
        fields = {"onnx_report": report, "onnx": stored, "onnx_sha256": digest}
        TrainedModel.objects.filter(pk=model.pk).update(**fields)
        summary = TrainingRun.objects.values_list("export_summary", flat=True).get(pk=run.pk) or {}
        training_run_record(run_id=run.pk, export_summary={**summary, "gate": report})
        if report["passed"]:
            reason = f"Passed: {gate_summary(report)}."
            if not training_run_succeed(run_id=run.pk, log_tail=log_tail, stop_reason=reason):
                raise ApplicationError("The run stopped being 'running' before its export could be kept.")
        else:
            why = "; ".join(report["failures"])
            training_run_fail(
                run_id=run.pk,
                message=f"The ONNX export failed the parity gate and was not kept: {why}. {gate_summary(report)}.",
                log_tail=log_tail,
            )
    if earlier and not stored:
        transaction.on_commit(lambda: delete_file(earlier))
    cleanup_work_dir(run)
    return Status.SUCCEEDED if report["passed"] else Status.FAILED
