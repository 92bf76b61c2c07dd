import threading

import pytest
from django.db import connection
from django_q.models import OrmQ

from core.errors import ApplicationError
from models_registry.models import TrainedModel
from training.models import TrainingRun
from training.services import (
    training_run_claim,
    training_run_create,
    training_run_fail,
    training_run_progress,
    training_run_succeed,
)

pytestmark = pytest.mark.django_db


def test_create_saves_a_queued_run_and_enqueues_it_on_commit(make_dataset, django_capture_on_commit_callbacks):
    dataset = make_dataset()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run = training_run_create(dataset=dataset, parameters={"epochs": 2})
    assert len(callbacks) == 1
    assert run.status == TrainingRun.Status.QUEUED and run.parameters["epochs"] == 2 and run.max_epochs == 2
    assert run.parameters["batch_size"] == 8  # preset default filled in
    queued = [q.task for q in OrmQ.objects.all()]
    assert [(t["func"], t["args"]) for t in queued] == [("scheduler.tasks.execute_training_run", (run.pk,))]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"parameters": {"epochs": 0}}, "Invalid training parameters"),
        ({"parameters": {"learning_rate": "fast"}}, "learning_rate"),
        ({"parameters": "epochs=3"}, "Parameters must be an object"),
        ({"architecture": "yolo9000"}, "Unknown architecture"),
        ({"name": "x" * 201}, "too long"),
    ],
)
def test_invalid_requests_are_refused_and_nothing_is_queued(
    make_dataset, django_capture_on_commit_callbacks, kwargs, message
):
    dataset = make_dataset()
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(ApplicationError) as err:
        training_run_create(dataset=dataset, **kwargs)
    assert message in str(err.value)
    assert callbacks == [] and TrainingRun.objects.count() == 0 and OrmQ.objects.count() == 0


@pytest.mark.parametrize(
    "variant, message",
    [("empty", "no enabled images"), ("noboxes", "no enabled annotations"), ("one", "needs at least 2")],
)
def test_unusable_datasets_are_refused_before_queueing(make_dataset, variant, message):
    from datasets.services import dataset_create

    dataset = {
        "empty": lambda: dataset_create(name="e", class_names=["w"]),
        "noboxes": lambda: make_dataset(boxes=False),
        "one": lambda: make_dataset(images=1),
    }[variant]()
    with pytest.raises(ApplicationError, match=message):
        training_run_create(dataset=dataset)
    assert TrainingRun.objects.count() == 0


def _model(dataset, **fields):
    values = dict(
        name="base",
        architecture="retinanet_r18_tiny",
        class_names=dataset.class_names(),
        artifact_key=fields.pop("key", "k1"),
        checkpoint="models/k1/model.pth",
        checkpoint_sha256="0" * 64,
        config="models/k1/config.json",
        config_sha256="0" * 64,
        origin=TrainedModel.Origin.REGISTERED,
    )
    values.update(fields)
    return TrainedModel.objects.create(**values)


def test_base_model_of_other_classes_fine_tunes_to_new_classes_and_says_so(make_dataset):
    dataset = make_dataset(classes=("waste", "tyres"))
    reordered = _model(dataset, class_names=["tyres", "waste"], key="a")
    run = training_run_create(dataset=dataset, base_model=reordered)
    transfer = run.weight_transfer
    assert transfer["mode"] == "new_classes" and transfer["base_model"] == reordered.pk
    assert transfer["reinitialised_layers"] == ["bbox_head.retina_cls"]
    assert "same classes in another order" in transfer["summary"] and "re-initialised" in transfer["summary"]

    coco = _model(dataset, class_names=[f"c{i}" for i in range(80)], key="b")
    transfer = training_run_create(dataset=dataset, base_model=coco).weight_transfer
    assert "predicts 80 ('c0', 'c1'" in transfer["summary"] and "the dataset has 2" in transfer["summary"]

    same = _model(dataset, key="c")
    run = training_run_create(dataset=dataset, base_model=same)
    assert run.weight_transfer["mode"] == "full" and run.weight_transfer["reinitialised_layers"] == []
    assert run.base_model == same and run.architecture == "retinanet_r18_tiny"


