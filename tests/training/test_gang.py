"""Runs across several hosts without a training: the `nodes` parameter, the refusal of a run the site's hosts could
not take together, the gang's reservations and claim, a reservation that runs out, the rendezvous' command line,
and how a lost or failed host is told (unit level; tests/e2e/test_nodes.py trains across two real workers)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import ApplicationError
from engine.child import check_node_rank
from engine.supervisor import Rendezvous, child_argv
from scheduler.gang import gang_wait
from scheduler.queue import free_capacity, next_run_for, training_run_claim_next
from training.execution.nodes import problem_of
from training.models import RunNode, TrainingRun
from training.services import run_node_beat, run_node_end, training_run_cancel, training_run_create
from workers.models import Worker

pytestmark = pytest.mark.django_db


def worker(host: str, address: str, *, cpu_slots: int = 2) -> Worker:
    return Worker.objects.create(
        name=f"{host}:1",
        host=host,
        address=address,
        pid=1,
        cpu_slots=cpu_slots,
        processes=2,
        heartbeat_at=timezone.now(),
    )


def queued(dataset, **params) -> TrainingRun:
    return training_run_create(dataset=dataset, parameters={"epochs": 1, **params})


@pytest.fixture
def one_slot_here(settings):
    settings.TRAINING_WORKER_CPU_SLOTS = 1
    settings.DUMPSITE_HOST_ADDRESS = ""  # this host's settings take no part in runs across hosts


def test_nodes_is_a_checked_parameter_and_multiplies_the_batch(make_dataset, one_slot_here):
    dataset = make_dataset()
    worker("a", "10.0.0.1")
    worker("b", "10.0.0.2")
    run = queued(dataset, nodes=2, processes=2, batch_size=4)
    assert run.parameters["nodes"] == 2
    from engine.params import total_batch_size

    assert total_batch_size(run.parameters) == 16
    assert queued(dataset).parameters["nodes"] == 1
    for bad in (0, 17, 1.5):
        with pytest.raises(ApplicationError, match="Invalid training parameters") as refused:
            queued(dataset, nodes=bad)
        assert set(refused.value.extra) == {"nodes"}


def test_a_run_across_more_hosts_than_the_site_has_is_refused_with_the_reason(make_dataset, one_slot_here):
    dataset = make_dataset()
    worker("a", "10.0.0.1")
    worker("b-without-address", "")  # the others could not reach it
    with pytest.raises(ApplicationError, match=r"No 2 hosts of this site could take this run together") as refused:
        queued(dataset, nodes=2)
    assert "the site has 1" in str(refused.value) and "DUMPSITE_HOST_ADDRESS" in str(refused.value)
    assert refused.value.extra == {"nodes": "at most 1 host of this site could take a part"}
    worker("c", "10.0.0.3", cpu_slots=1)
    with pytest.raises(ApplicationError, match="No 2 hosts"):
        queued(dataset, nodes=2, processes=2)  # c could not take a part of two processes
    assert queued(dataset, nodes=2).status == "queued"


def test_the_gang_is_claimed_once_every_host_reserved_with_node_ranks_by_address(make_dataset, one_slot_here):
    dataset = make_dataset()
    a, b = worker("a", "10.0.0.9"), worker("b", "10.0.0.10")
    run = queued(dataset, nodes=2)
    behind = queued(dataset)  # a one-host run queued after it

    part = training_run_claim_next(worker=a)
    assert isinstance(part, RunNode) and (part.host, part.state, part.node_rank) == ("a", "reserved", None)
    assert TrainingRun.objects.get(pk=run.pk).status == "queued"  # not until every host is there
    assert free_capacity(a).cpu_slots == 1  # the reservation holds its slot
    # a's next take passes the run it waits on: the run behind it is not held up by the missing host.
    taken = training_run_claim_next(worker=a)
    assert isinstance(taken, TrainingRun) and taken.pk == behind.pk

    part_b = training_run_claim_next(worker=b)
    assert isinstance(part_b, RunNode)
    run.refresh_from_db()
    assert run.status == "running"
    ranks = {p.host: p.node_rank for p in RunNode.objects.filter(run=run)}
    # Ranked as torch's c10d rendezvous ranks them: by the address as text ("10.0.0.10" < "10.0.0.9").
    assert ranks == {"b": 0, "a": 1}
    assert (run.worker_id, run.worker_host) == (b.pk, "b")
    assert set(RunNode.objects.filter(run=run).values_list("state", flat=True)) == {"running"}
    # Node 1's part still holds its slot on a while the run runs (node 0's counts as b's run).
    assert free_capacity(a).cpu_slots == 2 - 1 - 1 and free_capacity(b).cpu_slots == 1


def test_one_address_or_one_host_reserves_one_part(make_dataset, one_slot_here):
    dataset = make_dataset()
    a, twin = worker("a", "10.0.0.1"), worker("twin", "10.0.0.1")
    worker("c", "10.0.0.3")
    run = queued(dataset, nodes=2)
    assert isinstance(training_run_claim_next(worker=a), RunNode)
    assert next_run_for(twin)[0] is not None  # it would take the run, but its address already has a part
    assert training_run_claim_next(worker=twin) is None
    assert RunNode.objects.filter(run=run).count() == 1


def test_a_reservation_that_runs_out_frees_the_host_and_pauses_it(make_dataset, one_slot_here, settings):
    settings.DUMPSITE_GANG_TIMEOUT = 0.5
    dataset = make_dataset()
    a = worker("a", "10.0.0.1")
    worker("b", "10.0.0.2")
    run = queued(dataset, nodes=2)
    part = training_run_claim_next(worker=a)
    woken: list[int] = []
    assert gang_wait(part, lambda: woken.append(1), poll=0.05) is None
    assert woken == [1]  # asked for a take at once (the other hosts' clusters may be idle), not after 5 s
    part.refresh_from_db()
    assert part.state == "gave_up"
    assert TrainingRun.objects.get(pk=run.pk).status == "queued"
    assert free_capacity(a).cpu_slots == 2  # nothing held
    assert next_run_for(a)[0] is None  # paused on this run
    RunNode.objects.filter(pk=part.pk).update(reserved_until=timezone.now() - timedelta(seconds=1))
    again = training_run_claim_next(worker=a)
    assert isinstance(again, RunNode) and again.state == "reserved"


def test_a_reservation_its_host_stopped_holding_is_not_counted_in_the_gang(make_dataset, one_slot_here, settings):
    settings.DUMPSITE_NODE_SILENCE = 10
    dataset = make_dataset()
    a, b, c = worker("a", "10.0.0.1"), worker("b", "10.0.0.2"), worker("c", "10.0.0.3")
    run = queued(dataset, nodes=2)
    dead = training_run_claim_next(worker=a)
    # a's worker died while it waited: its reservation was last held 11 s ago, and b does not gather with it.
    RunNode.objects.filter(pk=dead.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=11))
    part_b = training_run_claim_next(worker=b)
    assert isinstance(part_b, RunNode) and part_b.state == "reserved"
    assert TrainingRun.objects.get(pk=run.pk).status == "queued"
    assert list(RunNode.objects.filter(run=run).values_list("host", flat=True)) == ["b"]
    # A waiting host holds its part: b's wait keeps it counted, and c completes the gang with b.
    settings.DUMPSITE_GANG_TIMEOUT = 1.5
    RunNode.objects.filter(pk=part_b.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=9.5), reserved_until=timezone.now() + timedelta(seconds=1.2)
    )
    assert gang_wait(part_b, lambda: None, poll=0.05) is None  # ran out: nobody came meanwhile
    part_b.refresh_from_db()
    assert part_b.state == "gave_up" and timezone.now() - part_b.heartbeat_at < timedelta(seconds=2)
    RunNode.objects.filter(pk=part_b.pk).update(state="reserved", reserved_until=timezone.now() + timedelta(seconds=30))
    assert isinstance(training_run_claim_next(worker=c), RunNode)
    assert dict(RunNode.objects.filter(run=run).values_list("host", "node_rank")) == {"b": 0, "c": 1}


def test_a_run_cancelled_while_its_hosts_gather_releases_them(make_dataset, one_slot_here):
    dataset = make_dataset()
    a = worker("a", "10.0.0.1")
    worker("b", "10.0.0.2")
    run = queued(dataset, nodes=2)
    part = training_run_claim_next(worker=a)
    training_run_cancel(run=run)
    assert gang_wait(part, lambda: None, poll=0.05) is None
    assert not RunNode.objects.filter(run=run).exists()
    assert free_capacity(a).cpu_slots == 2


def test_a_lost_or_failed_host_is_told_by_name(make_dataset, one_slot_here, settings):
    settings.DUMPSITE_NODE_SILENCE = 5
    dataset = make_dataset()
    a, b = worker("a", "10.0.0.1"), worker("b", "10.0.0.2")
    run = queued(dataset, nodes=2)
    training_run_claim_next(worker=a)
    training_run_claim_next(worker=b)
    run.refresh_from_db()
    assert problem_of(run, 0) is None
    b_part = RunNode.objects.get(run=run, host="b")
    RunNode.objects.filter(pk=b_part.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=8))
    assert problem_of(run, 0).startswith("The worker of host b (node 1 of 2) stopped answering (no heartbeat for 8 s)")
    assert problem_of(run, 0, only=1) is not None and problem_of(run, 1) is None  # a (node 0) still beats
    run_node_beat(node_id=b_part.pk)
    assert problem_of(run, 0) is None
    run_node_end(node_id=b_part.pk, failed="process 1 of 2: RuntimeError: out of memory")
    assert problem_of(run, 0) == (
        "The run's processes on host b (node 1 of 2) failed: process 1 of 2: RuntimeError: out of memory"
    )


def test_the_rendezvous_command_line(tmp_path):
    job = tmp_path / "job.json"
    first = Rendezvous("dumpsite-run-7", 2, 0, ("10.0.0.1", 29400), "10.0.0.1", 600)
    argv = child_argv(job, "engine.child", 2, first)
    assert argv[argv.index("torch.distributed.run") + 1 :] == [
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=10.0.0.1:29400",
        "--rdzv-id=dumpsite-run-7",
        "--rdzv-conf=is_host=1,join_timeout=600",
        "--local-addr=10.0.0.1",
        "--nproc-per-node=2",
        "--max-restarts=0",
        "-m",
        "engine.child",
        str(job),
    ]
    other = Rendezvous("dumpsite-run-7", 2, 1, ("fd00::1", 29400), "fd00::2", 600)
    argv = child_argv(job, "engine.child", 1, other)
    assert "--rdzv-endpoint=[fd00::1]:29400" in argv and "--rdzv-conf=is_host=0,join_timeout=600" in argv
    assert "--standalone" not in argv and "--nproc-per-node=1" in argv


def test_a_rank_refuses_a_rendezvous_that_ranked_its_host_otherwise(monkeypatch):
    monkeypatch.setenv("DUMPSITE_NODE_RANK", "1")
    monkeypatch.setenv("GROUP_RANK", "1")
    check_node_rank()
    monkeypatch.setenv("GROUP_RANK", "0")
    with pytest.raises(RuntimeError, match="The rendezvous made this host node 0, the platform node 1"):
        check_node_rank()


def test_each_host_of_a_gpu_run_gives_its_ranks_its_own_gpus(make_dataset, one_slot_here, settings):
    from training.execution.common import child_environment_of

    settings.TRAINING_WORKER_GPUS = []
    dataset = make_dataset()
    a = Worker.objects.create(
        name="a:1", host="a", address="10.0.0.1", pid=1, gpus=["0", "1"], processes=1, heartbeat_at=timezone.now()
    )
    b = Worker.objects.create(
        name="b:1", host="b", address="10.0.0.2", pid=1, gpus=["2", "3"], processes=1, heartbeat_at=timezone.now()
    )
    run = queued(dataset, nodes=2, processes=2, device="gpu")
    training_run_claim_next(worker=a)
    training_run_claim_next(worker=b)
    run.refresh_from_db()
    parts = {p.host: p for p in RunNode.objects.filter(run=run)}
    assert (parts["a"].gpus, parts["b"].gpus, run.assigned_gpus) == (["0", "1"], ["2", "3"], ["0", "1"])
    assert child_environment_of(run)["CUDA_VISIBLE_DEVICES"] == "0,1"  # node 0
    assert child_environment_of(run, gpus=parts["b"].gpus)["CUDA_VISIBLE_DEVICES"] == "2,3"  # node 1, on b
    assert free_capacity(b).gpus == () and free_capacity(a).gpus == ()
