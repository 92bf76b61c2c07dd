"""Role x endpoint x action -> expected status, as data (one row per endpoint, one column per role).

404 means the object is hidden from that role (it may not even learn it exists); 403 means it may see the
object but not do that to it. The run and its model belong to "owner" (a Trainer); "other_trainer" is a peer.
"""

import pytest

from datasets.models import Annotation
from tests.api.matrix_prepare import (
    confirm_detections,
    labelling_task,
    onnx_export,
    set_detection_status,
    set_status,
    tensorboard_file,
    training_samples,
    webhook,
)
from tests.world import ROLES

R, M, P, D, Q, E = "{run}", "{model}", "{published}", "{dataset}", "{prediction}", "{evaluation}"
ORTHO, DR, Z, DT = "{orthophoto}", "{detection_run}", "{ignore_zone}", "{detection}"
DETECTION = ("/api/orthophotos/", "/api/detection-runs/", "/api/ignore-zones/", "/api/detections/")
IMG, A, IMP = "{image}", "{annotation}", "{dataset_import}"
LT = "{labelling_task}"
WH, WD = "{webhook}", "{delivery}"
BUILT, RETURNED = labelling_task(built=True), labelling_task(returned=True)
#      name                 method  path                                       prepare              body
ENDPOINTS = [
    ("datasets list", "get", "/api/datasets/", None, None),
    ("dataset detail", "get", f"/api/datasets/{D}/", None, None),
    ("dataset images", "get", f"/api/datasets/{D}/images/", None, None),
    ("dataset export", "get", f"/api/datasets/{D}/export/", None, None),
    ("dataset create", "post", "/api/datasets/", None, {"name": "made here", "classes": ["waste"]}),
    ("dataset update", "patch", f"/api/datasets/{D}/", None, {"description": "changed"}),
    ("dataset add classes", "post", f"/api/datasets/{D}/classes/", None, {"classes": ["rubble"]}),
    ("dataset add image", "post", f"/api/datasets/{D}/images/", None, None),
    ("dataset import zip", "post", "/api/datasets/import/", None, None),
    ("dataset tile orthophoto", "post", "/api/datasets/tile-orthophoto/", None, None),
    ("imports list", "get", "/api/dataset-imports/", None, None),
    ("import detail", "get", f"/api/dataset-imports/{IMP}/", None, None),
    ("image detail", "get", f"/api/images/{IMG}/", None, None),
    ("image update", "patch", f"/api/images/{IMG}/", None, {"enabled": False}),
    ("image boxes", "get", f"/api/images/{IMG}/annotations/", None, None),
    ("image add box", "post", f"/api/images/{IMG}/annotations/", None, "box"),
    ("box detail", "get", f"/api/annotations/{A}/", None, None),
    ("box update", "patch", f"/api/annotations/{A}/", None, {"enabled": False}),
    ("box delete", "delete", f"/api/annotations/{A}/", None, None),
    ("runs list", "get", "/api/training-runs/", None, None),
    ("run detail", "get", f"/api/training-runs/{R}/", None, None),
    ("run progress", "get", f"/api/training-runs/{R}/progress/", None, None),
    ("run metrics", "get", f"/api/training-runs/{R}/metrics/", None, None),
    ("run log", "get", f"/api/training-runs/{R}/log/", None, None),
    ("run tensorboard", "get", f"/api/training-runs/{R}/tensorboard/", tensorboard_file, None),
    ("run samples", "get", f"/api/training-runs/{R}/samples/", training_samples, None),
    ("run sample", "get", f"/api/training-runs/{R}/samples/{{sample}}/", training_samples, None),
    ("run create", "post", "/api/training-runs/", None, "create"),
    ("run cancel", "post", f"/api/training-runs/{R}/cancel/", set_status("queued"), None),
    ("run retry", "post", f"/api/training-runs/{R}/retry/", set_status("failed"), None),
    ("run resume", "post", f"/api/training-runs/{R}/resume/", set_status("failed"), None),
    ("run manifest", "get", f"/api/training-runs/{R}/manifest/", None, None),
    ("run export", "get", f"/api/training-runs/{R}/export/?side=val", None, None),
    ("run evaluate", "post", "/api/training-runs/evaluate/", None, "evaluate"),
    ("published evaluate", "post", "/api/training-runs/evaluate/", None, "evaluate published"),
    ("model onnx export", "post", "/api/training-runs/onnx-export/", None, "onnx export"),
    ("run delete", "delete", f"/api/training-runs/{R}/", None, None),
    ("models list", "get", "/api/trained-models/", None, None),
    ("model detail", "get", f"/api/trained-models/{M}/", None, None),
    ("published detail", "get", f"/api/trained-models/{P}/", None, None),
    ("model rename", "patch", f"/api/trained-models/{M}/", None, {"name": "x"}),
    ("model publish", "post", f"/api/trained-models/{M}/publish/", None, None),
    ("published unpublish", "post", f"/api/trained-models/{P}/unpublish/", None, None),
    ("model lineage", "get", f"/api/trained-models/{M}/lineage/", None, None),
    ("model metrics", "get", f"/api/trained-models/{M}/metrics/", None, None),
    ("model download", "get", f"/api/trained-models/{M}/download/?artifact=checkpoint", None, None),
    ("published download", "get", f"/api/trained-models/{P}/download/?artifact=config", None, None),
    ("model onnx download", "get", f"/api/trained-models/{M}/download/?artifact=onnx", onnx_export, None),
    ("model card", "get", f"/api/trained-models/{M}/card/", None, None),
    ("published card", "get", f"/api/trained-models/{P}/card/", None, None),
    ("model card download", "get", f"/api/trained-models/{M}/download/?artifact=card", None, None),
    ("model register", "post", "/api/trained-models/register/", None, None),
    ("model predict", "post", f"/api/trained-models/{M}/predict/", None, None),
    ("published predict", "post", f"/api/trained-models/{P}/predict/", None, None),
    ("predictions list", "get", "/api/predictions/", None, None),
    ("prediction detail", "get", f"/api/predictions/{Q}/", None, None),
    ("prediction preview", "get", f"/api/predictions/{Q}/preview/", None, None),
    ("evaluations list", "get", "/api/evaluations/", None, None),
    ("evaluation detail", "get", f"/api/evaluations/{E}/", None, None),
    ("evaluation images", "get", f"/api/evaluations/{E}/images/", None, None),
    ("evaluation picture", "get", f"/api/evaluations/{E}/images/{{row}}/picture/", None, None),
    ("orthophotos list", "get", "/api/orthophotos/", None, None),
    ("orthophoto detail", "get", f"/api/orthophotos/{ORTHO}/", None, None),
    ("orthophoto upload", "post", "/api/orthophotos/", None, None),
    ("detection runs list", "get", "/api/detection-runs/", None, None),
    ("detection run detail", "get", f"/api/detection-runs/{DR}/", None, None),
    ("detection run create", "post", "/api/detection-runs/", None, "detect"),
    ("detection run cancel", "post", f"/api/detection-runs/{DR}/cancel/", set_detection_status("queued"), None),
    ("detection run retry", "post", f"/api/detection-runs/{DR}/retry/", set_detection_status("failed"), None),
    ("detection run detections", "get", f"/api/detection-runs/{DR}/detections/", None, None),
    ("detection run download", "get", f"/api/detection-runs/{DR}/download/?as=csv", None, None),
    ("detection run sites", "get", f"/api/detection-runs/{DR}/sites/", None, None),
    ("detection run review", "post", f"/api/detection-runs/{DR}/review/", None, "bulk review"),
    ("detection run to dataset", "post", f"/api/detection-runs/{DR}/to-dataset/", confirm_detections, "new dataset"),
    ("detection detail", "get", f"/api/detections/{DT}/", None, None),
    ("detection review", "patch", f"/api/detections/{DT}/", None, {"state": "rejected"}),
    ("detection add", "post", "/api/detections/", None, "missed site"),
    ("labelling tasks list", "get", "/api/labelling-tasks/", None, None),
    ("labelling task create", "post", "/api/labelling-tasks/", None, "labelling task"),
    ("labelling task detail", "get", f"/api/labelling-tasks/{LT}/", labelling_task(), None),
    ("labelling task download", "get", f"/api/labelling-tasks/{LT}/download/?as=cvat_xml", BUILT, None),
    ("labelling task acceptance", "post", f"/api/labelling-tasks/{LT}/acceptance/", RETURNED, "returned"),
    ("labelling tasks by model version", "get", "/api/labelling-tasks/by-model-version/", None, None),
    ("ignore zones list", "get", "/api/ignore-zones/", None, None),
    ("ignore zone detail", "get", f"/api/ignore-zones/{Z}/", None, None),
    ("ignore zone create", "post", "/api/ignore-zones/", None, "zone"),
    ("ignore zone delete", "delete", f"/api/ignore-zones/{Z}/", None, None),
    ("model delete", "delete", f"/api/trained-models/{M}/", None, None),
    ("token obtain", "post", "/api/auth/token/", None, {"username": "admin"}),
    ("webhooks list", "get", "/api/webhooks/", webhook, None),
    ("webhook create", "post", "/api/webhooks/", None, {"url": "http://93.184.216.34/in", "events": ["run.failed"]}),
    ("webhook detail", "get", f"/api/webhooks/{WH}/", webhook, None),
    ("webhook update", "patch", f"/api/webhooks/{WH}/", webhook, {"name": "renamed"}),
    ("webhook delete", "delete", f"/api/webhooks/{WH}/", webhook, None),
    ("webhook deliveries", "get", f"/api/webhooks/{WH}/deliveries/", webhook, None),
    ("webhook deliveries list", "get", "/api/webhook-deliveries/", webhook, None),
    ("webhook delivery detail", "get", f"/api/webhook-deliveries/{WD}/", webhook, None),
    ("webhook redeliver", "post", f"/api/webhook-deliveries/{WD}/redeliver/", webhook, None),
    ("my notification settings", "get", "/api/me/notifications/", None, None),
    ("my notification settings update", "patch", "/api/me/notifications/", None, {"email_on_run_end": False}),
]

