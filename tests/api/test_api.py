import io

import pytest
import yaml
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from openapi_spec_validator import validate
from rest_framework.test import APIClient

from datasets.demo import demo_dataset_create
from models_registry.models import TrainedModel
from tests.world import register_model
from training.models import TrainingRun
from training.services import training_run_create

pytestmark = pytest.mark.django_db


def count_queries(client, url):
    user = client.handler._force_user
    if user is not None:  # a fresh user object: no permission cache carried over from an earlier request
        client.force_authenticate(type(user).objects.get(pk=user.pk))
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(ctx), response.json()


def add_runs(world, n, tmp_path, user="owner"):
    for i in range(n):
        run = training_run_create(dataset=world.dataset, name=f"r{i}", created_by=world.users[user])
        TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
        run.refresh_from_db()
        register_model(run, tmp_path)


@pytest.mark.parametrize("role", ["owner", "publisher", "admin"])
def test_list_endpoints_run_a_constant_number_of_queries(world, tmp_path, role):
    client = world.client(role)
    urls = ["/api/training-runs/?page_size=100", "/api/trained-models/?page_size=100", "/api/datasets/?page_size=100"]
    for url in urls:  # warm process-wide caches (content types) once
        count_queries(client, url)
    small = [count_queries(client, url) for url in urls]
    add_runs(world, 12, tmp_path)
    for i in range(4):
        demo_dataset_create(name=f"d{i}", images=3, created_by=world.users["admin"])
    large = [count_queries(client, url) for url in urls]
    for (n_small, body_small), (n_large, body_large), url in zip(small, large, urls, strict=True):
        assert body_large["count"] > body_small["count"], url
        assert n_small == n_large, (url, n_small, n_large)


def test_progress_is_one_cheap_query_after_authentication(world):
    client = world.client("owner")
    n, body = count_queries(client, f"/api/training-runs/{world.run.pk}/progress/")
    assert set(body) >= {"status", "percent", "epoch", "max_epochs", "iteration", "max_iterations", "eta_seconds"}
    # user's global perms, their groups' perms, the row by its key, the object perms of user and groups on it:
    # each an index lookup (bench/api_lists.py measures it against a superuser's single query)
    assert n <= 5, n


def test_dataset_detail_reports_classes_counts_and_extent(db, make_dataset):
    from django.contrib.auth.models import User

    admin = User.objects.create_superuser("root")
    dataset = demo_dataset_create(name="geo", images=4)
    client = APIClient()
    client.force_authenticate(admin)
    body = client.get(f"/api/datasets/{dataset.pk}/").json()
    assert [c["name"] for c in body["classes"]] == ["waste_pile", "construction_debris"]
    assert [c["category_id"] for c in body["classes"]] == [1, 2]
    assert body["image_count"] == 4 and body["annotation_count"] == dataset.images.values("annotations").count()
    assert body["extent"]["type"] == "Polygon"
    lons = [p[0] for p in body["extent"]["coordinates"][0]]
    assert 14.47 < min(lons) < max(lons) < 14.6
    images = client.get(f"/api/datasets/{dataset.pk}/images/?page_size=2").json()
    assert images["count"] == 4 and len(images["results"]) == 2
    assert images["results"][0]["location"]["type"] == "Point"


