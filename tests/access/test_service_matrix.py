"""The permission matrix of every state-changing service, called directly (not through the API or the admin).

The services are the one home of the access rules: whatever interface calls them, the acting user's permission
is checked there. ``allowed`` services must go through (or stop at a domain rule, never at a permission);
refused ones raise PermissionDenied and change nothing.
"""

import pytest
from django.core.exceptions import PermissionDenied

from core.errors import ApplicationError
from datasets.imports import dataset_import_create, orthophoto_tiling_create
from datasets.models import Annotation, Dataset, DatasetImage, DatasetImport
from datasets.services import (
    annotation_create,
    annotation_delete,
    annotation_update,
    dataset_classes_add,
    dataset_create,
    dataset_image_create,
    dataset_image_update,
    dataset_update,
)
from models_registry import services as registry
from models_registry.models import TrainedModel
from tests.conftest import jpeg_bytes
from tests.world import ROLES, inspection
from training import services as training
from training.models import TrainingRun


def first_box() -> int:
    """The first box of the world (its one dataset's)."""
    return Annotation.objects.order_by("pk").values_list("pk", flat=True)[0]


def set_run(world, status):
    TrainingRun.objects.filter(pk=world.run.pk).update(status=status)
    world.run.refresh_from_db()


def register_base(world, user, tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"w")
    return registry.trained_model_register_base(
        name="b",
        architecture="retinanet_r18_tiny",
        checkpoint=path,
        class_names=["waste"],
        inspection=inspection(),
        created_by=user,
    )


# name -> (call(world, user, tmp_path), what to read back to see that nothing changed)
SERVICES = {
    "run create": (
        lambda w, u, t: training.training_run_create(dataset=w.dataset, parameters={"epochs": 1}, created_by=u),
        lambda w: TrainingRun.objects.count(),
    ),
    "run cancel": (
        lambda w, u, t: training.training_run_cancel(run=w.run, user=u),
        lambda w: TrainingRun.objects.get(pk=w.run.pk).status,
    ),
    "run retry": (
        lambda w, u, t: training.training_run_retry(run=w.run, user=u),
        lambda w: TrainingRun.objects.count(),
    ),
    "run resume": (
        lambda w, u, t: training.training_run_resume(run=w.run, user=u),
        lambda w: TrainingRun.objects.count(),
    ),
    "run delete": (
        lambda w, u, t: training.training_run_delete(run=w.run, user=u),
        lambda w: TrainingRun.objects.filter(pk=w.run.pk).exists(),
    ),
    "model publish": (
        lambda w, u, t: registry.trained_model_publish(model=w.model, user=u),
        lambda w: TrainedModel.objects.get(pk=w.model.pk).is_published,
    ),
    "model unpublish": (
        lambda w, u, t: registry.trained_model_unpublish(model=w.published, user=u),
        lambda w: TrainedModel.objects.get(pk=w.published.pk).is_published,
    ),
    "model update": (
        lambda w, u, t: registry.trained_model_update(model=w.model, name="renamed", user=u),
        lambda w: TrainedModel.objects.get(pk=w.model.pk).name,
    ),
    "model delete": (
        lambda w, u, t: registry.trained_model_delete(model=w.model, user=u),
        lambda w: TrainedModel.objects.filter(pk=w.model.pk).exists(),
    ),
    "model register base": (register_base, lambda w: TrainedModel.objects.count()),
    "dataset create": (
        lambda w, u, t: dataset_create(name="new", class_names=["a"], created_by=u),
        lambda w: Dataset.objects.count(),
    ),
    "dataset update": (
        lambda w, u, t: dataset_update(dataset=w.dataset, name="renamed", user=u),
        lambda w: Dataset.objects.get(pk=w.dataset.pk).name,
    ),
    "image update": (
        lambda w, u, t: dataset_image_update(image=w.dataset.images.first(), enabled=False, user=u),
        lambda w: DatasetImage.objects.filter(enabled=False).count(),
    ),
    "annotation update": (
        lambda w, u, t: annotation_update(annotation=Annotation.objects.get(pk=first_box()), x=2, user=u),
        lambda w: Annotation.objects.get(pk=first_box()).x,
    ),
    "annotation create": (
        lambda w, u, t: annotation_create(
            image=w.dataset.images.first(), dataset_class=w.dataset.classes.first(), x=1, y=1, width=2, height=2, user=u
        ),
        lambda w: Annotation.objects.count(),
    ),
    "annotation delete": (
        lambda w, u, t: annotation_delete(annotation=Annotation.objects.get(pk=first_box()), user=u),
        lambda w: Annotation.objects.count(),
    ),
    "image create": (
        lambda w, u, t: dataset_image_create(dataset=w.dataset, content=jpeg_bytes(colour=(1, 2, 3)), user=u),
        lambda w: DatasetImage.objects.count(),
    ),
    "classes add": (
        lambda w, u, t: dataset_classes_add(dataset=w.dataset, names=["rubble"], user=u),
        lambda w: w.dataset.class_names(),
    ),
    "zip import into dataset": (
        lambda w, u, t: dataset_import_create(upload=_archive(t), dataset=w.dataset, user=u),
        lambda w: DatasetImport.objects.count(),
    ),
    "zip import as new dataset": (
        lambda w, u, t: dataset_import_create(upload=_archive(t), dataset_name="zipped", user=u),
        lambda w: DatasetImport.objects.count(),
    ),
    "orthophoto tiling into dataset": (
        lambda w, u, t: orthophoto_tiling_create(
            orthophotos=[_ortho(t)], annotations=_sites(), dataset=w.dataset, user=u, add_classes=True
        ),
        lambda w: DatasetImport.objects.count(),
    ),
}


