"""A run's files in the platform's storage, under ``runs/<id>/``: its log, its progress events, its result and the
last epoch checkpoint of a run that may be resumed. The worker writes them in its own scratch folder and pushes them
there as the run goes (``training.execution.sync``); the web, the API and a worker of another host read them here,
never from a worker's disk."""

from __future__ import annotations

import json
import re

from core.storage import StoredFileChanged, open_stored, read_stored_tail, stored_names
from engine.config import checkpoint_epoch
from engine.events import SAMPLES, EventLines, parse_events
from engine.supervisor import last_lines

LOG = "train.log"
EVENTS = "events.jsonl"
RESULT = "result.json"
PUSHED = (LOG, EVENTS, RESULT)  # what is pushed as the run goes, and once more when it ends
TENSORBOARD = "tensorboard"  # a folder of TensorBoard event files, pushed as they change (binary: not redacted)
LOG_TAIL_BYTES = 16_000


def run_folder(run_id: int) -> str:
    return f"runs/{int(run_id)}"


def stored_name(run_id: int, name: str) -> str:
    return f"{run_folder(run_id)}/{name}"


def checkpoint_folder(run_id: int) -> str:
    return stored_name(run_id, "checkpoints")


def stored_checkpoint(run_id: int) -> str | None:
    """The stored name of the newest epoch checkpoint a run pushed (what resuming it starts from), or None."""
    names = [n for n in stored_names(checkpoint_folder(run_id)) if n.endswith(".pth")]
    return max(names, key=checkpoint_epoch) if names else None


def stored_events(run_id: int) -> list[dict]:
    """The run's progress events as last pushed (read in windows, never the whole file at once)."""
    for attempt in range(3):  # pushed anew while it was read: read the new one
        try:
            with open_stored(stored_name(run_id, EVENTS)) as fh:
                events, lines = [], EventLines()
                while block := fh.read(1 << 20):
                    events += lines.feed(block)
                return events + parse_events([lines.partial])
        except FileNotFoundError:
            return []
        except StoredFileChanged:
            if attempt == 2:
                raise
    return []


def stored_tensorboard_files(run_id: int) -> list[str]:
    """The stored names of the run's TensorBoard event files."""
    return stored_names(stored_name(run_id, TENSORBOARD))


def stored_samples(run_id: int) -> list[dict]:
    """The first training batch as the network saw it (``engine.progress_hook.TrainingSamplesHook``): each
    sample's entry of ``samples.json`` with ``name``, its stored name; [] before the run's first iteration."""
    try:
        with open_stored(stored_name(run_id, f"{SAMPLES}/samples.json")) as fh:
            index = json.loads(fh.read(1 << 20))
    except (FileNotFoundError, ValueError):
        return []
    return [
        {**entry, "name": stored_name(run_id, f"{SAMPLES}/{entry['file']}")}
        for entry in index
        if isinstance(entry, dict) and re.fullmatch(r"sample_\d+\.jpg", str(entry.get("file")))
    ]


def stored_log_tail(run_id: int) -> str:
    return last_lines(read_stored_tail(stored_name(run_id, LOG), LOG_TAIL_BYTES))
