"""/metrics: closed unless a token or a network opens it; the platform's figures as the database holds them, in a
constant number of queries; django-prometheus's requests and queries; summed over gunicorn's processes."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEvent
from datasets.models import DatasetImport
from tests.conftest import wait_for, worker_env
from training.models import TrainingRun
from workers.gpus import gpu_memory
from workers.models import Worker

ROOT = Path(__file__).resolve().parents[2]


def scrape(client, **headers) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value."""
    answer = client.get("/metrics", **headers)
    assert answer.status_code == 200, answer.content
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.content.decode())
        for s in family.samples
    }


@pytest.fixture
def open_metrics(settings):
    settings.DUMPSITE_METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32"]


def test_metrics_are_closed_unless_a_token_or_a_network_opens_them(client, settings, db):
    answer = client.get("/metrics")
    assert answer.status_code == 403 and b"DUMPSITE_METRICS_TOKEN" in answer.content
    settings.DUMPSITE_METRICS_TOKEN = "t" * 40
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {'t' * 40}").status_code == 200
    settings.DUMPSITE_METRICS_TOKEN = ""
    settings.DUMPSITE_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403  # the test client comes from 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.post("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 405


def finished(run: TrainingRun, status: str, seconds: float, **fields) -> None:
    start = timezone.now() - timedelta(hours=1)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=status, started_at=start, finished_at=start + timedelta(seconds=seconds), **fields
    )


def test_the_platforms_figures_as_the_database_holds_them(world, client, open_metrics):
    from training.services import training_run_create

    def run(**kw):
        return training_run_create(dataset=world.dataset, created_by=world.users["admin"], **kw)

    for _ in range(3):
        run(parameters={"epochs": 1})
    TrainingRun.objects.filter(pk=run(parameters={"epochs": 1}).pk).update(
        created_at=timezone.now() - timedelta(seconds=600)
    )
    finished(world.run, "succeeded", 200, timings={"queued": 3, "export": 0.5, "training": 190, "registration": 2})
    finished(run(parameters={"epochs": 1}), "failed", 4000)
    TrainingRun.objects.filter(pk=world.detection_run.pk).update(
        status="succeeded", export_summary={"windows": 1234, "detections": 3}
    )
    DatasetImport.objects.create(key="a", status="succeeded", images_imported=70, created_by=world.users["admin"])
    DatasetImport.objects.create(key="b", status="failed", images_imported=5, created_by=world.users["admin"])
    DatasetImport.objects.create(key="c", status="queued", created_by=world.users["admin"])
    beat = timezone.now() - timedelta(seconds=5)
    Worker.objects.create(
        name="gpu-host:77",
        host="gpu-host",
        pid=77,
        gpus=["0"],
        heartbeat_at=beat,
        gpu_memory=[{"gpu": "0", "used_bytes": 3 * 2**30, "total_bytes": 80 * 2**30}],
    )
    Worker.objects.create(name="gone:1", host="gone", pid=1, heartbeat_at=beat, stopped_at=beat)
    AuditEvent.objects.create(action="failed", object_type="trainingrun", object_id=1, detail={"reaped": True})
    AuditEvent.objects.create(action="failed", object_type="trainingrun", object_id=2, detail={})

    m = scrape(client)
    assert m[("dumpsite_jobs_queued", (("device", "cpu"), ("kind", "train")))] == 4
    assert m[("dumpsite_jobs_queued", (("device", "cpu"), ("kind", "import")))] == 1
    assert 590 < m[("dumpsite_queue_oldest_seconds", (("kind", "train"),))] < 700
    assert m[("dumpsite_runs", (("kind", "train"), ("state", "queued")))] == 4
    assert m[("dumpsite_runs", (("kind", "train"), ("state", "failed")))] == 1
    assert m[("dumpsite_runs", (("kind", "detect"), ("state", "succeeded")))] == 1

    assert m[("dumpsite_run_duration_seconds_bucket", (("kind", "train"), ("le", "300.0")))] == 1
    assert m[("dumpsite_run_duration_seconds_bucket", (("kind", "train"), ("le", "7200.0")))] == 2
    assert m[("dumpsite_run_duration_seconds_bucket", (("kind", "train"), ("le", "+Inf")))] == 2
    assert m[("dumpsite_run_duration_seconds_count", (("kind", "train"),))] == 2
    assert m[("dumpsite_run_duration_seconds_sum", (("kind", "train"),))] == pytest.approx(4200)
    assert m[("dumpsite_run_phase_seconds_bucket", (("le", "1.0"), ("phase", "export")))] == 1
    assert m[("dumpsite_run_phase_seconds_bucket", (("le", "60.0"), ("phase", "training")))] == 0
    assert m[("dumpsite_run_phase_seconds_bucket", (("le", "300.0"), ("phase", "training")))] == 1
    assert m[("dumpsite_run_phase_seconds_sum", (("phase", "training"),))] == 190

    assert 4 < m[("dumpsite_worker_heartbeat_age_seconds", (("host", "gpu-host"), ("worker", "gpu-host:77")))] < 60
    assert not any(k[0] == "dumpsite_worker_heartbeat_age_seconds" and ("host", "gone") in k[1] for k in m)
    labels = (("gpu", "0"), ("host", "gpu-host"), ("worker", "gpu-host:77"))
    assert m[("dumpsite_gpu_memory_used_bytes", labels)] == 3 * 2**30
    assert m[("dumpsite_gpu_memory_total_bytes", labels)] == 80 * 2**30
    assert m[("dumpsite_dead_workers_found_total", ())] == 1
    assert m[("dumpsite_images_imported_total", ())] == 70
    assert m[("dumpsite_windows_detected_total", ())] == 1234
    assert m[("dumpsite_webhook_pending", ())] == 0

    # django-prometheus's own: requests by view and the database's queries.
    world.client("owner").get("/api/training-runs/")
    m = scrape(client)
    assert any(k[0] == "django_http_requests_total_by_view_transport_method_total" for k in m)
    assert any(k[0] == "django_db_execute_total" and v > 0 for k, v in m.items())


