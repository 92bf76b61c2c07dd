"""What a model runs on: PyTorch (its checkpoint) or ONNX Runtime (its ONNX export, once one passed the parity
gate). Detection runs and predict checks take ``engine`` and ask here whether the model can."""

from __future__ import annotations

from .models import TrainedModel

ENGINES = ("pytorch", "onnxruntime")


def onnx_refusal(model: TrainedModel) -> str:
    """Why ``model`` cannot run on ONNX Runtime ("" when it can): it needs an export that passed the gate."""
    if not model.onnx:
        return "the model has no ONNX export: export it first (it is kept once it passes the parity gate)"
    if not (model.onnx_report or {}).get("passed"):
        return "the model's ONNX export did not pass the parity gate"
    return ""
