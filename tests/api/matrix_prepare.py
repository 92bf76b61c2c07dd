"""What the permission matrix's rows prepare before their request: a run's state, confirmed detections, a labelling
task, a webhook subscription with a delivery, a run's TensorBoard file and training samples, a model's ONNX export
(tests/api/test_permission_matrix.py)."""

import json

from core.storage import store_bytes
from engine.events import SAMPLES
from training.models import TrainingRun
from training.run_files import TENSORBOARD, stored_name


def set_status(status):
    def prepare(world):
        TrainingRun.objects.filter(pk=world.run.pk).update(status=status)

    return prepare


def tensorboard_file(world):
    store_bytes(b"an event file", stored_name(world.run.pk, f"{TENSORBOARD}/events.out.tfevents.1.host"))


def training_samples(world):
    """The first training batch as the training child leaves it: one picture and its index."""
    store_bytes(b"\xff\xd8 a picture", stored_name(world.run.pk, f"{SAMPLES}/sample_0.jpg"))
    index = [{"file": "sample_0.jpg", "width": 8, "height": 8, "boxes": 1, "ignored": 0}]
    store_bytes(json.dumps(index).encode(), stored_name(world.run.pk, f"{SAMPLES}/samples.json"))


def onnx_export(world):
    """A model whose export passed the gate: its file stored beside its checkpoint, the report kept."""
    from models_registry.models import TrainedModel

    name = f"models/{world.model.artifact_key}/model.onnx"
    store_bytes(b"an onnx file", name)
    TrainedModel.objects.filter(pk=world.model.pk).update(onnx=name, onnx_sha256="0" * 64, onnx_report={"passed": True})


def confirm_detections(world):
    world.detection_run.detections.update(state="confirmed")


def set_detection_status(status):
    def prepare(world):
        TrainingRun.objects.filter(pk=world.detection_run.pk).update(status=status)

    return prepare


def labelling_task(*, built: bool = False, returned: bool = False):
    """The owner's labelling task of their detection run (built by the worker's function where asked; where
    ``returned``, its exported images are the dataset's, as if they had come back labelled)."""

    def prepare(world):
        from labelling.building import build_labelling_task
        from labelling.models import LabellingTask
        from labelling.services import labelling_task_create

        task = labelling_task_create(
            user=world.users["owner"], detection_run=world.detection_run, parameters={"tile_size": 64}
        )
        if built or returned:
            build_labelling_task(task.pk)
        if returned:
            images = [
                {"name": i.original_name, "width": i.width, "height": i.height, "boxes": []}
                for i in world.dataset.images.all()
            ]
            LabellingTask.objects.filter(pk=task.pk).update(images=images)
        world.labelling_task = task

    return prepare


def webhook(world):
    """The owner's webhook subscription, with one delivery in its log."""
    import uuid

    from django.utils import timezone

    from access.rules import grant
    from notifications.models import WebhookDelivery, WebhookSubscription
    from notifications.services import CREATOR_PERMS

    owner = world.users["owner"]
    sub = WebhookSubscription.objects.create(
        url="http://93.184.216.34/hook", secret="s" * 32, events=["run.failed"], created_by=owner
    )
    grant(owner, CREATOR_PERMS, sub)
    world.webhook = sub
    world.delivery = WebhookDelivery.objects.create(
        subscription=sub,
        event="run.failed",
        event_id=uuid.uuid4(),
        body={"event": "run.failed"},
        created_at=timezone.now(),
    )
