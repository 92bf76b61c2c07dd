"""What a model is, written for the people who take it to production: the model card (JSON and Markdown), the
Python config stock MMDetection reads, and the bundle (one zip with all of them and the checkpoint).

No torch: the config is converted as data (``engine.config.dumps_config_py``), the checkpoint is copied.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from core.errors import ApplicationError
from core.storage import open_stored, store_file
from engine.config import dumps_config_py, restore_tuples
from engine.pipelines import stock_config

from .models import METRIC_FIELDS, TrainedModel
from .selectors import model_lineage, visible_related_ids

CARD_VERSION = 1
CHECKPOINT_CHUNK = 1 * 2**20


def stored_config(model: TrainedModel) -> dict:
    """The stored JSON config of a model (tuples restored)."""
    try:
        with model.config.open("rb") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ApplicationError("The config file of this model is missing from storage.") from None
    return restore_tuples(data)


def python_config(model: TrainedModel) -> str:
    """The model's config as the Python file MMDetection's tools and ``DetInferencer`` read."""
    data = stored_config(model)
    if not isinstance(data, dict) or "model" not in data:
        raise ApplicationError(
            "This model was registered without a runnable config (before configs were stored with base models); "
            "register its checkpoint again to get one.",
            {"config": "not runnable"},
        )
    header = (
        f"MMDetection config of model #{model.pk} ({model.architecture}), written by the dump-site training "
        f"platform.\nLoad it with mmdet.apis.init_detector(<this file>, <the checkpoint>) or DetInferencer."
    )
    if model.gsd_m:
        header += f"\nTrained at {model.gsd_m:g} m per pixel: resample imagery to it before detection."
    return dumps_config_py(stock_config(data), header=header)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_card(model: TrainedModel, user, files: dict[str, dict] | None = None) -> dict:
    """The card as data. Related objects the user may not see are left out (as everywhere else)."""
    visible = visible_related_ids(user, [model])
    run = model.source_run if model.source_run_id in visible["source_run"] else None
    dataset = model.dataset if model.dataset_id in visible["dataset"] else None
    history = TrainedModel.objects.values_list("metrics_history", flat=True).get(pk=model.pk)
    summary = (run.export_summary or {}) if run else {}
    lineage = model_lineage(model, user)["ancestors"]
    return {
        "card_version": CARD_VERSION,
        "id": model.pk,
        "name": model.name,
        "description": model.description,
        "origin": model.origin,
        "architecture": model.architecture,
        "classes": list(model.class_names),
        "created_at": model.created_at.isoformat(),
        "created_by": model.created_by.username if model.created_by else None,
        "published": model.is_published,
        "metrics": {
            "best_epoch": model.best_epoch,
            "best": {field: getattr(model, field) for field in METRIC_FIELDS},
            "per_epoch": history,
        },
        "training": (
            {
                "run": run.pk,
                "parameters": run.parameters,
                "device": run.device,
                "stop_reason": run.stop_reason,
                "weight_transfer": run.weight_transfer,
                "duration_seconds": model.training_duration.total_seconds() if model.training_duration else None,
            }
            if run
            else None
        ),
        "dataset": (
            {
                "id": dataset.pk,
                "name": dataset.name,
                "train_images": summary.get("train_images"),
                "val_images": summary.get("val_images"),
                "train_boxes": summary.get("train_annotations"),
                "val_boxes": summary.get("val_annotations"),
            }
            if dataset
            else None
        ),
        "lineage": [
            {"id": a["id"], "name": a["name"]} for a in lineage
        ],  # nearest base model first; hidden ones are "(not visible to you)"
        "parameter_count": model.parameter_count,
        # metres per pixel the network saw in training; detection resamples imagery to it
        "ground_resolution_m": model.gsd_m,
        "library_versions": model.library_versions or {},
        "onnx": onnx_summary(model),
        "files": files
        or {
            "checkpoint.pth": {"sha256": model.checkpoint_sha256},
            **({"model.onnx": {"sha256": model.onnx_sha256}} if model.onnx else {}),
        },
    }


def onnx_summary(model: TrainedModel) -> dict | None:
    """The last ONNX export's parity gate as the card shows it (None: never exported)."""
    report = model.onnx_report or {}
    if not report:
        return None
    keys = ("passed", "failures", "images", "map50", "matched", "seconds_per_image", "speedup", "threads", "opset")
    return {"file": bool(model.onnx), **{k: report.get(k) for k in keys}, "exporter": report.get("exporter")}


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _gsd(metres) -> str:
    if metres is None:
        return "unknown (no training image had a footprint)"
    return f"{metres * 100:.2f} cm per pixel; resample imagery to it before detection"


