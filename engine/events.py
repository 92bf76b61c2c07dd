"""The progress events a training child writes (JSON lines), and readers for them. Plain Python.

Events: ``setup`` {device, transfer}; ``start`` {max_epochs, max_iters, iters_per_epoch};
``iter`` {epoch, iter, max_iters, losses, lr, eta};
``val`` {epoch, metrics}; ``tracking`` {mlflow: {run_id, experiment_id}}; ``done`` {}; ``error`` {message}.
Each also has ``time`` (Unix seconds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .config import METRIC_KEYS

# The folder, beside the events file, where the training child saves its first batch as the network saw it
# (``progress_hook.TrainingSamplesHook``): JPEGs and ``samples.json``.
SAMPLES = "samples"


class EventLines:
    """The complete events of bytes fed in pieces: an unfinished last line waits for the next piece."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, data: bytes) -> list[dict]:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return parse_events(lines)


class EventTail:
    """Reads the events appended to a file since the last read; an unfinished last line waits for the next read."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.lines = EventLines()

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        return self.lines.feed(data)


def parse_events(lines: list[bytes]) -> list[dict]:
    """The events of complete JSON lines (blank or broken lines skipped)."""
    events = []
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def read_events(path: Path) -> list[dict]:
    """All complete events of a finished file."""
    return EventTail(path).read_new()


def clean_metric(value: float | str | None) -> float | None:
    """COCO reports -1 for a metric without ground truth (e.g. no large objects); store that as None."""
    if value is None:
        return None
    value = float(value)
    return None if not math.isfinite(value) or value < 0 else value


def fold_progress(state: dict, events: list[dict]) -> dict:
    """Fold new events into a progress state (what the run shows while it trains)."""
    for ev in events:
        kind = ev.get("event")
        if kind == "setup":
            # Read once by the progress writer, which stores it on the run and takes it out of the state.
            state["setup"] = {"device": ev.get("device") or "", "transfer": ev.get("transfer")}
        elif kind == "tracking":  # taken out of the state and stored on the run by the progress writer, as setup
            state["tracking"] = {"mlflow": ev.get("mlflow")}
        elif kind == "start":
            state.update(max_epochs=ev.get("max_epochs"), max_iters=ev.get("max_iters"))
        elif kind == "iter":
            state.update(
                epoch=ev.get("epoch"),
                iter=ev.get("iter"),
                max_iters=ev.get("max_iters"),
                losses=ev.get("losses") or {},
                lr=ev.get("lr"),
                eta=ev.get("eta"),
            )
        elif kind == "val":
            state["last_val"] = {
                "epoch": ev.get("epoch"),
                **{k: clean_metric(v) for k, v in (ev.get("metrics") or {}).items()},
            }
        elif kind == "error":  # the first one: with several processes, the others' errors follow from it
            state.setdefault("error", ev.get("message"))
    if state.get("max_iters"):
        state["percent"] = round(100.0 * (state.get("iter") or 0) / state["max_iters"], 2)
    return state


def metrics_history(events: list[dict]) -> list[dict]:
    """One entry per validated epoch: the COCO metrics plus the mean training loss of that epoch."""
    losses: dict[int, list[float]] = {}
    history: dict[int, dict] = {}
    for ev in events:
        if ev.get("event") == "iter" and isinstance(ev.get("losses"), dict) and "loss" in ev["losses"]:
            losses.setdefault(int(ev.get("epoch") or 0), []).append(float(ev["losses"]["loss"]))
        elif ev.get("event") == "val":
            metrics = ev.get("metrics") or {}
            entry = {"epoch": ev.get("epoch")}
            for key in METRIC_KEYS:
                # mmdet reports no metrics at all when the model detected nothing: that is an AP of 0.
                entry[key] = clean_metric(metrics.get(f"coco/{key}")) if metrics else 0.0
            history[int(ev.get("epoch") or 0)] = entry
    for epoch, entry in history.items():
        values = losses.get(epoch)
        entry["loss"] = round(sum(values) / len(values), 6) if values else None
    return [history[e] for e in sorted(history)]


def registered_epoch(history: list[dict], checkpoint_epoch: int | None) -> dict | None:
    """The metrics of the epoch whose checkpoint is registered, or of the best epoch when that one is unknown."""
    return next((entry for entry in history if entry["epoch"] == checkpoint_epoch), None) or best_epoch(history)


def best_epoch(history: list[dict]) -> dict | None:
    """The first epoch with the highest bbox mAP (the one CheckpointHook keeps with rule='greater')."""
    best = None
    for entry in history:
        score = entry.get("bbox_mAP")
        if score is not None and (best is None or score > best["bbox_mAP"]):
            best = entry
    return best
