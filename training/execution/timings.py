"""Where a run's wall time went: the phases of ``TrainingRun.PHASES``, measured by the worker."""

from __future__ import annotations

import time

from ..models import TrainingRun
from ..services import training_run_record


class PhaseTimer:
    """Where a run's wall time went, stored on the run by phase (``TrainingRun.PHASES``)."""

    def __init__(self, run: TrainingRun):
        assert run.started_at is not None, "a run is timed once it is claimed"
        self.run_id = run.pk
        self.phases = {"queued": round((run.started_at - run.created_at).total_seconds(), 3)}
        self._last = run.started_at.timestamp()  # the claim: phases follow one another without gaps

    def lap(self, phase: str) -> None:
        now = time.time()
        self.phases[phase] = round(now - self._last, 3)
        self._last = now

    def child_exited(self, events: list[dict]) -> None:
        """Split the child's life at its first progress event: before it, process start, imports and the loading
        of model and data; after it, training proper."""
        first = next((e["time"] for e in events if e.get("event") == "start"), None)
        if first is not None and self._last <= first <= time.time():
            self.phases["startup"] = round(first - self._last, 3)
            self._last = first
            self.lap("training")
        else:
            self.lap("startup")

    def save(self) -> None:
        training_run_record(run_id=self.run_id, timings=self.phases)
