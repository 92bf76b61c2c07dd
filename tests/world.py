"""The shared test world: one user per role, a dataset, a private run with its model, a published model. The
``world`` fixture (tests/conftest.py) builds it; tests import its helpers from here."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from datasets.models import DatasetImport
from models_registry.models import TrainedModel
from models_registry.services import trained_model_register_base, trained_model_register_from_run
from training.models import TrainingRun
from training.services import training_run_create

ROLES = ["anonymous", "viewer", "owner", "other_trainer", "publisher", "admin"]
GROUP_OF = {
    "viewer": "Viewer",
    "owner": "Trainer",
    "other_trainer": "Trainer",
    "publisher": "Publisher",
    "admin": "Administrator",
}


@dataclass
class World:
    users: dict
    dataset: object
    run: TrainingRun
    model: TrainedModel
    published: TrainedModel
    prediction: object = None  # the owner's predict check of their model, done, with a preview
    evaluation: object = None  # the owner's model on its validation split, per class, with a gallery
    dataset_import: object = None  # the administrator's finished COCO zip import into the dataset
    tmp_path: object = None
    _detection: dict | None = None

    # Made on first use (tests that count runs or files see none of them otherwise).
    @property
    def orthophoto(self):
        """A small georeferenced GeoTIFF kept with the dataset (by the administrator)."""
        return self.detection_objects()["orthophoto"]

    @property
    def detection_run(self):
        """The owner's finished detection run of their model over the orthophoto, with one detection."""
        return self.detection_objects()["detection_run"]

    @property
    def ignore_zone(self):
        """The administrator's ignore zone of the dataset."""
        return self.detection_objects()["ignore_zone"]

    def detection_objects(self) -> dict:
        if self._detection is None:
            self._detection = make_detection_world(self.dataset, self.model, self.users, self.tmp_path)
        return self._detection

    def staff_client(self, role: str):
        """A Django test client signed in as ``role``'s user, made staff (the admin's door)."""
        from django.test import Client

        user = self.users[role]
        user.is_staff = True
        user.save()
        client = Client()
        client.force_login(user)
        return client

    def client(self, role: str) -> APIClient:
        client = APIClient()
        if role != "anonymous":
            client.force_authenticate(self.users[role])
        return client


def make_user(name: str, group: str | None) -> User:
    user = User.objects.create_user(name)  # no password: tests authenticate directly (hashing is slow)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def inspection(parameter_count: int | None = None) -> dict:
    """What ``engine.inspect`` reports, for tests about the registry's rules (not about the file): a
    minimal runnable config stands in for the preset's."""
    return {"parameter_count": parameter_count, "config": {"model": {"type": "RetinaNet"}}}


def register_model(run: TrainingRun, tmp_path, history=None, gsd_m=None) -> TrainedModel:
    ckpt, cfg = tmp_path / f"m{run.pk}.pth", tmp_path / f"c{run.pk}.json"
    ckpt.write_bytes(b"weights of run %d" % run.pk)
    # A config a detection run accepts (a test pipeline); the worker is never asked to run it here.
    pipeline = [{"type": "LoadImageFromFile"}, {"type": "Resize", "scale": [256, 256]}]
    cfg.write_text(json.dumps({"model": {"type": "RetinaNet"}, "test_dataloader": {"dataset": {"pipeline": pipeline}}}))
    history = history or [
        {"epoch": 1, "bbox_mAP": 0.3, "bbox_mAP_50": 0.6, "loss": 1.0},
        {"epoch": 2, "bbox_mAP": 0.5, "bbox_mAP_50": 0.9, "loss": 0.5},
    ]
    return trained_model_register_from_run(
        run=run,
        history=history,
        best=history[-1],
        gsd_m=gsd_m,
        result={
            "model_file": str(ckpt),
            "config_file": str(cfg),
            "classes": run.dataset.class_names(),
            "parameter_count": 123,
            "duration_s": 42.0,
            "checkpoint_epoch": 2,
        },
    )


