"""End to end: a real django-q2 worker runs real MMDetection training of the tiny preset on the CPU.

Train from scratch through ``manage.py train --wait``, re-evaluate the registered checkpoint on the held-out split
independently, fine-tune from it, and check lineage and accuracy; then detection runs with it, and the loop from a
reviewed run back to a better model (`loop_checks`). Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import io
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
from django.core.management import call_command
from django.test import Client

from core.storage import open_stored
from datasets.demo import demo_dataset_create
from models_registry.models import TrainedModel
from models_registry.services import sha256_file
from tests.conftest import wait_for
from tests.e2e.aerial_checks import AERIAL, check_aerial_run, give_footprints
from tests.e2e.detection_checks import check_detection_runs
from tests.e2e.evaluation_checks import check_evaluation_runs, check_validation_results
from tests.e2e.loop_checks import check_review_loop
from tests.e2e.model_checks import api_client, check_downloads_in_stock_mmdetection, check_predict
from tests.e2e.onnx_checks import check_detection_on_onnx_runtime, check_export_passes
from tests.e2e.scale_out_checks import check_two_processes
from tests.e2e.tracking_checks import check_mlflow_model_version, check_mlflow_run, check_tensorboard_files, mlflow_env
from tests.e2e.webhook_checks import check_other_kinds_told, check_run_end_told, subscribe_operator
from training.models import TrainingRun
from training.run_files import LOG, stored_events, stored_log_tail, stored_name
from training.selectors import last_checkpoint
from training.services import training_run_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
TRAIN_TIMEOUT = 900


def evaluate_registered(model: TrainedModel, work_dir: Path) -> dict:
    """Evaluate the stored checkpoint with its stored config on the run's held-out split, in this process."""
    from django.conf import settings
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.runner import Runner

    from engine.checkpoints import install_safe_globals
    from engine.config import restore_tuples

    install_safe_globals()
    register_all_modules(init_default_scope=True)
    cfg = Config(restore_tuples(json.loads(Path(model.config.path).read_text())))
    # The stored config names no server paths: point it at the run's held-out split (its manifest), as a user would
    # at theirs.
    assert model.source_run is not None
    val = str(work_dir / "val.json")
    work_dir.mkdir(parents=True, exist_ok=True)
    Path(val).write_text(json.dumps(model.source_run.manifest.validation_coco))
    cfg.test_dataloader.dataset.update(data_root=str(settings.MEDIA_ROOT), ann_file=val)
    cfg.test_evaluator.ann_file = val
    cfg.work_dir, cfg.load_from = str(work_dir), model.checkpoint.path
    return Runner.from_cfg(cfg).test()


def run_log_text(run: TrainingRun) -> str:
    """The run's whole log as its worker stored it."""
    with open_stored(stored_name(run.pk, LOG)) as fh:
        return fh.read().decode()


