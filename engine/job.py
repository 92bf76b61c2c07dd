"""The job file: everything the training child needs, as JSON. Written by the worker, read by the child."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar


class JsonJob:
    # Subclasses are dataclasses (``asdict`` below).
    __dataclass_fields__: ClassVar[dict[str, Any]]

    """Written atomically by the worker as JSON, read by the child: the job files' one format."""

    def write(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> Any:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class TrainingJob(JsonJob):
    base_config: str  # "mmdet::<path>" inside the installed mmdet package
    overrides: dict  # merged into the base with Config.merge_from_dict
    classes: list[str]
    work_dir: str
    events_file: str
    result_file: str
    output_dir: str  # where the child leaves model.pth and config.json for registration
    progress_events: bool = True  # False only to measure what the progress hook costs (bench/)
    # How the base model's weights (``overrides["load_from"]``) are loaded: ``transfer.describe_transfer``'s
    # mode and reason plus the preset's class-dependent prefixes. None: no base model, or a resumed attempt.
    transfer: dict | None = None
    amp: bool = False
    device: str | None = None  # "cpu" or "gpu": what the worker gave the run (None: whatever is visible)
    # Once trained, the registered checkpoint is evaluated on the validation split at these thresholds
    # ({"score_threshold", "iou_threshold"}); None: not evaluated (benchmarks of the training alone).
    evaluation: dict | None = None
    # Experiment tracking (``tracking.backends``): {"tensorboard_dir", "mlflow": None or {"tracking_uri",
    # "experiment", "run_name", "tags", "params", "artifact_location"}}; None: mmengine's local files only.
    tracking: dict | None = None