def build_world(make_dataset, tmp_path) -> World:
    users = {role: make_user(role, GROUP_OF.get(role)) for role in ROLES if role != "anonymous"}
    dataset = make_dataset(name="shared")
    run = training_run_create(dataset=dataset, parameters={"epochs": 2}, name="owner's run", created_by=users["owner"])
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    run.refresh_from_db()
    model = register_model(run, tmp_path)
    base = tmp_path / "base.pth"
    base.write_bytes(b"base weights")
    published = trained_model_register_base(
        name="published base",
        architecture="retinanet_r18_tiny",
        checkpoint=base,
        class_names=dataset.class_names(),
        inspection=inspection(7),
        created_by=users["admin"],
    )
    TrainedModel.objects.filter(pk=published.pk).update(is_published=True)
    published.refresh_from_db()
    return World(
        users=users,
        dataset=dataset,
        run=run,
        model=model,
        published=published,
        prediction=make_prediction(model, users["owner"]),
        evaluation=make_evaluation(model, run, dataset),
        dataset_import=DatasetImport.objects.create(
            key=f"world{dataset.pk}", dataset=dataset, status="succeeded", created_by=users["admin"]
        ),
        tmp_path=tmp_path,
    )


def make_detection_world(dataset, model: TrainedModel, users: dict, tmp_path) -> dict:
    """An orthophoto of the dataset, the owner's detection run over it (finished, as the worker leaves it, with
    one detection) and an ignore zone."""
    import numpy as np
    from django.contrib.gis.geos import Polygon

    from datasets.orthophotos import orthophoto_store
    from detection.models import Detection
    from detection.services import detection_run_create, ignore_zone_create
    from tests.detection.scenes import rotated, write_geotiff

    pixels = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    path = write_geotiff(tmp_path / "world.tif", pixels, srid=32633, geotransform=rotated((500_000, 5_100_000), 0.2, 0))
    ortho = orthophoto_store(dataset=dataset, source=path, name="world.tif", created_by=users["admin"])
    run = detection_run_create(model=model, orthophotos=[ortho], created_by=users["owner"], name="owner's detection")
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded", export_summary={"detections": 1})
    run.refresh_from_db()
    footprint = ortho.footprint
    Detection.objects.create(
        run=run,
        orthophoto=ortho,
        label=0,
        class_name=model.class_names[0],
        score=0.9,
        geometry=Polygon.from_bbox(footprint.extent) if footprint is not None else None,
        area_m2=100.0,
        pixel_box=[1, 2, 30, 40],
    )
    zone = json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]})
    ignore_zone = ignore_zone_create(dataset=dataset, name="quarry", geojson=zone, created_by=users["admin"])
    return {"orthophoto": ortho, "detection_run": run, "ignore_zone": ignore_zone}


def make_evaluation(model: TrainedModel, run: TrainingRun, dataset):
    """What a training run leaves: its manifest, and the analysis of (made-up) detections on its validation
    split stored as the model's validation evaluation."""
    from datasets.coco_export import build_coco, manifest_of
    from engine.analysis import analyse
    from models_registry.evaluations import evaluation_store
    from models_registry.models import Evaluation
    from training.models import TrainingManifest

    train, val = build_coco(dataset, val_fraction=0.34, seed=0)
    manifest = manifest_of(train, val)
    TrainingManifest.objects.create(
        run=run,
        split=manifest["split"],
        train_image_ids=manifest["train"]["image_ids"],
        train_box_ids=manifest["train"]["box_ids"],
        val_image_ids=manifest["val"]["image_ids"],
        val_box_ids=manifest["val"]["box_ids"],
        train_hash=manifest["train"]["content_hash"],
        val_hash=manifest["val"]["content_hash"],
        validation_coco=val,
    )
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [v + 1 for v in a["bbox"]], "score": 0.8}
        for a in val["annotations"]
    ]
    return evaluation_store(
        model=model,
        run=run,
        dataset=dataset,
        kind=Evaluation.Kind.VALIDATION,
        split="validation split (random)",
        split_details=manifest["split"],
        result=analyse(val, detections),
        gt_doc=val,
    )


def make_prediction(model: TrainedModel, user):
    """A finished predict check (as the worker leaves it), with its image and preview stored."""
    from django.core.files.base import ContentFile

    from models_registry.models import Prediction
    from tests.conftest import jpeg_bytes

    prediction = Prediction(model=model, key=f"p{model.pk}", status="succeeded", created_by=user, original_name="t.jpg")
    prediction.image.save("input.jpg", ContentFile(jpeg_bytes()), save=False)
    prediction.preview.save("preview.jpg", ContentFile(jpeg_bytes()), save=False)
    prediction.result = {
        "width": 64,
        "height": 48,
        "boxes": [{"label": 0, "class_name": "waste", "score": 0.9, "bbox": [1, 2, 30, 40]}],
    }
    prediction.save()
    return prediction