def _cell(text) -> str:
    """Markdown table cell: user text shown as text (no pipes, no line breaks, no HTML)."""
    return (
        str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("\n", " ").replace("\r", " ")
    )


def card_markdown(card: dict) -> str:
    lines = [
        f"# Model #{card['id']}: {_cell(card['name'])}",
        "",
        f"- Architecture: `{card['architecture']}` ({_fmt(card['parameter_count'])} parameters)",
        f"- Origin: {card['origin']}; created {card['created_at']} by {_cell(card['created_by'] or '—')}",
        f"- Published: {'yes' if card['published'] else 'no'}",
        f"- Ground resolution trained at: {_gsd(card.get('ground_resolution_m'))}",
        "",
        "## Classes (label index: name)",
        "",
        "| index | name |",
        "|---|---|",
        *[f"| {i} | {_cell(name)} |" for i, name in enumerate(card["classes"])],
        "",
        "## Metrics (COCO bbox, validation split)",
        "",
        f"Best epoch: {_fmt(card['metrics']['best_epoch'])}",
        "",
        "| epoch | " + " | ".join(METRIC_FIELDS) + " | loss |",
        "|---" * (len(METRIC_FIELDS) + 2) + "|",
    ]
    for entry in card["metrics"]["per_epoch"] or []:
        lines.append(
            f"| {entry.get('epoch')} | "
            + " | ".join(_fmt(entry.get(f)) for f in METRIC_FIELDS)
            + f" | {_fmt(entry.get('loss'))} |"
        )
    if not card["metrics"]["per_epoch"]:
        lines.append("| best | " + " | ".join(_fmt(card["metrics"]["best"][f]) for f in METRIC_FIELDS) + " | — |")
    training = card.get("training")
    if training:
        lines += ["", "## Training", "", f"- Run #{training['run']} on {_cell(training['device'] or '—')}"]
        lines.append(f"- {_cell(training['stop_reason'] or '—')}")
        transfer = training.get("weight_transfer") or {}
        if transfer.get("summary"):
            lines.append(f"- Weights: {_cell(transfer['summary'])}")
        lines += ["", "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in training["parameters"].items()]
    dataset = card.get("dataset")
    if dataset:
        lines += [
            "",
            "## Dataset",
            "",
            f"- #{dataset['id']} {_cell(dataset['name'])}: {_fmt(dataset['train_images'])} training images "
            f"({_fmt(dataset['train_boxes'])} boxes), {_fmt(dataset['val_images'])} validation images "
            f"({_fmt(dataset['val_boxes'])} boxes)",
        ]
    lines += ["", "## Lineage (base models, nearest first)", ""]
    lines += [f"- #{a['id']} {_cell(a['name'])}" if a["id"] else f"- {a['name']}" for a in card["lineage"]] or [
        "- none: trained from scratch or registered from files"
    ]
    lines += onnx_lines(card.get("onnx"))
    lines += ["", "## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| {name} | `{info['sha256']}` |" for name, info in card["files"].items()]
    lines += ["", "## Library versions", ""]
    lines += [f"- {k}: {_cell(v)}" for k, v in (card["library_versions"] or {}).items()] or ["- not recorded"]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from mmdet.apis import DetInferencer",
        "inferencer = DetInferencer(model='config.py', weights='checkpoint.pth', device='cpu')",
        "result = inferencer('tile.jpg')['predictions'][0]  # labels index the classes above",
        "```",
        "",
    ]
    if (card.get("onnx") or {}).get("file"):
        lines += [
            "With ONNX Runtime alone (`model.onnx`; its metadata `dumpsite.preprocess` says how to resize and pad, "
            "`dumpsite.inputs` what to feed):",
            "",
            "```python",
            "import onnxruntime",
            "session = onnxruntime.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
            "print(session.get_modelmeta().custom_metadata_map['dumpsite.inputs'])",
            "```",
            "",
        ]
    return "\n".join(lines)


