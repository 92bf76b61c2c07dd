"""Runs across two hosts: two real worker clusters on this machine under different host identities and addresses
(127.0.0.1 and 127.0.0.2, both loopback), each with a scratch folder and a picture cache of its own and one CPU slot,
so that a run of two processes fits no single host. torchrun's c10d rendezvous on node 0's address, gloo on CPUs.
A run trains and registers its model; a cancel and a time limit end every rank on both hosts within seconds; a killed
host's worker fails the run within seconds with its name, leaves no process on either host, and the run resumes."""

from __future__ import annotations

import os
import signal
import time
import zipfile
from pathlib import Path

import psutil
import pytest
from django.db import connection

from core.storage import open_stored
from datasets.demo import demo_dataset_create
from models_registry.models import TrainedModel
from tests.conftest import start_worker, stop_worker, wait_for
from tests.e2e.waiting import finished, training
from training.models import RunNode, TrainingRun
from training.run_files import stored_events
from training.selectors import last_checkpoint
from training.services import training_run_cancel, training_run_create, training_run_resume
from workers.models import Worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HOSTS = {"node-a": "127.0.0.1", "node-b": "127.0.0.2"}
SILENCE = 5


def host(tmp_path: Path, name: str):
    folders = [tmp_path / name / key for key in ("runs", "cache")]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return start_worker(
        connection.settings_dict["NAME"],
        tmp_path / f"{name}.log",
        DUMPSITE_HOST_ID=name,
        DUMPSITE_HOST_ADDRESS=HOSTS[name],
        DUMPSITE_WORK_ROOT=str(folders[0]),
        DUMPSITE_HOST_CACHE_ROOT=str(folders[1]),
        DUMPSITE_WORKER_CPU_SLOTS="1",
        OMP_NUM_THREADS="1",  # one core each, as two hosts of one core would have: not both cores twice over
        MKL_NUM_THREADS="1",
        DUMPSITE_NODE_SILENCE=str(SILENCE),
        DUMPSITE_GANG_TIMEOUT="60",
        DUMPSITE_RENDEZVOUS_PORTS="29610-29619",
    )


@pytest.fixture
def two_hosts(tmp_path, settings):
    settings.TRAINING_WORKER_CPU_SLOTS = 1  # this (web) host's settings declare one slot too
    clusters = {name: host(tmp_path, name) for name in HOSTS}
    try:
        wait_for(
            lambda: (
                Worker.objects.filter(host__in=HOSTS, stopped_at__isnull=True).values("host").distinct().count() == 2
            ),
            timeout=60,
            message="both hosts' workers registered",
        )
        yield clusters
    finally:
        for cluster in clusters.values():
            if cluster.proc.poll() is None:
                stop_worker(cluster)