#                        anonymous viewer owner other_trainer publisher admin
EXPECTED = {
    "datasets list": (401, 200, 200, 200, 200, 200),
    "dataset detail": (401, 200, 200, 200, 200, 200),
    "dataset images": (401, 200, 200, 200, 200, 200),
    "dataset export": (401, 200, 200, 200, 200, 200),
    # Datasets are created and changed by Administrators (and by users given a dataset's change permission).
    "dataset create": (401, 403, 403, 403, 403, 201),
    "dataset update": (401, 403, 403, 403, 403, 200),
    "dataset add classes": (401, 403, 403, 403, 403, 201),
    # Allowed roles get past the permission check to the input check: no file (400).
    "dataset add image": (401, 403, 403, 403, 403, 400),
    "dataset import zip": (401, 403, 403, 403, 403, 400),
    "dataset tile orthophoto": (401, 403, 403, 403, 403, 400),
    "imports list": (401, 200, 200, 200, 200, 200),
    "import detail": (401, 404, 404, 404, 404, 200),  # the uploader's (an Administrator's)
    "image detail": (401, 200, 200, 200, 200, 200),
    "image update": (401, 403, 403, 403, 403, 200),
    "image boxes": (401, 200, 200, 200, 200, 200),
    "image add box": (401, 403, 403, 403, 403, 201),
    "box detail": (401, 200, 200, 200, 200, 200),
    "box update": (401, 403, 403, 403, 403, 200),
    "box delete": (401, 403, 403, 403, 403, 204),
    "runs list": (401, 200, 200, 200, 200, 200),
    "run detail": (401, 404, 200, 404, 200, 200),
    "run progress": (401, 404, 200, 404, 200, 200),
    "run metrics": (401, 404, 200, 404, 200, 200),
    "run log": (401, 404, 200, 404, 200, 200),
    "run tensorboard": (401, 404, 200, 404, 200, 200),
    "run samples": (401, 404, 200, 404, 200, 200),
    "run sample": (401, 404, 200, 404, 200, 200),
    "run create": (401, 403, 201, 201, 403, 201),
    "run cancel": (401, 404, 200, 404, 403, 200),
    "run retry": (401, 404, 201, 404, 403, 201),
    # Allowed roles get past the permission check to the rule: this run kept no checkpoint (400).
    "run resume": (401, 404, 400, 404, 403, 400),
    "run manifest": (401, 404, 200, 404, 200, 200),
    "run export": (401, 404, 200, 404, 200, 200),
    # Starting runs is a Trainer's and an Administrator's; a private model is "no such model" (400) to others.
    "run evaluate": (401, 403, 202, 400, 403, 202),
    "published evaluate": (401, 403, 202, 202, 403, 202),
    # An export is a run: the same people start one, on a model they may see.
    "model onnx export": (401, 403, 202, 400, 403, 202),
    "run delete": (401, 404, 204, 404, 403, 204),
    "models list": (401, 200, 200, 200, 200, 200),
    "model detail": (401, 404, 200, 404, 200, 200),
    "published detail": (401, 200, 200, 200, 200, 200),
    "model rename": (401, 404, 200, 404, 403, 200),
    "model publish": (401, 404, 403, 404, 200, 200),
    "published unpublish": (401, 403, 403, 403, 200, 200),
    "model lineage": (401, 404, 200, 404, 200, 200),
    "model metrics": (401, 404, 200, 404, 200, 200),
    "model download": (401, 404, 200, 404, 200, 200),
    "published download": (401, 200, 200, 200, 200, 200),
    "model onnx download": (401, 404, 200, 404, 200, 200),
    "model card": (401, 404, 200, 404, 200, 200),
    "published card": (401, 200, 200, 200, 200, 200),
    "model card download": (401, 404, 200, 404, 200, 200),
    # Allowed roles get past the permission check to the input check: no image (400).
    "model register": (401, 403, 403, 403, 403, 400),
    "model predict": (401, 404, 400, 404, 400, 400),
    "published predict": (401, 403, 400, 400, 400, 400),
    "predictions list": (401, 200, 200, 200, 200, 200),
    "prediction detail": (401, 404, 200, 404, 200, 200),
    "prediction preview": (401, 404, 200, 404, 200, 200),
    "evaluations list": (401, 200, 200, 200, 200, 200),
    "evaluation detail": (401, 404, 200, 404, 200, 200),
    "evaluation images": (401, 404, 200, 404, 200, 200),
    "evaluation picture": (401, 404, 200, 404, 200, 200),
    # Orthophotos are seen with their dataset; kept by those who may change it (an input check follows: no file).
    "orthophotos list": (401, 200, 200, 200, 200, 200),
    "orthophoto detail": (401, 200, 200, 200, 200, 200),
    "orthophoto upload": (401, 403, 403, 403, 403, 400),
    # A detection run is private to its owner like any run; starting one needs detection.run_detection and a
    # model the user may see (the owner's model is "no such model", 400, to another Trainer).
    "detection runs list": (401, 200, 200, 200, 200, 200),
    "detection run detail": (401, 404, 200, 404, 200, 200),
    "detection run create": (401, 403, 201, 400, 201, 201),
    "detection run cancel": (401, 404, 200, 404, 403, 200),
    "detection run retry": (401, 404, 201, 404, 403, 201),
    "detection run detections": (401, 404, 200, 404, 200, 200),
    "detection run download": (401, 404, 200, 404, 200, 200),
    "detection run sites": (401, 404, 200, 404, 200, 200),
    # A detection is seen and reviewed with its run (detection.review_detection: Trainer, Publisher, Administrator);
    # a site drawn on a run another Trainer cannot see is "no such detection run" (400).
    "detection run review": (401, 404, 200, 404, 200, 200),
    # Reviewed sites into a new dataset also need the permission to create datasets (Administrators).
    "detection run to dataset": (401, 404, 403, 404, 403, 202),
    "detection detail": (401, 404, 200, 404, 200, 200),
    "detection review": (401, 404, 200, 404, 200, 200),
    "detection add": (401, 403, 201, 400, 201, 201),
    # A labelling task is seen with its source (the detection run, or the dataset) and its model; making one and
    # reporting on it needs labelling.add_labellingtask (Trainer, Publisher, Administrator).
    "labelling tasks list": (401, 200, 200, 200, 200, 200),
    "labelling task create": (401, 403, 201, 400, 201, 201),
    "labelling task detail": (401, 404, 200, 404, 200, 200),
    "labelling task download": (401, 404, 200, 404, 200, 200),
    "labelling task acceptance": (401, 404, 200, 404, 200, 200),
    "labelling tasks by model version": (401, 200, 200, 200, 200, 200),
    # Ignore zones are seen with their dataset and changed by those who may change it.
    "ignore zones list": (401, 200, 200, 200, 200, 200),
    "ignore zone detail": (401, 200, 200, 200, 200, 200),
    "ignore zone create": (401, 403, 403, 403, 403, 201),
    "ignore zone delete": (401, 403, 403, 403, 403, 204),
    "model delete": (401, 404, 204, 404, 403, 204),
    "token obtain": (400, 400, 400, 400, 400, 400),  # open to all; a password is needed
    # Webhooks: every role may subscribe; a subscription and its log are its owner's (and every Administrator's).
    "webhooks list": (401, 200, 200, 200, 200, 200),
    "webhook create": (401, 201, 201, 201, 201, 201),
    "webhook detail": (401, 404, 200, 404, 404, 200),
    "webhook update": (401, 404, 200, 404, 404, 200),
    "webhook delete": (401, 404, 204, 404, 404, 204),
    "webhook deliveries": (401, 404, 200, 404, 404, 200),
    "webhook deliveries list": (401, 200, 200, 200, 200, 200),
    "webhook delivery detail": (401, 404, 200, 404, 404, 200),
    "webhook redeliver": (401, 404, 201, 404, 404, 201),
    "my notification settings": (401, 200, 200, 200, 200, 200),
    "my notification settings update": (401, 200, 200, 200, 200, 200),
}

