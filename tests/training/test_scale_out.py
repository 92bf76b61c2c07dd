"""Scale-out without a training: what runs ask for, what workers have, queue order, host identity (unit level)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from core.errors import ApplicationError
from engine.supervisor import child_argv, kill_job_processes, processes_of_job, resource_environment
from scheduler.queue import free_capacity, next_run_for, training_run_claim_next, training_runs_offer
from scheduler.reaper import training_runs_reap_stale
from training.models import TrainingRun
from training.services import training_run_create, training_run_fail
from workers.models import Worker
from workers.resources import Capacity, Need, need_of
from workers.services import worker_register

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


def worker(name: str, *, gpus=(), cpu_slots: int = 2, processes: int = 2, host: str = "host-a") -> Worker:
    return Worker.objects.create(
        name=name,
        host=host,
        pid=1,
        gpus=list(gpus),
        cpu_slots=cpu_slots,
        processes=processes,
        heartbeat_at=timezone.now(),
    )


def queued(dataset, name: str, **params) -> TrainingRun:
    return training_run_create(dataset=dataset, name=name, parameters={"epochs": 1, **params})


# --- what a run asks for -------------------------------------------------------------------------------------------


def test_processes_and_device_are_checked_parameters_and_the_batch_is_per_process(make_dataset):
    dataset = make_dataset()
    run = queued(dataset, "two", processes=2, batch_size=4)
    assert (run.parameters["processes"], run.parameters["device"]) == (2, "cpu")
    assert need_of(run.parameters) == Need("cpu", 2)
    for bad in ({"processes": 0}, {"processes": 65}, {"processes": 1.5}, {"device": "tpu"}):
        with pytest.raises(ApplicationError, match="Invalid training parameters") as refused:
            queued(dataset, "bad", **bad)
        assert set(refused.value.extra) == set(bad)


def test_the_api_shows_processes_and_the_total_batch(make_dataset, api_client, admin_user):
    dataset = make_dataset()
    api_client.force_authenticate(admin_user)
    created = api_client.post(
        "/api/training-runs/",
        {"dataset": dataset.pk, "parameters": {"processes": 2, "batch_size": 4}, "priority": "high"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["processes"], body["total_batch_size"], body["priority"]) == (2, 8, "high")
    assert body["worker"] is None and body["assigned_gpus"] == []


def test_a_run_no_worker_could_ever_take_is_refused_with_the_reason(make_dataset, settings):
    dataset = make_dataset()
    settings.TRAINING_WORKER_CPU_SLOTS = 2
    settings.TRAINING_WORKER_GPUS = []
    with pytest.raises(ApplicationError, match="needs 4 CPU slots .* has no GPU, 2 CPU slots") as refused:
        queued(dataset, "too wide", processes=4)
    assert "processes" in refused.value.extra
    with pytest.raises(ApplicationError, match="needs 1 GPU"):
        queued(dataset, "no gpu here", device="gpu")
    assert TrainingRun.objects.count() == 0

    # A worker that declared 4 GPUs lately makes both possible; one not seen for longer than the site forgets does not.
    old = worker("gone:1", gpus=["0", "1", "2", "3"], cpu_slots=4)
    Worker.objects.filter(pk=old.pk).update(heartbeat_at=timezone.now() - timedelta(days=30))
    with pytest.raises(ApplicationError, match="needs 2 GPUs"):
        queued(dataset, "still nothing", device="gpu", processes=2)
    worker("big:1", gpus=["0", "1", "2", "3"], cpu_slots=4)
    assert queued(dataset, "fits now", device="gpu", processes=4).parameters["device"] == "gpu"
    assert queued(dataset, "cpu fits now", processes=4).status == "queued"


def test_mixed_precision_needs_a_gpu_run(make_dataset, settings):
    settings.TRAINING_WORKER_GPUS = ["0"]
    dataset = make_dataset()
    with pytest.raises(ApplicationError, match="needs a GPU") as refused:
        queued(dataset, "amp on cpu", amp=True, device="cpu")
    assert "amp" in refused.value.extra
    assert queued(dataset, "amp on gpu", amp=True, device="gpu").parameters["amp"] is True


# --- what a worker takes -------------------------------------------------------------------------------------------


def test_gpu_runs_get_their_own_gpus_and_a_wider_run_waits_until_enough_are_free(make_dataset, settings):
    settings.TRAINING_WORKER_GPUS = ["0", "1"]
    dataset = make_dataset()
    host = worker("gpu-host:1", gpus=["0", "1"], processes=3)
    first = queued(dataset, "1 gpu", device="gpu")
    second = queued(dataset, "1 gpu more", device="gpu")
    wide = queued(dataset, "2 gpus", device="gpu", processes=2)

    assert training_run_claim_next(worker=host).pk == first.pk
    assert training_run_claim_next(worker=host).pk == second.pk
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.assigned_gpus, second.assigned_gpus) == (["0"], ["1"])
    assert first.worker == second.worker == host and first.status == second.status == "running"
    assert free_capacity(host) == Capacity(gpus=(), cpu_slots=2)

    assert training_run_claim_next(worker=host) is None  # both GPUs busy: the 2-GPU run waits
    training_run_fail(run_id=first.pk, message="done")
    assert training_run_claim_next(worker=host) is None  # one is free: still not enough
    training_run_fail(run_id=second.pk, message="done")
    assert training_run_claim_next(worker=host).pk == wide.pk
    wide.refresh_from_db()
    assert wide.assigned_gpus == ["0", "1"]


def test_a_wide_run_is_not_overtaken_by_smaller_ones_behind_it(make_dataset, settings):
    settings.TRAINING_WORKER_GPUS = ["0", "1"]
    dataset = make_dataset()
    host = worker("gpu-host:2", gpus=["0", "1"], processes=3)
    busy = queued(dataset, "busy", device="gpu")
    assert training_run_claim_next(worker=host).pk == busy.pk
    wide = queued(dataset, "wide", device="gpu", processes=2)
    small = queued(dataset, "small", device="gpu")
    assert training_run_claim_next(worker=host) is None  # GPU 1 stays free for the wide run, not the small one
    training_run_fail(run_id=busy.pk, message="done")
    assert training_run_claim_next(worker=host).pk == wide.pk
    small.refresh_from_db()
    assert small.status == "queued"


def test_a_worker_skips_runs_it_could_never_take(make_dataset, settings):
    settings.TRAINING_WORKER_GPUS = ["0"]
    dataset = make_dataset()
    cpu_only = worker("cpu-host:1", gpus=[], cpu_slots=2)
    gpu_run = queued(dataset, "gpu", device="gpu")
    cpu_run = queued(dataset, "cpu", device="cpu")
    assert training_run_claim_next(worker=cpu_only).pk == cpu_run.pk
    gpu_run.refresh_from_db()
    assert gpu_run.status == "queued"


def test_high_priority_goes_first_then_first_come_first_served(make_dataset, admin_user):
    dataset = make_dataset()
    host = worker("cpu-host:2", cpu_slots=8, processes=8)
    early = queued(dataset, "early")
    late = queued(dataset, "late")
    urgent = training_run_create(dataset=dataset, name="urgent", created_by=admin_user, priority="high")
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(admin_user)
    listed = client.get("/api/training-runs/", {"priority": "high"}).json()["results"]
    assert [r["id"] for r in listed] == [urgent.pk]

    order = [training_run_claim_next(worker=host).pk for _ in range(3)]
    assert order == [urgent.pk, early.pk, late.pk]
    on_host = client.get("/api/training-runs/", {"host": "host-a", "ordering": "-priority"}).json()["results"]
    assert [r["id"] for r in on_host][0] == urgent.pk and {r["worker"] for r in on_host} == {"cpu-host:2"}


def test_high_priority_needs_the_permission(make_dataset, roles, django_user_model, api_client):
    from django.contrib.auth.models import Group

    dataset = make_dataset()
    trainer = django_user_model.objects.create_user("trainer-p", password="x")
    trainer.groups.add(Group.objects.get(name="Trainer"))
    from guardian.shortcuts import assign_perm

    assign_perm("datasets.view_dataset", trainer, dataset)
    assign_perm("datasets.use_dataset", trainer, dataset)
    with pytest.raises(PermissionDenied, match="high priority"):
        training_run_create(dataset=dataset, created_by=trainer, priority="high")
    with pytest.raises(ApplicationError, match="Invalid priority"):
        training_run_create(dataset=dataset, created_by=trainer, priority="urgent")
    api_client.force_authenticate(trainer)
    refused = api_client.post("/api/training-runs/", {"dataset": dataset.pk, "priority": "high"}, format="json")
    assert refused.status_code == 403, refused.json()
    assert TrainingRun.objects.count() == 0
    normal = api_client.post("/api/training-runs/", {"dataset": dataset.pk}, format="json")
    assert normal.status_code == 201 and normal.json()["priority"] == "normal"


def test_an_idle_worker_asks_for_a_take_when_a_run_it_could_take_waits(make_dataset):
    from django_q.models import OrmQ

    dataset = make_dataset()
    host = worker("cpu-host:3", cpu_slots=2, processes=1)
    run = queued(dataset, "waiting")
    before = OrmQ.objects.count()
    assert training_runs_offer(host, waited=3600) is None  # it has not waited that long
    assert training_runs_offer(host, waited=0) == run.pk
    assert OrmQ.objects.count() == before + 1
    assert training_runs_offer(host, waited=0, skip={run.pk}) is None  # asked lately
    assert training_run_claim_next(worker=host).pk == run.pk
    queued(dataset, "next")
    assert training_runs_offer(host, waited=0) is None  # its one process is busy
    assert next_run_for(host)[0] is not None


def test_a_worker_registers_what_its_host_declares(settings):
    settings.DUMPSITE_HOST_ID = "gpu-box-7"
    settings.TRAINING_WORKER_GPUS = ["2", "3"]
    settings.TRAINING_WORKER_CPU_SLOTS = 6
    forgotten = worker("long-gone:1")
    Worker.objects.filter(pk=forgotten.pk).update(heartbeat_at=timezone.now() - timedelta(days=30))
    registered = worker_register(pid=4242, processes=2)
    assert not Worker.objects.filter(pk=forgotten.pk).exists()  # unseen for longer than the site remembers
    assert (registered.name, registered.host, registered.gpus, registered.cpu_slots, registered.processes) == (
        "gpu-box-7:4242",
        "gpu-box-7",
        ["2", "3"],
        6,
        2,
    )
    assert registered.describe_resources() == "GPUs 2,3; 6 CPU slots"


# --- the child's environment and processes -------------------------------------------------------------------------


def test_the_child_environment_carries_the_runs_gpus_and_thread_shares():
    base = {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    gpu = resource_environment(base, device="gpu", gpus=["2", "3"], processes=2, cpu_count=16)
    assert (gpu["CUDA_VISIBLE_DEVICES"], gpu["OMP_NUM_THREADS"], gpu["MKL_NUM_THREADS"]) == ("2,3", "8", "8")
    cpu = resource_environment(base, device="cpu", processes=1, cpu_count=16)
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and "OMP_NUM_THREADS" not in cpu  # a CPU run sees no GPU of the host
    kept = resource_environment({"OMP_NUM_THREADS": "3"}, device="cpu", processes=4, cpu_count=2)
    assert (kept["OMP_NUM_THREADS"], kept["MKL_NUM_THREADS"]) == ("3", "1")  # the operator's setting wins


def test_several_processes_start_under_torchrun(tmp_path):
    job = tmp_path / "job.json"
    assert child_argv(job, "engine.child")[1:] == ["-m", "engine.child", str(job)]
    argv = child_argv(job, "engine.child", processes=3)
    assert argv[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3"]
    assert argv[-3:] == ["-m", "engine.child", str(job)]


def fake_rank(job_file) -> subprocess.Popen:
    """A process whose command line looks like a rank of the training child of ``job_file`` (a session of its own,
    as torchrun starts them)."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-m", "engine.child", str(job_file)],
        start_new_session=True,
    )