def rank_processes(tmp_path: Path) -> list[int]:
    """Every live training process (torchrun or a rank) of either host: their job files lie under tmp_path."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        live = proc.info["status"] != psutil.STATUS_ZOMBIE
        if live and "engine.child" in cmdline and any(str(tmp_path) in part for part in cmdline):
            found.append(proc.info["pid"])
    return found


def parts(run: TrainingRun) -> dict[str, RunNode]:
    return {p.host: p for p in RunNode.objects.filter(run=run, node_rank__isnull=False)}


def test_a_run_across_two_hosts_trains_and_registers_its_model(two_hosts, tmp_path):
    dataset = demo_dataset_create(name="two hosts", images=24, seed=21)
    run = training_run_create(dataset=dataset, parameters={"epochs": 2, "nodes": 2})
    # node-b trains from its own export, in its own scratch folder.
    job = wait_for(
        lambda: next((tmp_path / "node-b" / "runs").rglob("job.json"), None), timeout=300, message="node-b's job"
    )
    text = job.read_text()
    assert str(tmp_path / "node-b" / "runs") in text and str(tmp_path / "node-a") not in text
    run = finished(run.pk)
    assert run.status == "succeeded", f"{run.error_message}\n{run.log_tail[-3000:]}"
    placed = wait_for(
        lambda: (found := parts(run)) and {p.state for p in found.values()} == {"done"} and found,
        timeout=30,
        message="both hosts' parts ended",
    )
    assert {h: p.node_rank for h, p in placed.items()} == {"node-a": 0, "node-b": 1}
    assert placed["node-a"].port and 29610 <= placed["node-a"].port <= 29619
    assert run.worker_host == "node-a"  # node 0: its worker registered what rank 0 wrote
    assert run.device.startswith("2 processes x cpu"), run.device  # one world of two processes over two hosts
    model = TrainedModel.objects.get(source_run=run)
    assert [h["epoch"] for h in model.metrics_history] == [1, 2]
    assert model.bbox_mAP_50 is not None
    # Neither host keeps anything of the run in its scratch folder, and no process of it is left.
    for name in HOSTS:
        assert not any((tmp_path / name / "runs").rglob("*.json")), name
    assert not rank_processes(tmp_path)


def test_a_cancel_or_a_time_limit_ends_every_rank_on_both_hosts_within_seconds(two_hosts, tmp_path):
    dataset = demo_dataset_create(name="two hosts, cancelled", images=24, seed=22)
    run = training(training_run_create(dataset=dataset, parameters={"epochs": 8, "nodes": 2}).pk)
    assert len(rank_processes(tmp_path)) >= 4  # torchrun and one rank on each host
    training_run_cancel(run=run)
    started = time.monotonic()
    wait_for(lambda: not rank_processes(tmp_path), timeout=15, interval=0.2, message="no rank left on either host")
    assert time.monotonic() - started < 15
    run = finished(run.pk, timeout=30)
    assert run.status == "cancelled"
    wait_for(
        lambda: {p.state for p in parts(run).values()} == {"done"},
        timeout=30,
        message="both hosts' parts ended",
    )

    # The same hosts, a run with a time limit: node 0 stops its ranks when it runs out, and node 1's follow.
    limited = training_run_create(dataset=dataset, parameters={"epochs": 20, "nodes": 2}, time_limit_seconds=40)
    training(limited.pk)
    assert len(rank_processes(tmp_path)) >= 4
    limited = finished(limited.pk, timeout=120)
    ended = time.monotonic()
    assert limited.status == "failed" and "time limit of 40 s" in limited.error_message, limited.error_message
    wait_for(lambda: not rank_processes(tmp_path), timeout=15, interval=0.2, message="no rank left on either host")
    assert time.monotonic() - ended < 15
    wait_for(
        lambda: len(parts(limited)) == 2 and "running" not in {p.state for p in parts(limited).values()},
        timeout=30,
        message="both hosts' parts ended",
    )


def test_a_killed_host_fails_the_run_within_seconds_and_it_resumes(two_hosts, tmp_path):
    dataset = demo_dataset_create(name="two hosts, one killed", images=24, seed=23)
    # Six epochs: the host dies while epochs are left to train (it once died in the last one's validation, and
    # a resume then has nothing left to do: tests/training/test_faults.py).
    run = training_run_create(dataset=dataset, parameters={"epochs": 6, "nodes": 2})
    wait_for(
        lambda: last_checkpoint(run) and any(e["event"] == "val" for e in stored_events(run.pk)),
        timeout=300,
        message="the first epoch's checkpoint stored",
    )
    # node-b's whole worker dies (its cluster, its task process and so its ranks: they end with their worker).
    os.killpg(two_hosts["node-b"].proc.pid, signal.SIGKILL)
    two_hosts["node-b"].proc.wait()
    started = time.monotonic()
    run = finished(run.pk, timeout=SILENCE + 20)
    assert time.monotonic() - started < SILENCE + 20
    assert run.status == "failed", run.status
    assert "node-b (node 1 of 2) stopped answering" in run.error_message, run.error_message
    wait_for(lambda: not rank_processes(tmp_path), timeout=15, interval=0.2, message="no rank left on either host")
    assert not TrainedModel.objects.filter(source_run=run).exists()
    checkpoint = last_checkpoint(run)
    with open_stored(checkpoint) as fh, zipfile.ZipFile(fh) as archive:  # whole: node 0 stored it once written
        assert archive.testzip() is None

    # node-b's worker back: the run resumes from the checkpoint node 0 stored, on both hosts again.
    two_hosts["node-b"] = host(tmp_path, "node-b")
    resumed = finished(training_run_resume(run=run).pk)
    assert resumed.status == "succeeded", f"{resumed.error_message}\n{resumed.log_tail}"
    start = next(e for e in stored_events(resumed.pk) if e["event"] == "start")
    assert start["resumed_iter"] > 0
    assert len(parts(resumed)) == 2
    wait_for(lambda: {p.state for p in parts(resumed).values()} == {"done"}, timeout=30, message="both parts done")
    assert TrainedModel.objects.filter(source_run=resumed).count() == 1