CASES = [(name, role, EXPECTED[name][i]) for name, *_ in ENDPOINTS for i, role in enumerate(ROLES)]


def test_every_endpoint_has_a_row():
    assert {name for name, *_ in ENDPOINTS} == set(EXPECTED)


def test_the_matrix_covers_every_operation_of_the_schema(db):
    import io
    import re

    import yaml
    from django.core.management import call_command

    out = io.StringIO()
    call_command("spectacular", stdout=out)
    operations = {
        (method, re.sub(r"\{\w+\}", "{id}", path))
        for path, item in yaml.safe_load(out.getvalue())["paths"].items()
        for method in item
        if method in ("get", "post", "patch", "put", "delete")
    }
    covered = {(method, re.sub(r"\{\{?\w+\}\}?", "{id}", path.split("?")[0])) for _, method, path, *_ in ENDPOINTS}
    assert operations - {("get", "/api/schema/")} <= covered, sorted(operations - covered)


SQUARE = {"type": "Polygon", "coordinates": [[[14.5, 46.0], [14.6, 46.0], [14.6, 46.1], [14.5, 46.0]]]}
# The request bodies the rows name, made from the world of the test.
BODIES = {
    "create": lambda w: {"dataset": w.dataset.pk, "parameters": {"epochs": 1}},
    "evaluate": lambda w: {"model": w.model.pk, "dataset": w.dataset.pk},
    "box": lambda w: {"dataset_class": w.dataset.classes.first().pk, "x": 1, "y": 1, "width": 5, "height": 5},
    "detect": lambda w: {"model": w.model.pk, "orthophotos": [w.orthophoto.pk]},
    "zone": lambda w: {"dataset": w.dataset.pk, "name": "depot", "geometry": SQUARE},
    "bulk review": lambda w: {"detections": [w.detection_run.detections.first().pk], "state": "confirmed"},
    "new dataset": lambda w: {"dataset_name": "reviewed sites", "tile_size": 128},
    "missed site": lambda w: {
        "run": w.detection_run.pk,
        "orthophoto": w.orthophoto.pk,
        "pixel_box": [10, 10, 30, 30],
        "class_name": w.model.class_names[0],
    },
    "labelling task": lambda w: {"detection_run": w.detection_run.pk, "parameters": {"rule": "all", "count": 10}},
    "returned": lambda w: {"dataset": w.dataset.pk},
    "evaluate published": lambda w: {"model": w.published.pk, "dataset": w.dataset.pk},
    "onnx export": lambda w: {"model": w.model.pk},
}


