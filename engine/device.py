"""Which device the training child uses, and how it is described on the run. No Django; torch only when asked."""

from __future__ import annotations

import os
import platform


class DeviceError(ValueError):
    """The run asks for something this machine's devices cannot do."""


def select_device(*, cuda_available: bool, amp: bool, wanted: str | None = None) -> str:
    """``cuda`` when a GPU is visible to the process (CUDA_VISIBLE_DEVICES decides which), else ``cpu``.

    Mixed precision is refused on a CPU rather than quietly run in float32: the run's parameters say what was
    trained, and a CPU run with ``amp`` on would record a precision it never used. A run given GPUs by its worker
    (``wanted="gpu"``) that sees none fails for the same reason: the worker declared GPUs its machine lacks."""
    if wanted == "gpu" and not cuda_available:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        raise DeviceError(
            f"The run was given GPU {visible or '(none)'} (CUDA_VISIBLE_DEVICES={visible}) but its training process "
            "sees no GPU: the worker declares GPUs (DUMPSITE_WORKER_GPUS) that its machine does not have."
        )
    if amp and not cuda_available:
        raise DeviceError(
            "Mixed precision (amp) needs a GPU, and this worker has none; start the run without amp or on a GPU worker."
        )
    if wanted == "cpu":
        return "cpu"
    return "cuda" if cuda_available else "cpu"


def describe_device(device: str, processes: int = 1) -> str:
    """A short description for the run: ``cuda:0 NVIDIA H200 (139 GiB)``, ``cpu (2 threads)``, or for several
    processes ``2 processes x cpu (1 thread)``."""
    # torch / MMDetection load only where this runs (a child process), never on import
    import torch

    if device == "cuda":
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        count = torch.cuda.device_count()
        extra = f", {count} visible" if count > 1 else ""
        one = f"cuda:{index} {props.name} ({props.total_memory / 2**30:.0f} GiB{extra})"
    else:
        threads = torch.get_num_threads()
        one = f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return f"{processes} processes x {one}" if processes > 1 else one


def library_versions() -> dict:
    """Versions of what trained or loaded a model, for its model card."""

    # torch / MMDetection load only where this runs (a child process), never on import
    import mmcv
    import mmdet
    import mmengine
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "mmcv": mmcv.__version__,
        "mmengine": mmengine.__version__,
        "mmdet": mmdet.__version__,
    }
