"""What the child processes share (training, evaluation, predict checks, checkpoint inspection): MMDetection's base
configs found inside the installed package, a stored JSON config loaded for running (never through
``Config.fromfile``), and JSON results written atomically. mmengine is imported inside the functions: this module is
also imported where only the names are needed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import restore_tuples


def resolve_base_config(name: str) -> str:
    """Path of a ``mmdet::<path>`` config inside the installed mmdet package."""
    # torch / MMDetection load only where this runs (a child process), never on import
    import mmdet

    if not name.startswith("mmdet::"):
        raise ValueError(f"base config must be named mmdet::<path>, got {name!r}")
    root = Path(mmdet.__file__).parent / ".mim" / "configs"
    path = (root / name[len("mmdet::") :]).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise FileNotFoundError(f"base config {name} not found in mmdet {mmdet.__version__}")
    return str(path)


def load_json_config(path: str) -> Any:
    """Load a stored JSON config for running: tuples restored, and the local visualization backend swapped for one
    that records the config as JSON (mmengine's writes config.py).

    Never ``Config.fromfile``: it rewrites the file's text before parsing it (``{{$VAR:default}}`` becomes an
    environment variable's value, ``{{ fileDirname }}`` a path, ``{{ _base_.x }}`` a base value), and this file
    holds user text (class names) that must reach MMDetection literally. A plain JSON parse keeps it data.
    """
    # torch / MMDetection load only where this runs (a child process), never on import
    from mmengine.config import Config

    from . import transforms, vis_backend  # noqa: F401 - register the platform's transforms and dataset, and
    # JsonConfigLocalVisBackend: a stored config may name them

    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    # The file name makes the Runner dump its copy of the config as JSON, never as Python source.
    cfg = Config(restore_tuples(data), filename=path)
    for backend in (cfg.get("visualizer") or {}).get("vis_backends") or []:
        if backend.get("type") == "LocalVisBackend":
            backend["type"] = "JsonConfigLocalVisBackend"
    return cfg


def write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False)
    os.replace(tmp, path)
