"""Scale-out with real workers: a two-process run cancelled and its worker killed; GPU ids given to runs by a
worker that declares them (no GPU here: the children report what they were given); clusters of two host
identities."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from datasets.demo import demo_dataset_create
from engine.supervisor import processes_of_job
from models_registry.models import TrainedModel
from tests.conftest import start_worker, stop_worker, wait_for
from tests.e2e.waiting import finished, training
from training.models import TrainingRun
from training.run_files import stored_events
from training.services import training_run_cancel, training_run_create, training_run_resume
from workers.models import Worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def ranks_of(run: TrainingRun) -> list[psutil.Process]:
    """torchrun and its two ranks, each rank in a process group (session) of its own."""
    found = [psutil.Process(pid) for pid in processes_of_job(run.work_dir / "job.json")]
    assert len(found) == 3, [p.cmdline() for p in found]
    assert sum("torch.distributed.run" in p.cmdline() for p in found) == 1
    return found


def none_left(run: TrainingRun, groups: set[int]) -> bool:
    """No process runs the job (by command line) and none is left in any of its process groups."""
    if processes_of_job(run.work_dir / "job.json"):
        return False
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.info["pid"]) in groups:
                return False
        except ProcessLookupError:
            continue
    return True


def test_a_two_process_run_is_cancelled_whole_and_one_whose_worker_died_is_reaped(transactional_db, tmp_path):
    from django.db import connection

    cluster = start_worker(
        connection.settings_dict["NAME"],
        tmp_path / "worker.log",
        DUMPSITE_HEARTBEAT_LIMIT="6",
        DUMPSITE_WORKER_TICK="1",
    )
    try:
        dataset = demo_dataset_create(name="two processes", images=40, seed=8)
        run = training(training_run_create(dataset=dataset, parameters={"processes": 2, "epochs": 20}).pk)
        procs = ranks_of(run)
        groups = {os.getpgid(p.pid) for p in procs}
        assert len(groups) == 3  # torchrun's group does not hold the ranks: each must be ended on its own
        started = time.monotonic()
        training_run_cancel(run=run)
        wait_for(lambda: none_left(run, groups), timeout=10, interval=0.2, message="every rank to end")
        assert time.monotonic() - started < 10
        run.refresh_from_db()
        assert run.status == "cancelled"

        # SIGKILL of the django-q worker process that supervises a 2-process run: the ranks end, and the cluster's
        # agent fails the run.
        # 32 training images, 2 x 4 per iteration: 4 iterations an epoch; killed in the second epoch.
        run = training(
            training_run_create(dataset=dataset, parameters={"processes": 2, "epochs": 2, "batch_size": 4}).pk,
            min_iter=5,
        )
        procs = ranks_of(run)
        groups = {os.getpgid(p.pid) for p in procs}
        torchrun = next(p for p in procs if "torch.distributed.run" in p.cmdline())
        supervisor = torchrun.parent()  # the django-q worker process that runs the run
        assert supervisor.pid != cluster.proc.pid
        os.kill(supervisor.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: none_left(run, groups), timeout=10, interval=0.2, message="the orphaned ranks to end")
        run = wait_for(
            lambda: TrainingRun.objects.filter(pk=run.pk, status="failed").first(),
            timeout=30,
            interval=0.2,
            message="the run to be failed",
        )
        # The cluster's agent sees the worker process gone within a tick (1 s), before the heartbeat limit (6 s).
        assert f"The worker process {run.worker_process} is gone" in run.error_message
        assert time.monotonic() - killed < 1 + 3, "failed within a tick and a margin"

        # Resumed from rank 0's checkpoint of epoch 1, on two processes again.
        resumed = finished(training_run_resume(run=run).pk)
        assert resumed.status == "succeeded", (resumed.error_message, cluster.output()[-3000:])
        assert resumed.parameters["processes"] == 2 and resumed.device.startswith("2 processes")
        starts = [e for e in stored_events(resumed.pk) if e["event"] == "start"]
        assert [e["resumed_iter"] for e in starts] == [4]
        model = TrainedModel.objects.get(source_run=resumed)
        assert [h["epoch"] for h in model.metrics_history] == [1, 2]
    finally:
        stop_worker(cluster)


def test_a_worker_gives_each_gpu_run_its_own_gpus_and_a_two_gpu_run_waits_for_both(transactional_db, tmp_path):
    from django.db import connection

    cluster = start_worker(
        connection.settings_dict["NAME"],
        tmp_path / "worker.log",
        DUMPSITE_WORKER_GPUS="0,1",
        DUMPSITE_Q_WORKERS="3",
        DUMPSITE_WORKER_TICK="1",
    )
    try:
        wait_for(lambda: Worker.objects.filter(gpus=["0", "1"]).exists(), timeout=60, message="the worker")
        dataset = demo_dataset_create(name="gpu ids", images=16, seed=9)
        ones = [
            training_run_create(dataset=dataset, name=f"1 GPU {i}", parameters={"device": "gpu", "epochs": 1})
            for i in range(2)
        ]
        both = training_run_create(
            dataset=dataset, name="2 GPUs", parameters={"device": "gpu", "processes": 2, "epochs": 1}
        )
        ones = [finished(run.pk, timeout=180) for run in ones]
        both = finished(both.pk, timeout=180)
    finally:
        stop_worker(cluster)

    # Each 1-GPU run had a GPU of its own, and its training process saw exactly that one (this machine has no GPU,
    # so each child stops and says what CUDA_VISIBLE_DEVICES it was given).
    assert sorted(run.assigned_gpus for run in ones) == [["0"], ["1"]], [r.assigned_gpus for r in ones]
    for run in ones:
        gpu = run.assigned_gpus[0]
        assert run.status == "failed" and f"CUDA_VISIBLE_DEVICES={gpu})" in run.error_message, run.error_message
    # The 2-GPU run waited until both were free, then got both.
    assert both.assigned_gpus == ["0", "1"] and "CUDA_VISIBLE_DEVICES=0,1)" in both.error_message, both.error_message
    assert both.started_at >= max(run.finished_at for run in ones)
