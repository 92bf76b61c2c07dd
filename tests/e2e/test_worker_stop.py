"""A worker stops within 30 s on SIGTERM or SIGINT, to its main process or to its whole process group (Ctrl-C in a
terminal, systemd's default stop, ``kill -- -PGID``), with its runs ended and nothing of it left running.

A group SIGTERM used to leave ``manage.py worker`` hanging for good, now and then, on an idle worker that had
processed tasks (its signal handler waited for a lock its own thread held): the stops are repeated enough times, on
real clusters that processed tasks, to catch it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from django.db import connection
from django_q.models import Success
from django_q.tasks import async_task

from datasets.demo import demo_dataset_create
from engine.supervisor import processes_of_job
from tests.conftest import start_worker, stop_worker, wait_for
from tests.e2e.waiting import training
from training.models import TrainingRun
from training.services import training_run_create
from workers.models import Worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIMIT = 30
# (to whom, which signal): the group SIGTERM, the one that hung, most often.
WAYS = [("group", signal.SIGTERM), ("group", signal.SIGINT), ("main", signal.SIGTERM), ("group", signal.SIGTERM)]
ROUNDS = 4  # 8 group SIGTERMs: the old handler hung 5 of 12 such stops, so it would pass 8 about 2% of the time


def group_members(pgid: int) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.info["pid"]) == pgid:
                found.append(proc.info["pid"])
        except (ProcessLookupError, PermissionError):
            continue
    return found


def send(worker, way: tuple[str, signal.Signals]) -> None:
    whom, sig = way
    if whom == "group":
        os.killpg(worker.proc.pid, sig)
    else:
        worker.proc.send_signal(sig)


def assert_stopped(worker, way, sent_at: float) -> None:
    try:
        worker.proc.wait(timeout=LIMIT)
    except Exception:
        pytest.fail(f"{way}: still running {LIMIT} s after the signal\n{worker.output()[-3000:]}")
    took = time.monotonic() - sent_at
    assert worker.proc.returncode == 0, (way, worker.output()[-3000:])  # its own stop, not the watchdog's
    wait_for(lambda: not group_members(worker.proc.pid), timeout=3, interval=0.2, message=f"{way}: nothing left")
    assert f"stopped ({way[1].name})" in worker.output(), worker.output()[-2000:]
    assert took < LIMIT


def assert_yields_cpu(pid: int) -> None:
    """The worker and its processes run DUMPSITE_WORKER_NICE (10) nicer than what started them; leading its own
    session, its group is weighed at 10 too."""
    expected = min(19, os.nice(0) + 10)
    for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        assert process.nice() == expected, process.cmdline()
    autogroup = Path(f"/proc/{pid}/autogroup")
    if autogroup.exists():  # kernels with session groups
        assert autogroup.read_text().strip().endswith("nice 10"), autogroup.read_text()


def test_idle_workers_that_processed_tasks_stop_within_seconds_on_every_signal_way(transactional_db, tmp_path):
    db_name = connection.settings_dict["NAME"]
    for round_ in range(ROUNDS):
        workers = [
            start_worker(db_name, tmp_path / f"r{round_}w{i}.log", DUMPSITE_Q_WORKERS="2") for i in range(len(WAYS))
        ]
        try:
            wait_for(
                lambda ws=workers: (
                    Worker.objects.filter(stopped_at__isnull=True).count() >= len(WAYS)
                    and all("running." in w.output() for w in ws)
                ),
                timeout=120,
                message="the clusters to run",
            )
            if round_ == 0:
                assert_yields_cpu(workers[0].proc.pid)
            wanted = Success.objects.count() + 4 * len(WAYS)
            for i in range(4 * len(WAYS)):
                async_task("math.floor", i + 0.5)
            wait_for(lambda n=wanted: Success.objects.count() >= n, timeout=60, message="the tasks")
            time.sleep(1)  # idle again
            sent = []
            for worker, way in zip(workers, WAYS, strict=True):
                send(worker, way)
                sent.append(time.monotonic())
            for worker, way, at in zip(workers, WAYS, sent, strict=True):
                assert_stopped(worker, way, at)
        finally:
            for worker in workers:
                stop_worker(worker, timeout=1)
        assert not Worker.objects.filter(stopped_at__isnull=True).exists()  # each recorded its stop


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "group-sigterm"])
def test_a_worker_stopped_while_it_trains_ends_the_run_and_leaves_no_process(transactional_db, tmp_path, sig):
    """Under Ctrl-C the cluster's processes ignore the signal and the one training would finish first; under a
    group SIGTERM they are gone at once and the training child (a session of its own) is left. Either way the
    worker exits within the limit, the run is failed with the reason, and no process of its training is left."""
    worker = start_worker(connection.settings_dict["NAME"], tmp_path / "worker.log")
    try:
        dataset = demo_dataset_create(name="stopped", images=40, seed=5)
        run = training(training_run_create(dataset=dataset, parameters={"epochs": 20}).pk)
        job = run.work_dir / "job.json"
        children = processes_of_job(job)
        assert children
        # The training child leads a session of its own: its group is weighed at the worker's niceness too.
        autogroup = Path(f"/proc/{children[0]}/autogroup")
        if autogroup.exists():  # kernels with session groups
            wait_for(
                lambda: autogroup.read_text().strip().endswith("nice 10"),
                timeout=20,
                interval=0.2,
                message="the training child's group at nice 10",
            )
        sent_at = time.monotonic()
        os.killpg(worker.proc.pid, sig)
        assert_stopped(worker, ("group", sig), sent_at)
    finally:
        stop_worker(worker, timeout=1)
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == "failed"
    assert f"The worker was stopped ({sig.name})" in run.error_message
    assert f"Run #{run.pk} failed: the worker was stopped ({sig.name})." in worker.output()
    assert not processes_of_job(job)