@pytest.mark.parametrize("name, role, expected", CASES, ids=[f"{n}-{r}" for n, r, _ in CASES])
def test_permission_matrix(world, name, role, expected):
    _, method, path, prepare, body = next(e for e in ENDPOINTS if e[0] == name)
    if prepare:
        prepare(world)
    url = path.format(
        run=world.run.pk,
        model=world.model.pk,
        published=world.published.pk,
        dataset=world.dataset.pk,
        prediction=world.prediction.pk,
        evaluation=world.evaluation.pk,
        row=world.evaluation.images.first().pk,
        image=world.dataset.images.order_by("id").first().pk,
        annotation=Annotation.objects.filter(image__dataset=world.dataset).order_by("id").first().pk,
        dataset_import=world.dataset_import.pk,
        labelling_task=getattr(getattr(world, "labelling_task", None), "pk", None),
        webhook=getattr(getattr(world, "webhook", None), "pk", None),
        delivery=getattr(getattr(world, "delivery", None), "pk", None),
        sample=0,
        **(
            {
                **{k: getattr(world, k).pk for k in ("orthophoto", "detection_run", "ignore_zone")},
                "detection": world.detection_run.detections.first().pk,
            }
            if path.startswith(DETECTION)
            else {}
        ),
    )
    body = BODIES[body](world) if isinstance(body, str) else body
    response = getattr(world.client(role), method)(url, body, format="json")
    assert response.status_code == expected, (response.status_code, getattr(response, "data", None))
    if expected >= 400:
        assert set(response.json()) == {"code", "message", "errors"}