def test_filters_search_and_ordering(world, tmp_path):
    add_runs(world, 3, tmp_path)
    client = world.client("admin")
    ids = [r["id"] for r in client.get("/api/training-runs/?ordering=name").json()["results"]]
    names = [r["name"] for r in client.get("/api/training-runs/?ordering=name").json()["results"]]
    assert names == sorted(names) and len(ids) == 4
    assert client.get("/api/training-runs/?search=r1").json()["count"] == 1
    assert client.get("/api/training-runs/?status=failed").json()["count"] == 0
    assert client.get("/api/training-runs/?created_by=owner").json()["count"] == 4
    assert client.get("/api/training-runs/?created_after=2999-01-01T00:00:00Z").json()["count"] == 0
    assert client.get("/api/trained-models/?published=true").json()["count"] == 1
    assert client.get(f"/api/trained-models/?dataset={world.dataset.pk}&published=false").json()["count"] == 4
    best = client.get("/api/trained-models/?ordering=-bbox_mAP_50&published=false").json()["results"][0]
    assert best["bbox_mAP_50"] == 0.9


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"dataset": "x"}, "dataset"),
        ({}, "dataset"),
        ({"dataset": 999999}, "dataset"),
        ({"dataset": "{dataset}", "parameters": {"epochs": -1}}, "epochs"),
        ({"dataset": "{dataset}", "parameters": {"epochs": "many"}}, "epochs"),
        ({"dataset": "{dataset}", "architecture": "nope"}, "architecture"),
        ({"dataset": "{dataset}", "base_model": 999999}, "base_model"),
    ],
)
def test_bad_run_requests_get_one_json_error_shape_and_queue_nothing(world, payload, field):
    payload = {k: (world.dataset.pk if v == "{dataset}" else v) for k, v in payload.items()}
    before = TrainingRun.objects.count()
    response = world.client("owner").post("/api/training-runs/", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and body["message"] and field in str(body["errors"])
    assert TrainingRun.objects.count() == before


def test_service_rules_come_back_as_400_with_the_reason(world, tmp_path):
    client = world.client("admin")
    TrainingRun.objects.filter(pk=world.run.pk).update(status="running")
    response = client.delete(f"/api/training-runs/{world.run.pk}/")
    assert response.status_code == 400 and "cancel it before deleting" in response.json()["message"]
    response = client.delete(f"/api/trained-models/{world.published.pk}/")
    assert response.status_code == 400 and "unpublish it first" in response.json()["message"]
    TrainingRun.objects.filter(pk=world.run.pk).update(status="succeeded")
    child_run = training_run_create(dataset=world.dataset, base_model=world.model, created_by=world.users["admin"])
    response = client.delete(f"/api/trained-models/{world.model.pk}/")
    assert response.status_code == 400 and str(child_run.pk) in str(response.json()["errors"])
    response = client.post(f"/api/training-runs/{world.run.pk}/cancel/")
    assert response.status_code == 400 and "only queued or running" in response.json()["message"]


def test_deleting_a_model_removes_its_files_after_the_commit(world, settings, django_capture_on_commit_callbacks):
    folder = settings.MEDIA_ROOT / "models" / world.model.artifact_key
    assert folder.is_dir()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = world.client("owner").delete(f"/api/trained-models/{world.model.pk}/")
    assert response.status_code == 204
    assert folder.is_dir() and len(callbacks) == 1  # not before the commit
    callbacks[0]()
    assert not folder.exists() and not TrainedModel.objects.filter(pk=world.model.pk).exists()


def test_unexpected_errors_are_a_bare_500(world, monkeypatch):
    from models_registry.api import trained_models as api

    def boom(*args, **kwargs):
        raise RuntimeError("secret /var/lib/internal/path")

    monkeypatch.setattr(api, "model_lineage", boom)
    client = world.client("owner")
    client.raise_request_exception = False
    response = client.get(f"/api/trained-models/{world.model.pk}/lineage/")
    assert response.status_code == 500
    assert response.json() == {"code": "server_error", "message": "Internal server error.", "errors": {}}
    assert b"secret" not in response.content and b"Traceback" not in response.content


def test_download_streams_the_stored_file_with_its_hash(world):
    response = world.client("owner").get(f"/api/trained-models/{world.model.pk}/download/?artifact=checkpoint")
    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content) == b"weights of run %d" % world.run.pk
    assert response["X-Checksum-SHA256"] == world.model.checkpoint_sha256
    assert "attachment" in response["Content-Disposition"]
    bad = world.client("owner").get(f"/api/trained-models/{world.model.pk}/download/?artifact=../../etc/passwd")
    assert bad.status_code == 400


def test_lineage_lists_ancestors_and_descendants(world, tmp_path):
    run2 = training_run_create(dataset=world.dataset, base_model=world.model, created_by=world.users["owner"])
    TrainingRun.objects.filter(pk=run2.pk).update(status="succeeded")
    run2.refresh_from_db()
    child = register_model(run2, tmp_path)
    client = world.client("owner")
    down = client.get(f"/api/trained-models/{world.model.pk}/lineage/").json()
    assert [d["id"] for d in down["descendants"]] == [child.pk]
    up = client.get(f"/api/trained-models/{child.pk}/lineage/").json()
    assert [a["id"] for a in up["ancestors"]] == [world.model.pk]


