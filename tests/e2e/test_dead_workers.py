"""Dead workers noticed in seconds, with real clusters: a cluster killed whole and started again on the same host;
a worker of another host that stops heartbeating."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from datasets.demo import demo_dataset_create
from engine.supervisor import processes_of_job
from tests.conftest import start_worker, stop_worker, wait_for
from tests.e2e.waiting import finished, training
from training.models import TrainingRun
from training.services import training_run_create, training_run_retry

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def kill_and_restart(cluster, run: TrainingRun, db_name: str, tmp_path):
    """Kill the whole cluster (main process, sentinel, workers) while ``run`` runs, start a new one, and check it
    fails the run within seconds and leaves no process of it. Returns (the new cluster, the failed run)."""
    job = run.work_dir / "job.json"
    os.killpg(cluster.proc.pid, signal.SIGKILL)
    cluster.proc.wait()
    time.sleep(2)  # an operator restarting it
    second = start_worker(db_name, tmp_path / "second.log")
    try:
        started = time.monotonic()
        run = wait_for(
            lambda: TrainingRun.objects.filter(pk=run.pk, status="failed").first(),
            timeout=10,
            interval=0.2,
            message="the new cluster to fail the run of the dead one",
        )
        assert time.monotonic() - started < 10
        assert f"The worker process {run.worker_process} is gone" in run.error_message
        wait_for(lambda: not processes_of_job(job), timeout=5, interval=0.2, message="no process of the run left")
    except BaseException:
        stop_worker(second)
        raise
    return second, run


def test_a_cluster_killed_whole_is_noticed_within_seconds_of_the_next_start(transactional_db, tmp_path):
    from django.db import connection

    db_name = connection.settings_dict["NAME"]
    # The heartbeat limit stays at its default (60 s): what notices here is the new cluster, not the heartbeat.
    cluster = start_worker(db_name, tmp_path / "first.log")
    dataset = demo_dataset_create(name="killed cluster", images=40, seed=11)
    # 32 training tiles, batch 8: 4 iterations an epoch, 12 in all; killed after the second.
    run = training(training_run_create(dataset=dataset, parameters={"epochs": 3}).pk)
    second, run = kill_and_restart(cluster, run, db_name, tmp_path)
    try:
        retry = finished(training_run_retry(run=run).pk)
        assert retry.status == "succeeded", (retry.error_message, second.output()[-3000:])
    finally:
        stop_worker(second)


def test_a_silent_worker_of_another_host_is_failed_after_the_limit_and_its_pids_are_left_alone(
    transactional_db, tmp_path
):
    import subprocess
    import sys

    from django.db import connection

    limit = 4
    cluster = start_worker(
        connection.settings_dict["NAME"],
        tmp_path / "worker.log",
        DUMPSITE_HEARTBEAT_LIMIT=str(limit),
        DUMPSITE_WORKER_TICK="1",
        DUMPSITE_HOST_ID="this-host",
    )
    try:
        dataset = demo_dataset_create(name="far away", images=8, seed=12)
        last_beat = timezone.now()
        # A run that a worker of "that host" claimed (never queued here), which then falls silent.
        run = TrainingRun.objects.create(
            name="on another host",
            dataset=dataset,
            parameters={"epochs": 1},
            status="running",
            started_at=last_beat,
            heartbeat_at=last_beat,
            worker_host="that-host",
            worker_process="that-host:4242",
        )
        # A process here that looks exactly like that run's training: that host's pid means nothing to us.
        job = str(run.work_dir / "job.json")
        theirs = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "-m", "engine.child", job],
            start_new_session=True,
        )
        TrainingRun.objects.filter(pk=run.pk).update(worker_pid=theirs.pid, training_pid=theirs.pid)
        run = wait_for(
            lambda: TrainingRun.objects.filter(pk=run.pk, status="failed").first(),
            timeout=limit + 10,
            interval=0.2,
            message="this host's agent to fail the silent run",
        )
        assert run.finished_at - last_beat <= timedelta(seconds=limit + 5), (run.finished_at, last_beat)
        assert "stopped sending heartbeats" in run.error_message
        assert theirs.poll() is None  # this host never signalled the other host's pid
        theirs.kill()
    finally:
        stop_worker(cluster)


def test_a_detection_run_of_a_killed_cluster_fails_within_seconds_and_leaves_no_rows(transactional_db, tmp_path):
    import numpy as np
    from django.db import connection

    from datasets.orthophotos import orthophoto_store
    from detection.models import Detection
    from detection.services import detection_run_create
    from models_registry.services import trained_model_register_file
    from tests.detection.scenes import rotated, write_geotiff
    from tests.zoo import make_zoo_checkpoint

    db_name = connection.settings_dict["NAME"]
    cluster = start_worker(db_name, tmp_path / "first.log")
    # A model of random weights is enough: what matters is a child busy over many windows when its cluster dies.
    zoo = make_zoo_checkpoint(tmp_path / "zoo.pth", "retinanet_r18_tiny", num_classes=2, layout="3.x")
    model, _ = trained_model_register_file(checkpoint=zoo, name="random", architecture="retinanet_r18_tiny")
    dataset = demo_dataset_create(name="killed detection", images=4, seed=13)
    pixels = np.random.default_rng(3).integers(0, 255, (3072, 3072, 3), dtype=np.uint8)
    tif = write_geotiff(tmp_path / "area.tif", pixels, srid=32633, geotransform=rotated((500_000, 5_100_000), 0.2, 0))
    ortho = orthophoto_store(dataset=dataset, source=tif, name="area.tif")
    run = detection_run_create(model=model, orthophotos=[ortho], parameters={"tile_size": 256, "batch_size": 2})
    run = wait_for(
        lambda: TrainingRun.objects.filter(pk=run.pk, status="running", current_iter__gte=2).first(),
        timeout=180,
        message="the detection run to be over its windows",
    )
    second, run = kill_and_restart(cluster, run, db_name, tmp_path)
    try:
        assert not Detection.objects.filter(run=run).exists()
    finally:
        stop_worker(second)