def onnx_lines(onnx: dict | None) -> list[str]:
    if not onnx:
        return []
    maps, matched, seconds = onnx["map50"] or {}, onnx["matched"] or {}, onnx["seconds_per_image"] or {}
    verdict = "passed: `model.onnx` runs in plain ONNX Runtime" if onnx["passed"] else "FAILED: no ONNX file kept"
    lines = [
        "",
        "## ONNX export (parity gate on the validation split)",
        "",
        f"- {verdict}; {_cell(onnx.get('exporter') or '')}, opset {_fmt(onnx.get('opset'))}",
        f"- mAP50: PyTorch {_fmt(maps.get('pytorch'))}, ONNX Runtime {_fmt(maps.get('onnxruntime'))} "
        f"({_fmt(onnx['images'])} images)",
        f"- PyTorch detections matched (IoU >= 0.99, score within 0.001): {_fmt(matched.get('count'))} of "
        f"{_fmt(matched.get('total'))}",
        f"- CPU seconds per image ({_fmt(onnx.get('threads'))} threads): PyTorch {_fmt(seconds.get('pytorch'))}, "
        f"ONNX Runtime {_fmt(seconds.get('onnxruntime'))} ({_fmt(onnx.get('speedup'))}x)",
    ]
    return lines + [f"- {_cell(f)}" for f in onnx.get("failures") or []]


def bundle_file(model: TrainedModel, user) -> str:
    """The stored name of the bundle zip of the model as ``user`` may see it, built once and stored beside the
    model's artifacts (``bundles/<digest>.zip``, the digest of everything but the checkpoint, whose sha256 the card
    holds): later downloads serve the stored file. Built in this process's temporary files (the checkpoint read by
    window from the storage), then stored whole: two first downloads each store a whole copy.

    ``model-<id>/``: ``checkpoint.pth``, ``model.onnx`` (where an export passed the gate), ``config.py`` (stock
    MMDetection), ``config.json`` (the stored one), ``model_card.json``, ``model_card.md`` and ``SHA256SUMS``
    (every file of the bundle)."""
    config_py = python_config(model).encode("utf-8")
    with model.config.open("rb") as fh:
        config_json = fh.read()
    try:
        checkpoint_bytes = default_storage.size(model.checkpoint.name)
    except FileNotFoundError:
        checkpoint_bytes = None
    if not checkpoint_bytes or not model.checkpoint.name:
        raise ApplicationError("The checkpoint of this model is missing from storage.")
    files = {
        "checkpoint.pth": {"sha256": model.checkpoint_sha256, "bytes": checkpoint_bytes},
        "config.py": {"sha256": _sha256(config_py), "bytes": len(config_py)},
        "config.json": {"sha256": _sha256(config_json), "bytes": len(config_json)},
    }
    stored = {"checkpoint.pth": model.checkpoint.name}
    if model.onnx:
        files["model.onnx"] = {"sha256": model.onnx_sha256, "bytes": default_storage.size(model.onnx.name)}
        stored["model.onnx"] = model.onnx.name
    card = model_card(model, user, files)
    card_json = json.dumps(card, indent=1, ensure_ascii=False).encode("utf-8")
    card_md = card_markdown(card).encode("utf-8")
    sums = {**{k: v["sha256"] for k, v in files.items()}, "model_card.json": _sha256(card_json)}
    sums["model_card.md"] = _sha256(card_md)
    root = f"model-{model.pk}"
    small = {
        "config.py": config_py,
        "config.json": config_json,
        "model_card.json": card_json,
        "model_card.md": card_md,
        "SHA256SUMS": "".join(f"{h}  {n}\n" for n, h in sums.items()).encode(),
    }
    digest = _sha256(json.dumps(sums, sort_keys=True).encode())[:24]
    target = f"{posixpath.dirname(model.checkpoint.name)}/bundles/{digest}.zip"
    if default_storage.exists(target):
        return target
    with tempfile.TemporaryDirectory(prefix="bundle-", dir=settings.FILE_UPLOAD_TEMP_DIR) as tmp:
        built = Path(tmp) / "bundle.zip"
        with zipfile.ZipFile(built, "w") as zf:
            # The weights are stored, not deflated: they do not compress, and the copy stays fast.
            for name, stored_name in stored.items():
                member = zipfile.ZipInfo(f"{root}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
                with open_stored(stored_name) as source, zf.open(member, "w", force_zip64=True) as out:
                    shutil.copyfileobj(source, out, CHECKPOINT_CHUNK)
            for name, data in small.items():
                zf.writestr(f"{root}/{name}", data, compress_type=zipfile.ZIP_DEFLATED)
        store_file(built, target, move=True)
    return target


def card_for_display(model: TrainedModel, user) -> tuple[dict, str]:
    card = model_card(model, user)
    return card, card_markdown(card)
