"""The same training on two processes (torch.distributed, gloo on the CPU) through the real worker, run inside the
pipeline test against its one-process run on the same data (one baseline training shared)."""

from __future__ import annotations

import time

from engine.supervisor import processes_of_job
from models_registry.models import TrainedModel
from training.models import TrainingRun
from training.run_files import stored_events
from training.services import training_run_create


def check_two_processes(baseline: TrainedModel, timeout: float = 900) -> TrainedModel:
    """Two processes with half the batch each (the same images per iteration) and the same epochs: it succeeds,
    shows its processes and total batch, reports progress once (rank 0 only), leaves no process behind, and its
    model scores within 0.1 mAP50 of the one-process model."""
    source = baseline.source_run
    assert source is not None and baseline.dataset is not None
    params = source.parameters
    assert params["processes"] == 1 and params["batch_size"] % 2 == 0
    run = training_run_create(
        dataset=baseline.dataset,
        name="two processes",
        parameters={"processes": 2, "batch_size": params["batch_size"] // 2, "epochs": params["epochs"]},
    )
    deadline = time.monotonic() + timeout
    seen_processes: list = []
    while not (run := TrainingRun.objects.get(pk=run.pk)).is_finished and time.monotonic() < deadline:
        if run.current_iter and not seen_processes:
            seen_processes = processes_of_job(run.work_dir / "job.json")  # torchrun and its two ranks
        time.sleep(0.5)
    assert run.status == "succeeded", f"{run.error_message}\n{run.log_tail[-3000:]}"
    assert len(seen_processes) == 3, seen_processes
    assert processes_of_job(run.work_dir / "job.json") == []
    assert run.device.startswith("2 processes x cpu"), run.device
    assert run.max_iters == source.max_iters  # the same images per iteration: the same iterations

    events = stored_events(run.pk)
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == kinds.count("setup") == kinds.count("done") == 1, kinds
    assert kinds.count("iter") == run.max_iters and kinds.count("val") == params["epochs"]

    model = TrainedModel.objects.get(source_run=run)
    assert model.bbox_mAP_50 is not None and baseline.bbox_mAP_50 is not None
    assert abs(model.bbox_mAP_50 - baseline.bbox_mAP_50) <= 0.1, (model.metrics_history, baseline.metrics_history)
    return model