def test_run_metrics_come_from_the_model_history(world):
    body = world.client("owner").get(f"/api/training-runs/{world.run.pk}/metrics/").json()
    assert [e["epoch"] for e in body["epochs"]] == [1, 2] and body["iterations"] == []


def test_token_authentication_for_scripts(world):
    out = io.StringIO()
    call_command("drf_create_token", "owner", stdout=out)
    token = out.getvalue().split()[2]
    client = APIClient()
    assert client.get("/api/training-runs/").status_code == 401
    assert client.get("/api/training-runs/").headers["WWW-Authenticate"] == "Token"
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert [r["id"] for r in client.get("/api/training-runs/").json()["results"]] == [world.run.pk]


def test_session_authentication_enforces_csrf(world):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world.users["owner"])
    assert client.get("/api/training-runs/").status_code == 200
    response = client.post("/api/training-runs/", {"dataset": world.dataset.pk}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["message"]


def test_openapi_schema_is_valid_and_documents_every_endpoint(db):
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    validate(schema)
    paths = schema["paths"]
    for path, methods in {
        "/api/datasets/": ["get"],
        "/api/datasets/{id}/": ["get"],
        "/api/datasets/{id}/images/": ["get"],
        "/api/training-runs/": ["get", "post"],
        "/api/training-runs/{id}/": ["get", "delete"],
        "/api/training-runs/{id}/cancel/": ["post"],
        "/api/training-runs/{id}/retry/": ["post"],
        "/api/training-runs/{id}/progress/": ["get"],
        "/api/training-runs/{id}/metrics/": ["get"],
        "/api/training-runs/{id}/log/": ["get"],
        "/api/training-runs/{id}/tensorboard/": ["get"],
        "/api/trained-models/": ["get"],
        "/api/trained-models/{id}/": ["get", "patch", "delete"],
        "/api/trained-models/{id}/publish/": ["post"],
        "/api/trained-models/{id}/unpublish/": ["post"],
        "/api/trained-models/{id}/lineage/": ["get"],
        "/api/trained-models/{id}/metrics/": ["get"],
        "/api/trained-models/{id}/download/": ["get"],
    }.items():
        assert path in paths, path
        for method in methods:
            assert "responses" in paths[path][method], (path, method)
    create = paths["/api/training-runs/"]["post"]
    assert "requestBody" in create and "201" in create["responses"]


def test_swagger_ui_is_served_from_local_static_files(world):
    response = world.client("owner").get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn." not in html and "unpkg" not in html


def test_sync_roles_is_idempotent_and_leaves_the_app_registry_intact(db):
    from django.apps import apps
    from django.contrib.auth.models import Group

    from access.roles import ROLES, sync_roles

    modules = {c.label: c.models_module for c in apps.get_app_configs()}
    sync_roles()
    sync_roles()
    assert {c.label: c.models_module for c in apps.get_app_configs()} == modules
    assert sorted(Group.objects.values_list("name", flat=True)) == sorted(ROLES)
    publisher = Group.objects.get(name="Publisher")
    assert publisher.permissions.filter(codename="publish_trainedmodel").exists()
    assert not Group.objects.get(name="Viewer").permissions.filter(codename="add_trainingrun").exists()


@pytest.mark.parametrize(
    "url, status",
    [
        ("/api/datasets/?created_after=1079-10-03T03:56:22%2B21:36", 200),  # offset PostgreSQL refuses: normalised
        ("/api/training-runs/?created_before=0001-01-01T00:00:00%2B14:00", 400),  # before year 1 in UTC
        ("/api/training-runs/null,null/progress/", 404),
        ("/api/trained-models/abc/", 404),
        ("/api/training-runs/99999999999999999999999/", 404),
    ],
)
def test_inputs_the_fuzzer_found_are_handled(world, url, status):
    client = world.client("admin")
    client.raise_request_exception = False
    response = client.get(url)
    assert response.status_code == status, response.content[:300]