PRIVATE_PATHS = [
    "/api/training-runs/{run}/",
    "/api/training-runs/{run}/progress/",
    "/api/training-runs/{run}/metrics/",
    "/api/training-runs/{run}/log/",
    "/api/training-runs/{run}/log/?download=1",
    "/api/training-runs/{run}/tensorboard/",
    "/api/training-runs/{run}/samples/",
    "/api/training-runs/{run}/samples/0/",
    "/api/trained-models/{model}/",
    "/api/trained-models/{model}/metrics/",
    "/api/trained-models/{model}/lineage/",
    "/api/trained-models/{model}/download/?artifact=checkpoint",
    "/api/trained-models/{model}/download/?artifact=config",
    "/api/trained-models/{model}/download/?artifact=bundle",
    "/api/trained-models/{model}/download/?artifact=card",
    "/api/trained-models/{model}/card/",
]


@pytest.mark.parametrize("role", ["viewer", "other_trainer"])
def test_a_private_run_and_its_model_never_reach_another_user(world, role):
    client = world.client(role)
    runs = client.get("/api/training-runs/").json()["results"]
    models = client.get("/api/trained-models/?page_size=500").json()["results"]
    assert world.run.pk not in [r["id"] for r in runs]
    assert world.model.pk not in [m["id"] for m in models] and world.published.pk in [m["id"] for m in models]
    for path in PRIVATE_PATHS:
        response = client.get(path.format(run=world.run.pk, model=world.model.pk))
        assert response.status_code == 404, path
        assert b"weights" not in response.content and b"owner's run" not in response.content
    lineage = world.client("owner").get(f"/api/trained-models/{world.published.pk}/lineage/").json()
    assert lineage == {"ancestors": [], "descendants": []}  # the owner's model is not derived from it