def follow(run_id: int, timeout: float) -> tuple[TrainingRun, list[tuple[str, float]]]:
    """Poll the run like a client would; return it finished, with the (status, percent) pairs seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TrainingRun.objects.get(pk=run_id)
        seen.append((run.status, run.progress_percent))
        if run.is_finished:
            return run, seen
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s; last seen {seen[-3:]}")


def test_train_from_scratch_then_fine_tune(worker, tmp_path, settings):
    from core.commands import ensure_operator

    dataset = demo_dataset_create(name="e2e-demo", images=200, seed=3)
    ensure_operator()  # the command line acts as the one administrator, as after scripts/setup.sh
    receiver, secret = subscribe_operator(settings)  # a webhook (answering 500 twice first) and the mail

    # 1. Through the command line, as an operator would: `manage.py train --wait`.
    out, err, failure = io.StringIO(), io.StringIO(), []

    def cli():
        try:
            call_command("train", "--dataset", "e2e-demo", "--name", "from scratch", "--wait", stdout=out, stderr=err)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)
        finally:
            from django.db import connection

            connection.close()

    thread = threading.Thread(target=cli)
    thread.start()
    run_id = wait_for(
        lambda: TrainingRun.objects.filter(name="from scratch").values_list("pk", flat=True).first(),
        timeout=30,
        message="the run to be created",
    )
    run, seen = follow(run_id, TRAIN_TIMEOUT)
    thread.join(timeout=60)
    assert not failure, f"{failure!r}\n{out.getvalue()}\n{worker.output()[-3000:]}"
    assert run.status == "succeeded", f"{run.error_message}\n{run.log_tail[-3000:]}"
    assert "succeeded" in out.getvalue() and "mAP50" in out.getvalue()
    check_run_end_told(receiver, secret, run, worker)

    # Progress was visible while it trained, and ended complete.
    assert any(status == "running" and 0 < percent < 100 for status, percent in seen), seen[:40]
    assert run.progress_percent == 100.0 and run.current_iter == run.max_iters > 0
    assert run.started_at and run.finished_at and run.heartbeat_at and "loss" in run.latest_losses

    # Where the time went: every phase measured, adding up to the run's life.
    timings = wait_for(
        lambda: (t := TrainingRun.objects.get(pk=run_id).timings).get("registration") is not None and t,
        timeout=10,
        interval=0.1,
        message="timings",
    )
    assert set(timings) == set(TrainingRun.PHASES)
    assert min(timings.values()) >= 0 and timings["training"] > timings["startup"] > 0, timings
    life = (run.finished_at - run.created_at).total_seconds()
    assert abs(sum(timings.values()) - life) < 2.0, (timings, life)

    model = TrainedModel.objects.get(source_run=run)
    assert model.dataset == dataset and model.base_model is None and model.origin == "trained"
    assert model.class_names == ["waste_pile", "construction_debris"]
    assert model.bbox_mAP_50 is not None and model.bbox_mAP_50 >= 0.5, model.metrics_history
    assert [h["epoch"] for h in model.metrics_history] == list(range(1, run.parameters["epochs"] + 1))
    assert model.metrics_history[model.best_epoch - 1]["bbox_mAP_50"] == model.bbox_mAP_50
    assert model.checkpoint_sha256 == sha256_file(Path(model.checkpoint.path))
    assert model.config_sha256 == sha256_file(Path(model.config.path))
    assert model.parameter_count > 1_000_000 and model.training_duration.total_seconds() > 0
    assert model.config.name.endswith(".json")

    # The worker's scratch folder is gone; the log and events are in the storage, and no checkpoint (it succeeded).
    assert not run.work_dir.exists()
    assert stored_log_tail(run.pk) == run.log_tail and any(e["event"] == "val" for e in stored_events(run.pk))
    assert last_checkpoint(run) is None

    # 1b. The same training on two processes (torch.distributed) scores the same.
    check_two_processes(model)

    # 2. The registered checkpoint loads (weights-only) and scores the same on the held-out split.
    metrics = evaluate_registered(model, tmp_path / "eval")
    assert abs(metrics["coco/bbox_mAP_50"] - model.bbox_mAP_50) < 0.02, (metrics, model.bbox_mAP_50)

    # 3. Fine-tune from it: lineage recorded, weights really loaded, accuracy kept.
    run2 = training_run_create(
        dataset=dataset, base_model=model, parameters={"epochs": 2, "learning_rate": 5e-4}, name="fine-tuned"
    )
    run2, _ = follow(run2.pk, TRAIN_TIMEOUT)
    assert run2.status == "succeeded", f"{run2.error_message}\n{run2.log_tail[-3000:]}"
    child = TrainedModel.objects.get(source_run=run2)
    assert child.base_model == model and list(model.derived_models.all()) == [child]
    assert child.bbox_mAP_50 >= 0.5, child.metrics_history
    # Its first epoch starts where the base model ended, far above the first epoch from scratch.
    scratch_first = model.metrics_history[0]["bbox_mAP_50"]
    assert child.metrics_history[0]["bbox_mAP_50"] >= max(scratch_first + 0.2, 0.8 * model.bbox_mAP_50), (
        model.metrics_history,
        child.metrics_history,
    )
    events = run_log_text(run2)
    assert "Load checkpoint from" in events and "base_weights.pth" in events
    assert run2.weight_transfer["mode"] == "full" and run2.weight_transfer["applied"]["reinitialised"] == []
    assert run2.weight_transfer["applied"]["loaded_count"] == run2.weight_transfer["applied"]["total"]

    # 4. Transfer works for real: images the model was trained on (the first 80 of its 200) under other class
    # names, 2 epochs from the model (its class layer re-initialised) against 2 epochs from scratch, queued together.
    renamed = tiles_dataset("renamed", ["tyre_pile", "rubble"], count=80, seed=3)
    tuned = training_run_create(dataset=renamed, base_model=model, parameters={"epochs": 2}, name="transfer")
    scratch = training_run_create(dataset=renamed, parameters={"epochs": 2}, name="scratch, 2 epochs")
    tuned, _ = follow(tuned.pk, TRAIN_TIMEOUT)
    scratch, _ = follow(scratch.pk, TRAIN_TIMEOUT)
    assert tuned.status == scratch.status == "succeeded", (tuned.error_message, scratch.error_message)
    applied = tuned.weight_transfer["applied"]
    assert {e["key"] for e in applied["reinitialised"]} == {"bbox_head.retina_cls.weight", "bbox_head.retina_cls.bias"}
    assert "other classes" in applied["reinitialised"][0]["reason"]
    tuned_model, scratch_model = (TrainedModel.objects.get(source_run=r) for r in (tuned, scratch))
    assert tuned_model.class_names == ["tyre_pile", "rubble"] and tuned_model.base_model == model
    assert tuned_model.bbox_mAP_50 > scratch_model.bbox_mAP_50 + 0.1, (
        tuned_model.metrics_history,
        scratch_model.metrics_history,
    )

    # 5. What a user downloads loads in stock MMDetection and detects with the model's class names.
    check_downloads_in_stock_mmdetection(model, dataset, tmp_path)

    # 6. The predict check: API (a worker runs it), refusal of a non-image, and the command line.
    check_predict(model, dataset, tmp_path, worker)

    # 7. Results in depth: per class on its validation split, its manifest, evaluation runs and their cancel.
    from django.contrib.auth import get_user_model

    check_validation_results(model)
    held_out = tiles_dataset("held-out", ["waste_pile", "construction_debris"], count=24, seed=11)
    check_evaluation_runs(model, held_out, api_client(get_user_model().objects.get(username="operator")))

    # 7b. Detection runs over whole orthophotos built here: seams, two parts, rotation, nodata, pixels, cancel.
    check_detection_runs(model, get_user_model().objects.get(username="operator"), tmp_path / "detect")
    check_other_kinds_told(receiver, secret)

    # 7b'. Its ONNX export behind the parity gate, and the first detection run again on ONNX Runtime: the same sites.
    check_export_passes(model, tmp_path / "onnx")
    reference = TrainingRun.objects.filter(kind="detect", status="succeeded", evaluated_model=model).earliest("id")
    check_detection_on_onnx_runtime(model, reference)

    # 7c. The loop back to training data: review a run, its sites into a dataset, fine-tune, better site recall;
    # then a labelling task of that dataset run through the new model, read by Label Studio's converter.
    check_review_loop(model, get_user_model().objects.get(username="operator"), tmp_path / "loop")

    # 8. Early stopping ends a real run before its epoch limit and says so: a learning rate too small to change
    # anything and a frozen backbone keep the validation mAP where it is (a small set of the same kind of tiles).
    stalled = training_run_create(
        dataset=tiles_dataset("stall", ["waste_pile", "construction_debris"], count=24, seed=7),
        base_model=model,
        parameters={"epochs": 6, "learning_rate": 1e-7, "frozen_stages": 4, "patience": 1, "warmup_iters": 0},
        name="early stop",
    )
    stalled, _ = follow(stalled.pk, TRAIN_TIMEOUT)
    assert stalled.status == "succeeded", stalled.error_message
    stopped = TrainedModel.objects.get(source_run=stalled)
    assert len(stopped.metrics_history) < 6 and stalled.current_epoch < 6, stopped.metrics_history
    assert stalled.stop_reason.startswith(f"Stopped early after epoch {len(stopped.metrics_history)} of 6"), (
        stalled.stop_reason
    )


def tiles_dataset(name: str, classes: list[str], *, count: int, seed: int):
    """A dataset of demo tiles under the given class names (demo class i -> classes[i])."""
    from datasets.demo import generate_tile
    from datasets.services import annotation_build, annotations_bulk_create, dataset_create, dataset_image_create

    dataset = dataset_create(name=name, class_names=classes)
    by_position = list(dataset.classes.order_by("position"))
    for index in range(count):
        tile = generate_tile(seed, index)
        image = dataset_image_create(dataset=dataset, content=tile.jpeg, original_name=f"tile_{index}.jpg")
        annotations_bulk_create(
            [
                annotation_build(image=image, dataset_class=by_position[c], x=x, y=y, width=w, height=h)
                for c, x, y, w, h in tile.boxes
            ]
        )
    return dataset


EVIL = ['pile "quoted"\nwith newline', "__import__('os').system('touch {sentinel}')"]
# mmengine's Config.fromfile rewrites these in a file's text: an environment variable's value, a path, a base value.
TEMPLATES = ["{{$DUMPSITE_PROBE_SECRET:x}}", "{{ fileDirname }}", "{{ _base_.model }}"]


def test_hostile_class_names_train_as_plain_data(tmp_path, transactional_db, monkeypatch, settings):
    """Also the run's experiment tracking: TensorBoard files and an MLflow run in a store on local files."""
    import secrets

    import torch
    from django.conf import settings
    from django.db import connection
    from mmengine.config import Config

    from tests.conftest import start_worker, stop_worker

    secret = f"s3cr3t-{secrets.token_hex(8)}"
    worker = start_worker(
        connection.settings_dict["NAME"],
        tmp_path / "qcluster.log",
        DUMPSITE_KEEP_SCRATCH="1",
        DUMPSITE_PROBE_SECRET=secret,
        **mlflow_env(tmp_path),
    )
    for name, value in mlflow_env(tmp_path).items():  # this process enqueues the publication's MLflow task
        setattr(settings, name, value)
    try:
        # A short path of its own: a class name is at most 100 characters, and tmp_path can be long (xdist).
        sentinel = Path(tempfile.mkdtemp(prefix="dumpsite-")) / "pwned"
        names = TEMPLATES[:2] + [n.format(sentinel=sentinel) for n in EVIL] + TEMPLATES[2:]
        dataset = tiles_dataset("hostile", names, count=24, seed=5)
        give_footprints(dataset)  # half at 5 cm per pixel: resampled to the run's 10 cm
        # The aerial recipe (all eight orientations, crops, colour, resampling): this platform's own transforms
        # and dataset in a real training, and in the config served below.
        run = training_run_create(dataset=dataset, parameters={"epochs": 1, "batch_size": 4, **AERIAL})

        # The training child gets an explicit, minimal environment: no database password, no secret key, nothing
        # else of the worker's.
        pid = wait_for(
            lambda: (
                TrainingRun.objects.filter(pk=run.pk, status="running").values_list("training_pid", flat=True).first()
            ),
            timeout=120,
            interval=0.2,
            message="the training child",
        )
        environ = psutil.Process(pid).environ()
        assert not {"DUMPSITE_PROBE_SECRET", "DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "POSTGRES_DB"} & set(environ)
        assert secret not in "".join(environ.values()) and "PATH" in environ

        run, _ = follow(run.pk, TRAIN_TIMEOUT)
        assert run.status == "succeeded", f"{run.error_message}\n{run.log_tail[-3000:]}"
        model = TrainedModel.objects.get(source_run=run)
        mlflow_run_id = check_mlflow_run(tmp_path, run, names, secret)
        check_mlflow_model_version(tmp_path, model, mlflow_run_id, worker)
    finally:
        stop_worker(worker)
    assert model.class_names == names

    # The stored config carries the names literally, holds no template pattern in its text (a stock loader with
    # substitution on reads it back unchanged), and names none of this server's folders.
    text = Path(model.config.path).read_text(encoding="utf-8")
    config = json.loads(text)
    assert config["train_dataloader"]["dataset"]["metainfo"]["classes"] == names
    assert "{{" not in text and secret not in text
    for root in (settings.MEDIA_ROOT, settings.TRAINING_WORK_ROOT, Path(__file__).resolve().parents[2]):
        assert str(root) not in text, root
    assert config["load_from"] is None and config["train_dataloader"]["dataset"]["ann_file"] == "annotations/train.json"
    monkeypatch.setenv("DUMPSITE_PROBE_SECRET", secret)
    stock = Config.fromfile(model.config.path)
    assert list(stock.train_dataloader.dataset.metainfo.classes) == names

    # The checkpoint's own class list is the literal one too.
    meta = torch.load(model.checkpoint.path, map_location="cpu", weights_only=True)["meta"]
    assert meta["dataset_meta"]["classes"] == names

    # The secret reached nothing the run wrote: no log, event, config or checkpoint, and not the database.
    for path in run.work_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in run.log_tail + run.error_message

    # Nothing anywhere in the run's scratch space is Python source (mmengine's own dumps are JSON here too).
    assert (run.work_dir / "mmengine").is_dir() and list(run.work_dir.rglob("*.pth"))
    assert not list(run.work_dir.rglob("*.py")), list(run.work_dir.rglob("*.py"))
    trained = json.loads(next(run.work_dir.rglob("vis_data/config.json")).read_text())
    assert trained["model"]["type"] == "RetinaNet"
    assert {"type": "DumpsiteTranspose", "prob": 0.5} in trained["train_dataloader"]["dataset"]["pipeline"]
    assert not sentinel.exists()

    # The Python config served for stock MMDetection keeps every name an inert literal: init_detector and
    # DetInferencer read the names back exactly, in a clean interpreter, and nothing runs.
    from django.contrib.auth import get_user_model

    from tests.e2e.stock import run_stock_mmdet

    admin = get_user_model().objects.create_superuser("root", password=None)
    client = api_client(admin)
    check_tensorboard_files(client, run, names, tmp_path)
    staff = Client()
    staff.force_login(admin)
    check_aerial_run(client, staff, run, model, trained)
    dl = tmp_path / "dl"
    dl.mkdir()
    config = client.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "config"}).content
    assert b"{{" not in config and b"$" not in config and secret.encode() not in config
    (dl / "config.py").write_bytes(config)
    checkpoint = client.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "checkpoint"})
    (dl / "checkpoint.pth").write_bytes(b"".join(checkpoint.streaming_content))
    image = dataset.images.order_by("id").first().image.path
    stock = run_stock_mmdet(dl, dl / "config.py", dl / "checkpoint.pth", image)
    assert stock["classes"] == stock["config_classes"] == stock["init_classes"] == names
    assert not sentinel.exists()
    sentinel.parent.rmdir()


def test_corrupt_image_fails_the_run_with_a_readable_error(worker, settings):
    from datasets.models import DatasetImage

    dataset = tiles_dataset("corrupt", ["waste_pile", "construction_debris"], count=8, seed=9)
    bad = DatasetImage.objects.filter(dataset=dataset).order_by("id")[3]
    Path(settings.MEDIA_ROOT, bad.image.name).write_bytes(b"\xff\xd8 this is not a jpeg any more")

    run = training_run_create(dataset=dataset, parameters={"epochs": 1, "batch_size": 8, "val_fraction": 0.05})
    run, _ = follow(run.pk, TRAIN_TIMEOUT)
    assert run.status == "failed"
    assert f"image #{bad.pk} 'tile_3.jpg'" in run.error_message, run.error_message
    assert str(settings.MEDIA_ROOT) not in run.error_message
    assert "Traceback" in run.log_tail and run.finished_at
    assert not TrainedModel.objects.filter(source_run=run).exists()
    timings = wait_for(lambda: TrainingRun.objects.get(pk=run.pk).timings, timeout=10, interval=0.1, message="timings")
    assert {"queued", "export", "config", "startup"} <= set(timings) and "registration" not in timings, timings
