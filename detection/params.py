"""The parameters of a detection run: types, ranges and defaults (checked with the training parameters' rules)."""

from __future__ import annotations

import json

from core.errors import ApplicationError
from engine.detect import MERGE_METHODS
from engine.params import ParamSpec, checked_values
from models_registry.engines import ENGINES, onnx_refusal
from models_registry.models import TrainedModel
from workers.resources import assert_some_worker_can_take, site_defaults

SPECS: dict[str, ParamSpec] = {
    s.name: s
    for s in (
        ParamSpec(
            "tile_size",
            int,
            64,
            4096,
            help="Window side in pixels as the model sees them (default: the model's training size).",
        ),
        ParamSpec(
            "resample",
            bool,
            help=(
                "Resample each orthophoto to the ground resolution the model was trained at, where both are known "
                "(default true): a model trained on 3 cm drone tiles sees a 10 cm orthophoto enlarged to 3 cm."
            ),
        ),
        ParamSpec("overlap", float, 0.0, 0.5, help="Share of a window its neighbour overlaps."),
        ParamSpec("score_threshold", float, 0.01, 1.0, help="Boxes scoring below are dropped before merging."),
        ParamSpec("merge", str, choices=MERGE_METHODS, help="greedy_nmm (SAHI's GREEDYNMM) or nms."),
        ParamSpec("merge_threshold", float, 0.05, 1.0, help="Intersection over the smaller box that merges two."),
        ParamSpec("batch_size", int, 1, 64, help="Windows per forward pass."),
        ParamSpec("device", str, choices=("cpu", "gpu"), help="Where the model runs."),
        ParamSpec(
            "engine",
            str,
            choices=ENGINES,
            help=(
                "pytorch: the checkpoint through MMDetection; onnxruntime: the model's ONNX export (one that passed "
                "the parity gate) through ONNX Runtime on the CPU, the same merge and outputs."
            ),
        ),
        ParamSpec("site_match", float, 0.05, 1.0, help="Share of the smaller area that makes a known site found."),
        ParamSpec("target_recall", float, 0.05, 1.0, help="The site recall whose score threshold is reported."),
    )
}
DEFAULTS = {
    "engine": "pytorch",
    "resample": True,
    "overlap": 0.2,
    "score_threshold": 0.3,
    "merge": "greedy_nmm",
    "merge_threshold": 0.5,
    "batch_size": 4,
    "site_match": 0.5,
    "target_recall": 0.9,
}
DEFAULT_TILE = 1024


def model_image_size(model: TrainedModel) -> int:
    """The size the model was trained at: its training run's ``image_size``, else the longest side of the Resize
    in its stored config's test pipeline, else 1024. A model trained on crops validated on whole images at full
    resolution: 1024 too (the crops' size would only multiply the windows)."""
    run = model.source_run
    if run is not None and run.parameters.get("resize") == "crops":
        return DEFAULT_TILE
    if run is not None and isinstance(run.parameters.get("image_size"), int):
        return int(run.parameters["image_size"])
    try:
        with model.config.open("rb") as fh:
            config = json.load(fh)
        steps = config["test_dataloader"]["dataset"]["pipeline"]
        scale = next(step["scale"] for step in steps if "Resize" in str(step.get("type")) and step.get("scale"))
        return int(max(scale)) if isinstance(scale, list | tuple) else int(scale)
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return DEFAULT_TILE


def detection_parameters(model: TrainedModel, given: dict | None) -> dict:
    """The complete, checked parameters (each problem named), with ``classes``: the model's class names to keep
    (all of them when not given)."""
    given = dict(given or {})
    classes = given.pop("classes", None)
    errors = {
        k: f"not a parameter of a detection run; known: {', '.join([*SPECS, 'classes'])}"
        for k in given
        if k not in SPECS
    }
    params = {
        **DEFAULTS,
        "tile_size": min(4096, max(64, model_image_size(model))),
        "device": site_defaults().get("device") or "cpu",
    }
    values, bad = checked_values(SPECS, given)
    params.update(values)
    errors.update(bad)
    known = list(model.class_names)
    if classes is None:
        params["classes"] = known
    elif not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        errors["classes"] = "a non-empty list of class names"
    elif unknown := [c for c in classes if c not in known]:
        errors["classes"] = f"the model knows {', '.join(known)}; not {', '.join(unknown)}"
    else:
        params["classes"] = [c for c in known if c in classes]
    if params["engine"] == "onnxruntime":
        engine_error = onnx_refusal(model)
        if engine_error:
            errors["engine"] = engine_error
        elif given.get("device") == "gpu":
            errors["device"] = "ONNX Runtime runs on the CPU: leave the device out, or give cpu"
        params["device"] = "cpu"
    if errors:
        raise ApplicationError("Invalid detection parameters.", errors)
    assert_some_worker_can_take({"device": params["device"], "processes": 1})  # one process
    return params