def test_a_run_shared_with_a_peer_becomes_visible_to_that_peer(world):
    from guardian.shortcuts import assign_perm

    client = world.client("other_trainer")
    assert client.get(f"/api/training-runs/{world.run.pk}/").status_code == 404
    assign_perm("training.view_trainingrun", world.users["other_trainer"], world.run)
    assert client.get(f"/api/training-runs/{world.run.pk}/").status_code == 200
    assert client.get(f"/api/training-runs/{world.run.pk}/metrics/").status_code == 403  # no statistics perm
    assert client.post(f"/api/training-runs/{world.run.pk}/cancel/").status_code == 403


def test_training_needs_the_dataset_to_be_usable_by_the_user(world, make_dataset):
    from django.contrib.auth.models import Permission, User
    from guardian.shortcuts import assign_perm

    solo = User.objects.create_user("solo")
    solo.user_permissions.add(Permission.objects.get(codename="add_trainingrun"))
    other = make_dataset(name="restricted")
    assign_perm("datasets.view_dataset", solo, other)
    assign_perm("datasets.view_dataset", solo, world.dataset)
    assign_perm("datasets.use_dataset", solo, world.dataset)
    client = world.client("anonymous")
    client.force_authenticate(solo)
    ok = client.post("/api/training-runs/", {"dataset": world.dataset.pk}, format="json")
    refused = client.post("/api/training-runs/", {"dataset": other.pk}, format="json")
    assert ok.status_code == 201 and refused.status_code == 403
    assert "may not train on dataset 'restricted'" in refused.json()["message"]