def test_a_scrape_costs_the_same_queries_with_ten_runs_or_a_hundred(world, client, open_metrics):
    def queries() -> int:
        with CaptureQueriesContext(connection) as seen:
            assert client.get("/metrics").status_code == 200
        return len(seen)

    def add(n):
        TrainingRun.objects.bulk_create(
            TrainingRun(
                name=f"r{i}",
                dataset=world.dataset,
                status=["queued", "succeeded", "failed"][i % 3],
                parameters={"device": ["cpu", "gpu"][i % 2]},
                timings={"training": i},
            )
            for i in range(n)
        )

    add(10)
    few = queries()
    add(90)
    assert queries() == few and 5 < few <= 15


def fake_tool(folder: Path, script: str) -> None:
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def test_gpu_memory_is_read_for_the_declared_gpus_and_nothing_breaks_without_the_tool(tmp_path, monkeypatch):
    """nvidia-smi stands in for the GPU this machine lacks (the one edge the tests cannot run)."""
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    fake_tool(tmp_path, 'echo "0, 1024, 81920"; echo "1, 512, 81920"; echo "2, 0, 16384"')
    assert gpu_memory(["0", "2"]) == [
        {"gpu": "0", "used_bytes": 1024 * 2**20, "total_bytes": 81920 * 2**20},
        {"gpu": "2", "used_bytes": 0, "total_bytes": 16384 * 2**20},
    ]
    assert gpu_memory([]) == []
    fake_tool(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert gpu_memory(["0"]) == []
    fake_tool(tmp_path, "sleep 5")
    began = time.monotonic()
    assert gpu_memory(["0"], timeout=0.5) == [] and time.monotonic() - began < 3
    monkeypatch.setenv("PATH", "/nonexistent")
    assert gpu_memory(["0"]) == []


def test_gunicorns_processes_are_summed(transactional_db, tmp_path):
    """Two gunicorn processes in multiprocess mode: /metrics counts every request, whichever process served it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = worker_env(
        connection.settings_dict["NAME"],
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DUMPSITE_METRICS_ALLOWED_NETWORKS="127.0.0.1/32",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    command = [sys.executable, "-m", "gunicorn", "-c", "python:dumpsite.gunicorn_conf", "dumpsite.wsgi"]
    with open(tmp_path / "web.log", "ab") as out:
        web = subprocess.Popen(
            [*command, "--bind", f"127.0.0.1:{port}", "--workers", "2"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
                    return answer.status, answer.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""
            except urllib.error.URLError:
                return 0, ""

        wait_for(lambda: get("/api/schema/")[0] == 200, timeout=60, message="gunicorn")
        for _ in range(30):
            assert get("/api/schema/")[0] == 200
        status, text = get("/metrics")
        assert status == 200, (tmp_path / "web.log").read_text()[-2000:]
        served = sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "django_http_responses_total_by_status_total" and s.labels.get("status") == "200"
        )
        assert served >= 31  # both processes' answers (the first poll and the 30), not one process's share
        assert len(list((tmp_path / "metrics").glob("*.db"))) >= 2
    finally:
        web.terminate()
        web.wait(timeout=30)


def test_the_grafana_dashboard_shows_only_metrics_that_exist(world, client, open_metrics):
    """Every metric the dashboard's expressions name is one /metrics declares (its families, also those without a
    sample yet, such as database errors)."""
    import json
    import re

    world.client("owner").get("/api/training-runs/")
    answer = client.get("/metrics")
    families = {f.name for f in text_string_to_metric_families(answer.content.decode())}  # with samples or not
    exported = {f + suffix for f in families for suffix in ("", "_total", "_bucket", "_sum", "_count")}
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    named = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:dumpsite|django)_[a-z_]+", target["expr"])
    }
    assert len(named) >= 15 and named <= exported, sorted(named - exported)
