"""Load checkpoints with ``torch.load(weights_only=True)`` and a short allow-list. Child-process only (torch).

A checkpoint is a pickle: loading one with weights_only=False runs whatever code it carries. torch >= 2.6 loads
weights-only by default, which full mmengine checkpoints (message hub, numpy scalars) do not pass; instead of
turning that off, the few plain-data classes they contain are allowed by name. Anything else is refused.
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import numpy as np
import torch


def _history_buffer_method(obj: Any, name: str) -> Any:
    """Stand-in for ``getattr`` while unpickling: mmengine's HistoryBuffer pickles its statistics methods as
    ``getattr(HistoryBuffer, "mean")``. The real builtin would let a crafted file reach ``__globals__`` and run
    code, so only those method names on the HistoryBuffer class (or its instances) are resolved."""
    # torch / MMDetection load only where this runs (a child process), never on import
    from mmengine.logging.history_buffer import HistoryBuffer

    owner_ok = obj is HistoryBuffer or isinstance(obj, HistoryBuffer)
    allowed = {"min", "max", "current", "mean", *HistoryBuffer._statistics_methods}
    if owner_ok and isinstance(name, str) and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"refused attribute lookup {name!r} on {obj!r} in a checkpoint")


def safe_globals() -> list:
    # torch / MMDetection load only where this runs (a child process), never on import
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed = [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        np.core.multiarray._reconstruct,  # type: ignore[attr-defined]  # numpy 1.26 keeps it there, untyped
        np.core.multiarray.scalar,  # type: ignore[attr-defined]
        (_history_buffer_method, "builtins.getattr"),
        (_history_buffer_method, "__builtin__.getattr"),
    ]
    # numpy >= 1.25 pickles dtypes by their class (np.dtypes.Float64DType, ...).
    allowed += [getattr(np.dtypes, name) for name in dir(getattr(np, "dtypes", object)) if name.endswith("DType")]
    return allowed


def install_safe_globals() -> None:
    """Allow the plain-data classes of mmengine checkpoints for every later weights-only ``torch.load``."""
    torch.serialization.add_safe_globals(safe_globals())


_BOILERPLATE = (
    "Weights only load failed",
    "Check the documentation",
    "Please file an issue",
    "(1)",
    "(2)",
    "In PyTorch 2.6",
)


def _reason(exc: Exception) -> str:
    """torch wraps the real reason in paragraphs of advice; keep the reason."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", str(exc)) if p.strip()]
    for paragraph in paragraphs:
        paragraph = re.sub(r"^.*?WeightsUnpickler error:\s*", "", paragraph, flags=re.S).strip()
        if paragraph and not paragraph.startswith(_BOILERPLATE):
            return " ".join(paragraph.split())[:300]
    return " ".join((paragraphs[0] if paragraphs else type(exc).__name__).split())[:300]


def load_checkpoint(path: str, map_location: str = "cpu") -> dict:
    """Load a checkpoint weights-only with the allow-list; raise ValueError with a readable reason otherwise."""
    install_safe_globals()
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals: all mean "not a safe checkpoint"
        raise ValueError(f"not a loadable weights-only checkpoint: {_reason(exc)}") from exc
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        state = ckpt["state_dict"]
    else:
        state = ckpt
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a model checkpoint: no state_dict of tensors")
    return ckpt if isinstance(ckpt, dict) and "state_dict" in ckpt else {"state_dict": state}


def save_weights(src: str, dst: str, *, classes: list[str], extra_meta: dict | None = None) -> int:
    """Write a slim checkpoint (weights + class names, no optimizer state) and return its parameter count."""
    ckpt = load_checkpoint(src)
    state = ckpt["state_dict"]
    meta = {"dataset_meta": {"classes": list(classes)}, **(extra_meta or {})}
    torch.save({"state_dict": state, "meta": meta}, dst)
    return parameter_count(state)


def parameter_count(state: dict) -> int:
    """Learned parameters of a state dict (batch-norm running statistics are buffers, not parameters)."""
    return int(
        sum(
            t.numel()
            for k, t in state.items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )
    )