def test_every_process_of_a_job_is_found_and_ended_and_no_other(tmp_path):
    job = tmp_path / "run-1" / "job.json"
    ranks = [fake_rank(job) for _ in range(2)]
    other = fake_rank(tmp_path / "run-2" / "job.json")
    try:
        assert sorted(processes_of_job(job)) == sorted(p.pid for p in ranks)
        assert sorted(kill_job_processes(job)) == sorted(p.pid for p in ranks)
        assert [p.wait(timeout=5) for p in ranks] == [-9, -9]
        assert other.poll() is None and processes_of_job(job) == []
    finally:
        for proc in (*ranks, other):
            proc.kill()


def test_a_reaper_never_signals_processes_of_another_hosts_runs(make_dataset, settings):
    settings.DUMPSITE_HOST_ID = "host-a"
    dataset = make_dataset()
    runs = {}
    for host in ("host-a", "host-b"):
        run = training_run_create(dataset=dataset, name=f"on {host}")
        TrainingRun.objects.filter(pk=run.pk).update(
            status="running", worker_host=host, heartbeat_at=timezone.now() - timedelta(seconds=600)
        )
        runs[host] = run
    procs = {host: fake_rank(run.work_dir / "job.json") for host, run in runs.items()}
    TrainingRun.objects.filter(pk=runs["host-b"].pk).update(training_pid=procs["host-b"].pid)
    try:
        assert sorted(training_runs_reap_stale(limit_seconds=60)) == sorted(r.pk for r in runs.values())
        assert procs["host-a"].wait(timeout=5) == -9  # this host's orphan: killed, found by its command line
        assert procs["host-b"].poll() is None  # the other host's run is failed, its pids left alone
        assert set(
            TrainingRun.objects.filter(pk__in=[r.pk for r in runs.values()]).values_list("status", flat=True)
        ) == {"failed"}
    finally:
        for proc in procs.values():
            proc.kill()