def test_base_model_of_another_architecture_is_refused(make_dataset):
    dataset = make_dataset(classes=("waste", "tyres"))
    other_arch = _model(dataset, architecture="faster_rcnn_r50_fpn", key="b")
    with pytest.raises(ApplicationError, match="is a faster_rcnn_r50_fpn model; this run trains retinanet"):
        training_run_create(dataset=dataset, base_model=other_arch, architecture="retinanet_r18_tiny")
    assert TrainingRun.objects.count() == 0


def test_mixed_precision_is_refused_where_no_worker_has_a_gpu(make_dataset, settings):
    dataset = make_dataset()
    settings.TRAINING_GPU_WORKERS = False
    with pytest.raises(ApplicationError, match="amp") as refused:
        training_run_create(dataset=dataset, parameters={"amp": True})
    assert "needs a GPU" in refused.value.message and TrainingRun.objects.count() == 0
    settings.TRAINING_GPU_WORKERS = True  # runs default to the GPU, and this host's worker declares one
    settings.TRAINING_WORKER_GPUS = ["0"]
    run = training_run_create(dataset=dataset, parameters={"amp": True, "accumulate": 4, "patience": 3})
    assert run.parameters["amp"] is True and run.parameters["accumulate"] == 4 and run.parameters["patience"] == 3


def test_claim_is_won_once(make_dataset):
    run = training_run_create(dataset=make_dataset())
    assert training_run_claim(run_id=run.pk) is True
    assert training_run_claim(run_id=run.pk) is False
    run.refresh_from_db()
    assert run.status == "running" and run.started_at and run.heartbeat_at


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_from_two_connections_have_one_winner(make_dataset):
    run = training_run_create(dataset=make_dataset())
    barrier, wins = threading.Barrier(4), []

    def claim():
        barrier.wait()
        wins.append(training_run_claim(run_id=run.pk))
        connection.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False, False, False, True]


def test_progress_is_written_only_while_running(make_dataset):
    run = training_run_create(dataset=make_dataset())
    state = {
        "max_epochs": 2,
        "max_iters": 10,
        "iter": 4,
        "epoch": 1,
        "percent": 40.0,
        "losses": {"loss": 0.7},
        "lr": 0.002,
        "eta": 12.5,
    }
    assert training_run_progress(run_id=run.pk, state=state) is False  # still queued
    training_run_claim(run_id=run.pk)
    assert training_run_progress(run_id=run.pk, state=state) is True
    run.refresh_from_db()
    assert (run.current_iter, run.max_iters, run.progress_percent, run.eta_seconds) == (4, 10, 40.0, 12.5)
    assert run.latest_losses == {"loss": 0.7} and run.learning_rate == 0.002
    assert training_run_fail(run_id=run.pk, message="boom", log_tail="tail") is True
    assert training_run_progress(run_id=run.pk, state=state) is False  # finished runs stay as they ended
    assert training_run_succeed(run_id=run.pk) is False
    run.refresh_from_db()
    assert run.status == "failed" and run.error_message == "boom" and run.finished_at


def test_run_work_dir_is_derived_from_the_id_only(make_dataset, settings):
    run = training_run_create(dataset=make_dataset(), name="../../etc")
    assert run.work_dir == settings.TRAINING_WORK_ROOT / f"run-{run.pk}"


def test_error_messages_name_the_image_instead_of_its_path(make_dataset, settings):
    from datasets.models import DatasetImage
    from datasets.selectors import describe_image_paths

    image = DatasetImage.objects.filter(dataset=make_dataset()).first()
    path = f"{settings.MEDIA_ROOT}/{image.image.name}"
    message = describe_image_paths(f"AssertionError: failed to load image: {path}")
    assert message == f"AssertionError: failed to load image: image #{image.pk} 'img0.jpg'"
    assert str(settings.MEDIA_ROOT) not in message
