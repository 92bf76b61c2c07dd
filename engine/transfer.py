"""Which weights of a base model a run loads, and which it re-initialises. Plain Python (no torch, no Django).

Fine-tuning a detector to other classes is the everyday case: a model-zoo detector trained on COCO's 80 classes
becomes a 2-class waste detector. The backbone, the neck and every class-agnostic part of the heads carry over;
the layers whose output is one row per class (the preset's ``class_dependent`` prefixes) mean nothing for the new
classes and start from their initialisation. Same classes in the same order: everything loads, as before.

Two steps, both explicit:
- ``describe_transfer`` says before the run is queued what will happen (from the class lists alone).
- ``plan_transfer`` is computed by the training child from the real tensors: key by key what loads, what is
  re-initialised and why. Any mismatch outside the class-dependent layers means another architecture: refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .presets import Preset

FULL = "full"
NEW_CLASSES = "new_classes"


class TransferError(ValueError):
    """The base model's weights do not fit the run's model (another architecture, or not a detector)."""


def _is_class_dependent(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _classes_phrase(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    more = len(names) - limit
    return f"{len(names)} ({shown}{f', and {more} more' if more > 0 else ''})"


def describe_transfer(preset: Preset, base_classes: Sequence[str], classes: Sequence[str]) -> dict:
    """What a run that starts from a model with ``base_classes`` will do with its weights, before it is queued."""
    base_classes, classes = list(base_classes), list(classes)
    if base_classes == classes:
        return {
            "mode": FULL,
            "summary": "The base model predicts the dataset's classes in the same order: all its weights load.",
            "reinitialised_layers": [],
        }
    if len(base_classes) == len(classes) and sorted(base_classes) == sorted(classes):
        why = "the base model predicts the same classes in another order"
    elif len(base_classes) == len(classes):
        why = f"the base model predicts other classes ({_classes_phrase(base_classes)})"
    else:
        why = f"the base model predicts {_classes_phrase(base_classes)} classes, the dataset has {len(classes)}"
    layers = list(preset.class_dependent)
    return {
        "mode": NEW_CLASSES,
        "summary": (
            f"Fine-tuning to new classes: {why}. The class-dependent layers of the head ({', '.join(layers)}) are "
            f"re-initialised for the dataset's {len(classes)} classes; the backbone, the neck and every other layer "
            f"that matches in name and shape load from the base model."
        ),
        "reinitialised_layers": layers,
        "reason": why,
    }


def _group(keys: Sequence[str]) -> dict[str, int]:
    """Tensor counts per top-level module, heads inside a head apart (``backbone``, ``neck``, ``rpn_head``,
    ``roi_head.bbox_head``...)."""
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        name = ".".join(parts[:2]) if len(parts) > 2 and parts[1].endswith("_head") else parts[0]
        groups[name] = groups.get(name, 0) + 1
    return groups


def plan_transfer(
    model_shapes: Mapping[str, Sequence[int]],
    base_shapes: Mapping[str, Sequence[int]],
    *,
    class_dependent: Sequence[str],
    new_classes: bool,
    reason: str = "",
) -> dict:
    """Key by key: which of the model's tensors load from the base checkpoint and which are re-initialised.

    ``new_classes``: the classes differ, so the class-dependent layers are re-initialised even where their shape
    happens to match (two classes named otherwise: same shapes, other meaning). Raises ``TransferError`` when any
    other tensor is missing from the base or has another shape: that is a model of another architecture.
    """
    loaded, reinitialised, conflicts = [], [], []
    for key, shape in model_shapes.items():
        shape = list(shape)
        base = base_shapes.get(key)
        dependent = _is_class_dependent(key, class_dependent)
        if dependent and new_classes:
            reinitialised.append(
                {
                    "key": key,
                    "shape": shape,
                    "base_shape": None if base is None else list(base),
                    "reason": reason or "class-dependent layer, the classes differ",
                }
            )
        elif base is None:
            conflicts.append(f"{key} is missing from the base model")
        elif list(base) != shape:
            conflicts.append(f"{key} is {'x'.join(map(str, base))} in the base model, {'x'.join(map(str, shape))} here")
        else:
            loaded.append(key)
    if conflicts:
        raise TransferError(
            f"the base model's weights do not fit this architecture ({len(conflicts)} of {len(model_shapes)} "
            f"tensors differ; first: {'; '.join(conflicts[:3])})"
        )
    if not loaded:
        raise TransferError("no tensor of the base model fits this architecture")
    unused = sorted(k for k in base_shapes if k not in model_shapes)
    return {
        "mode": NEW_CLASSES if new_classes else FULL,
        "loaded_count": len(loaded),
        "loaded_groups": _group(loaded),
        "reinitialised": reinitialised,
        "unused_count": len(unused),
        "unused": unused[:50],
        "total": len(model_shapes),
    }
