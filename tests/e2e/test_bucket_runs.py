"""Training with the files in a real S3 server (SeaweedFS on the loopback address) and workers whose media, runs and
cache folders are their own empty ones, not the web's: the dataset's pictures reach a worker only through the bucket
(into its host cache), a run's log, events and checkpoints come back only through it, a cancelled run resumes on
another "host" from the checkpoint the first one stored, and the next run on that host downloads no picture."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from django.db import connection

from core.storage import bucket_key, open_stored, s3_client, stored_names
from datasets.demo import demo_dataset_create
from models_registry.models import TrainedModel
from tests.conftest import start_worker, stop_worker, wait_for
from tests.e2e.waiting import finished, training
from training.models import TrainingRun
from training.run_files import stored_events, stored_log_tail
from training.selectors import last_checkpoint, run_log_tail, run_metrics
from training.services import training_run_cancel, training_run_create, training_run_resume, training_run_retry

pytestmark = pytest.mark.django_db(transaction=True)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def host(s3_server, bucket, root: Path, name: str):
    """A worker on a 'host' of its own: the bucket for files, empty folders of its own for the rest."""
    folders = {key: root / name / key for key in ("media", "runs", "cache")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    worker = start_worker(
        connection.settings_dict["NAME"],
        root / f"{name}.log",
        **s3_server.environment(bucket.prefix),
        DUMPSITE_MEDIA_ROOT=str(folders["media"]),
        DUMPSITE_WORK_ROOT=str(folders["runs"]),
        DUMPSITE_HOST_CACHE_ROOT=str(folders["cache"]),
        DUMPSITE_HOST_ID=name,
    )
    return worker, folders


def test_runs_share_nothing_but_the_database_and_the_bucket(s3_server, bucket_storage, tmp_path, settings):
    dataset = demo_dataset_create(name="in the bucket", images=40, seed=4)
    pictures = list(dataset.images.values_list("image", flat=True))
    assert not files_under(Path(settings.MEDIA_ROOT) / "datasets" / str(dataset.pk))  # the web kept none on disk
    head = s3_client().head_object(Bucket=bucket_storage.name, Key=bucket_key(pictures[0]))
    assert head["ContentLength"] > 0

    # Host A trains until its first checkpoint is stored, and the run is cancelled.
    worker_a, a = host(s3_server, bucket_storage, tmp_path, "host-a")
    try:
        run = training_run_create(dataset=dataset, parameters={"epochs": 3})
        wait_for(
            lambda: last_checkpoint(run) and any(e["event"] == "val" for e in stored_events(run.pk)),
            timeout=300,
            message="the first epoch's checkpoint and validation in the bucket",
        )
        live = wait_for(lambda: run_log_tail(TrainingRun.objects.get(pk=run.pk)), timeout=30, message="a live log")
        assert "Epoch(train)" in live  # what the web shows of a training run comes from the bucket
        training_run_cancel(run=run)
        run = finished(run.pk)
        wait_for(lambda: not files_under(a["runs"]), timeout=20, message="host A's scratch folder removed")
    finally:
        stop_worker(worker_a)
    assert run.status == "cancelled"
    checkpoint = last_checkpoint(run)
    assert checkpoint is not None and checkpoint.startswith(f"runs/{run.pk}/checkpoints/epoch_")
    with open_stored(checkpoint) as fh, zipfile.ZipFile(fh) as archive:  # whole: torch.save writes a zip archive
        assert archive.testzip() is None
    cached = files_under(a["cache"])
    assert len(cached) == len(pictures) and not files_under(a["media"])  # pictures came only from the bucket
    assert run.export_summary["cache"] == {
        "hits": 0,
        "misses": len(pictures),
        "bytes_fetched": sum(p.stat().st_size for p in cached),
    }

    # Host B, which never saw the run, resumes it from the checkpoint in the bucket and registers its model.
    worker_b, b = host(s3_server, bucket_storage, tmp_path, "host-b")
    try:
        resumed = finished(training_run_resume(run=run).pk)
        assert resumed.status == "succeeded", f"{resumed.error_message}\n{resumed.log_tail[-3000:]}"
        assert (run.worker_host, resumed.worker_host) == ("host-a", "host-b")
        start = next(e for e in stored_events(resumed.pk) if e["event"] == "start")
        assert start["resumed_iter"] > 0  # continued from host A's epoch, not restarted
        model = TrainedModel.objects.get(source_run=resumed)
        assert [h["epoch"] for h in model.metrics_history] == [1, 2, 3]
        assert model.checkpoint.name in stored_names(f"models/{model.artifact_key}")
        assert run_metrics(resumed)["iterations"] and stored_log_tail(resumed.pk) == resumed.log_tail

        # The next run on host B's dataset downloads no picture: every one is a hit of its cache.
        again = finished(training_run_create(dataset=dataset, parameters={"epochs": 1}).pk)
        assert again.status == "succeeded", again.error_message
        assert again.export_summary["cache"] == {"hits": len(pictures), "misses": 0, "bytes_fetched": 0}
    finally:
        stop_worker(worker_b)
    # Neither host kept anything of the runs on its disk, nor wrote into a media folder.
    assert not files_under(a["runs"]) and not files_under(b["runs"])
    assert not files_under(a["media"]) and not files_under(b["media"])
    web = Path(settings.MEDIA_ROOT)
    assert not (web / "runs" / str(run.pk)).exists() and not (web / "models" / model.artifact_key).exists()


def test_a_bucket_gone_mid_run_fails_it_clearly_and_a_retry_succeeds_once_it_is_back(
    s3_server, bucket_storage, tmp_path
):
    dataset = demo_dataset_create(name="the bucket goes", images=24, seed=5)
    worker, folders = host(s3_server, bucket_storage, tmp_path, "host-c")
    try:
        run = training(training_run_create(dataset=dataset, parameters={"epochs": 4}).pk)
        s3_server.stop()
        try:
            run = finished(run.pk, timeout=180)
        finally:
            s3_server.start()
        assert run.status == "failed", run.status
        assert "The storage did not take the run's files" in run.error_message, run.error_message
        assert "Retry it once the storage answers again" in run.error_message
        assert s3_server.endpoint.split("//")[1] not in run.error_message  # the store's address stays in the log
        assert not TrainedModel.objects.filter(source_run=run).exists()  # nothing registered
        wait_for(lambda: not files_under(folders["runs"]), timeout=20, message="nothing left in flight")

        retry = finished(training_run_retry(run=run).pk)
        assert retry.status == "succeeded", f"{retry.error_message}\n{retry.log_tail[-3000:]}"
        assert TrainedModel.objects.filter(source_run=retry).count() == 1
    finally:
        stop_worker(worker)