def _ortho(tmp_path):
    import io

    from tests.datasets.geo_files import write_geotiff

    path = write_geotiff(tmp_path / "o.tif", srid=32633, origin=(500000.0, 5100000.0), scale=(0.5, -0.5))
    return io.BytesIO(path.read_bytes())


def _sites():
    import io
    import json

    ring = [[500001.0, 5099990.0], [500010.0, 5099990.0], [500010.0, 5099999.0], [500001.0, 5099990.0]]
    feature = {
        "type": "Feature",
        "properties": {"class": "waste"},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    crs = {"type": "name", "properties": {"name": "EPSG:32633"}}
    return io.BytesIO(json.dumps({"type": "FeatureCollection", "crs": crs, "features": [feature]}).encode())


def _archive(tmp_path):
    import io

    from tests.datasets.zip_layouts import plain

    return io.BytesIO(plain(tmp_path / "p.zip").read_bytes())


#                        viewer owner other_trainer publisher admin   (True: allowed)
ALLOWED = {
    "run create": (False, True, True, False, True),
    "run cancel": (False, True, False, False, True),
    "run retry": (False, True, False, False, True),
    "run resume": (False, True, False, False, True),
    "run delete": (False, True, False, False, True),
    "model publish": (False, False, False, True, True),
    "model unpublish": (False, False, False, True, True),
    "model update": (False, True, False, False, True),
    "model delete": (False, True, False, False, True),
    "model register base": (False, False, False, False, True),
    "dataset create": (False, False, False, False, True),
    "dataset update": (False, False, False, False, True),
    "image update": (False, False, False, False, True),
    "annotation update": (False, False, False, False, True),
    "annotation create": (False, False, False, False, True),
    "annotation delete": (False, False, False, False, True),
    "image create": (False, False, False, False, True),
    "classes add": (False, False, False, False, True),
    "zip import into dataset": (False, False, False, False, True),
    "zip import as new dataset": (False, False, False, False, True),
    "orthophoto tiling into dataset": (False, False, False, False, True),
}
PREPARE = {"run cancel": "queued", "run retry": "failed", "run resume": "failed"}
USERS = [r for r in ROLES if r != "anonymous"]
CASES = [(name, role, ALLOWED[name][i]) for name in SERVICES for i, role in enumerate(USERS)]


def test_every_service_has_a_row():
    assert set(SERVICES) == set(ALLOWED)


@pytest.mark.parametrize("name, role, allowed", CASES, ids=[f"{n}-{r}" for n, r, _ in CASES])
def test_service_permission_matrix(world, tmp_path, name, role, allowed):
    call, state = SERVICES[name]
    user = world.users[role]
    if name in PREPARE:
        set_run(world, PREPARE[name])
    if allowed:
        try:
            call(world, user, tmp_path)
        except ApplicationError:
            pass  # a domain rule (e.g. no checkpoint to resume from), reached past the permission check
        return
    before = state(world)
    with pytest.raises(PermissionDenied):
        call(world, user, tmp_path)
    assert state(world) == before


def test_the_anonymous_user_may_do_nothing(world, tmp_path):
    from django.contrib.auth.models import AnonymousUser

    for name, (call, _state) in SERVICES.items():
        if name in PREPARE:
            set_run(world, PREPARE[name])
        with pytest.raises((PermissionDenied, ApplicationError)):
            call(world, AnonymousUser(), tmp_path)