def test_the_admin_lists_workers_with_what_they_are_busy_with_for_those_allowed(
    make_dataset, roles, django_user_model, client
):
    from django.contrib.auth.models import Group

    dataset = make_dataset()
    host = worker("gpu-host:9", gpus=["0", "1"], processes=2)
    run = queued(dataset, "busy one", device="cpu")
    assert training_run_claim_next(worker=host).pk == run.pk
    old = worker("old-host:3", host="old-host")
    Worker.objects.filter(pk=old.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    admin = django_user_model.objects.create_user("admin-w", password="x", is_staff=True)
    admin.groups.add(Group.objects.get(name="Administrator"))
    trainer = django_user_model.objects.create_user("trainer-w", password="x", is_staff=True)
    trainer.groups.add(Group.objects.get(name="Trainer"))

    client.force_login(admin)
    page = client.get("/admin/workers/worker/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "gpu-host:9" in html and "GPUs 0,1; 2 CPU slots" in html and f"#{run.pk} busy one" in html
    assert "alive" in html and "silent for" in html  # the old host's worker has not been heard of for an hour
    assert client.get(f"/admin/workers/worker/{host.pk}/change/").status_code == 200
    assert client.post(f"/admin/workers/worker/{host.pk}/delete/").status_code == 403  # workers register themselves

    moved = client.get(f"/admin/training/worker/{host.pk}/change/?x=1")  # the page before Worker had its own app
    assert moved.status_code == 301 and moved["Location"] == f"/admin/workers/worker/{host.pk}/change/?x=1"

    client.force_login(trainer)
    assert client.get("/admin/workers/worker/").status_code == 403
