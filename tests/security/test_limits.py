"""Limits and what stays inside (issue 10): image bombs, thumbnails, server paths, queue share, tokens, sign-in."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from PIL import Image

from datasets.models import DatasetImage
from training.execution.sync import RunSync
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def staff(world, role) -> Client:
    return world.staff_client(role)


# --- 6. image bombs and thumbnails -----------------------------------------------------------------------------


def png_bytes(width, height, mode="1") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, format="PNG")
    return out.getvalue()


def test_images_over_the_pixel_limit_are_refused_before_decoding(world, settings):
    from core.errors import ApplicationError
    from datasets.services import dataset_image_create

    settings.DUMPSITE_MAX_IMAGE_PIXELS = 1_000_000
    bomb = png_bytes(4000, 4000)  # 16 MP of one bit: a few kB on disk
    assert len(bomb) < 50_000
    with pytest.raises(ApplicationError, match=r"4000x4000 = 16,000,000 pixels; the limit is 1,000,000"):
        dataset_image_create(dataset=world.dataset, content=bomb, original_name="bomb.png")
    assert not DatasetImage.objects.filter(original_name="bomb.png").exists()
    dataset_image_create(dataset=world.dataset, content=png_bytes(1000, 1000, "RGB"), original_name="ok.png")


def test_pillows_bomb_warning_is_a_refusal_not_a_warning(world, settings):
    from PIL import Image as PILImage

    from core.errors import ApplicationError
    from datasets.images import decode_image

    settings.DUMPSITE_MAX_IMAGE_PIXELS = 10**9  # our own check passes; Pillow's warning must still refuse
    previous = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = 1000
    try:
        with pytest.raises(ApplicationError, match="too large to decode safely"):
            decode_image(png_bytes(40, 40))  # 1,600 px: past Pillow's limit, under twice it (a warning)
    finally:
        PILImage.MAX_IMAGE_PIXELS = previous


def test_a_thumbnail_decodes_its_image_once(world, settings):
    from core.file_cache import cached_picture
    from datasets.views import thumbnail_name

    image = DatasetImage.objects.filter(dataset=world.dataset).first()
    client = staff(world, "viewer")
    first = client.get(f"/datasets/images/{image.pk}/thumbnail.jpg")
    assert first.status_code == 200 and first["Content-Type"] == "image/jpeg"
    assert cached_picture(thumbnail_name(image)) is not None  # kept in the storage
    # The original is not read again: even gone, the thumbnail (with the current boxes) is served.
    with open(image.image.path, "wb") as fh:
        fh.write(b"not an image any more")
    second = client.get(f"/datasets/images/{image.pk}/thumbnail.jpg")
    assert second.status_code == 200
    assert Image.open(io.BytesIO(second.content)).size == Image.open(io.BytesIO(first.content)).size


def test_thumbnails_of_images_over_the_limit_are_not_decoded(world, settings):
    image = DatasetImage.objects.filter(dataset=world.dataset).first()
    settings.DUMPSITE_MAX_IMAGE_PIXELS = image.width * image.height - 1
    assert staff(world, "viewer").get(f"/datasets/images/{image.pk}/thumbnail.jpg").status_code == 404


# --- 8. internal details stay inside ---------------------------------------------------------------------------


def test_a_worker_crash_shows_a_reason_and_a_reference_not_a_traceback(world, monkeypatch, settings, caplog):
    from training import execution
    from training.execution import train

    def explode(*args, **kwargs):
        raise RuntimeError(f"boom in {settings.MEDIA_ROOT}/datasets/secret-place")

    run = TrainingRun.objects.create(
        name="crashes", dataset=world.dataset, parameters=world.run.parameters, created_by=world.users["owner"]
    )
    monkeypatch.setattr(train, "export_coco", explode)
    assert execution.training_run_execute(run_id=run.pk) == "failed"
    run.refresh_from_db()
    assert run.error_message.startswith("Internal error in the worker (reference ")
    assert "Traceback" not in run.error_message + run.log_tail and "/" not in run.error_message
    reference = run.error_message.split("reference ")[1].split(")")[0]
    assert any(reference in r.getMessage() and r.exc_info for r in caplog.records)  # operators find it


def test_error_messages_and_logs_shown_to_users_name_no_server_paths(world, settings):
    from training.services import training_run_fail

    TrainingRun.objects.filter(pk=world.run.pk).update(status="running")
    path = f"{settings.TRAINING_WORK_ROOT}/run-{world.run.pk}/data/val.json"
    training_run_fail(run_id=world.run.pk, message=f"FileNotFoundError: {path}", log_tail=f"loading {path}\n")
    body = world.client("owner").get(f"/api/training-runs/{world.run.pk}/").json()
    log = world.client("owner").get(f"/api/training-runs/{world.run.pk}/log/").json()["tail"]
    assert str(settings.TRAINING_WORK_ROOT) not in body["error_message"] + log
    assert f"<runs>/run-{world.run.pk}/data/val.json" in body["error_message"]


def test_the_downloaded_log_names_no_server_paths(world, settings):
    work = world.run.work_dir
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.log").write_text(f"work_dir = {work}\nimages in {settings.MEDIA_ROOT}/datasets\n" * 3000)
    RunSync(world.run.pk, work).push()  # as the worker stores it
    response = world.client("owner").get(f"/api/training-runs/{world.run.pk}/log/?download=1")
    text = b"".join(response.streaming_content).decode()
    assert response.status_code == 200 and text.count("work_dir = <runs>/run-") == 3000
    assert str(settings.MEDIA_ROOT) not in text and str(settings.TRAINING_WORK_ROOT) not in text


# --- also: queue share, retry ownership, tokens, throttling -----------------------------------------------------


def test_one_user_cannot_fill_the_queue(world, settings):
    settings.TRAINING_MAX_QUEUED_PER_USER = 2
    client = world.client("other_trainer")
    codes = [
        client.post("/api/training-runs/", {"dataset": world.dataset.pk}, format="json").status_code for _ in range(3)
    ]
    assert codes == [201, 201, 400]
    refused = client.post("/api/training-runs/", {"dataset": world.dataset.pk}, format="json").json()
    assert "already have 2 queued jobs (2 runs; the limit is 2)" in refused["message"]
    assert (
        world.client("owner").post("/api/training-runs/", {"dataset": world.dataset.pk}, format="json").status_code
        == 201
    )  # the limit is per user


def test_retrying_someone_elses_run_keeps_its_owner(world):
    TrainingRun.objects.filter(pk=world.run.pk).update(status="failed")
    response = world.client("admin").post(f"/api/training-runs/{world.run.pk}/retry/")
    assert response.status_code == 201
    retry = TrainingRun.objects.get(pk=response.json()["id"])
    assert retry.created_by == world.users["owner"] and retry.attempt == 2 and retry.retry_of_id == world.run.pk
    assert world.client("owner").get(f"/api/training-runs/{retry.pk}/").status_code == 200
    from audit.models import AuditEvent

    event = AuditEvent.objects.get(action="retried", object_id=world.run.pk)
    assert event.actor == world.users["admin"]
    again = world.client("owner").post(f"/api/training-runs/{world.run.pk}/retry/").json()
    assert again["name"].endswith("(attempt 3)")


def test_tokens_expire_and_a_fresh_one_comes_from_the_token_endpoint(world, settings):
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    settings.DUMPSITE_TOKEN_TTL = 3600
    user = world.users["viewer"]
    user.set_password("correct horse battery")
    user.save()
    old = Token.objects.create(user=user)
    Token.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(seconds=3601))
    client = APIClient()
    expired = client.get("/api/datasets/", HTTP_AUTHORIZATION=f"Token {old.key}")
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    wrong = client.post("/api/auth/token/", {"username": "viewer", "password": "nope"}, format="json")
    assert wrong.status_code == 400
    fresh = client.post(
        "/api/auth/token/", {"username": "viewer", "password": "correct horse battery"}, format="json"
    ).json()
    assert fresh["token"] != old.key and fresh["expires_at"]
    assert client.get("/api/datasets/", HTTP_AUTHORIZATION=f"Token {fresh['token']}").status_code == 200
    assert client.get("/api/datasets/", HTTP_AUTHORIZATION=f"Token {old.key}").status_code == 401


@pytest.mark.parametrize("path", ["/admin/login/", "/api/auth/login/", "/api/auth/token/"])
def test_sign_in_doors_are_throttled(world, settings, path):
    from django.core.cache import cache

    cache.clear()
    settings.DUMPSITE_LOGIN_RATE = "5/minute"
    client = Client()
    codes = [client.post(path, {"username": "admin", "password": f"guess{i}"}).status_code for i in range(6)]
    assert 429 not in codes[:5] and codes[5] == 429
    # Another address still gets through; the same username from it does not.
    other = Client(REMOTE_ADDR="10.9.9.9")
    assert other.post(path, {"username": "someone-else", "password": "x"}).status_code != 429
    assert other.post(path, {"username": "ADMIN", "password": "x"}).status_code == 429
    # Behind the trusted proxy, clients are told apart by the address the proxy appends.
    cache.clear()
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_FOR_PROTO", "https")
    proxied = [Client(HTTP_X_FORWARDED_FOR=f"203.0.113.{n}") for n in (1, 2)]
    codes = [proxied[0].post(path, {"username": f"u{i}", "password": "x"}).status_code for i in range(6)]
    assert codes[5] == 429 and proxied[1].post(path, {"username": "v", "password": "x"}).status_code != 429
    cache.clear()


def test_a_bomb_in_a_coco_import_is_one_rejected_item_on_the_command_line(world, tmp_path, settings):
    import json

    from django.core.management import call_command

    from tests.conftest import jpeg_bytes

    settings.DUMPSITE_MAX_IMAGE_PIXELS = 1_000_000
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "bomb.png").write_bytes(png_bytes(5000, 5000))
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "categories": [{"id": 1, "name": "waste"}],
                "images": [{"id": 1, "file_name": "ok.jpg"}, {"id": 2, "file_name": "bomb.png"}],
                "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5]}],
            }
        )
    )
    out = io.StringIO()
    call_command(
        "import_coco",
        str(tmp_path / "c.json"),
        str(tmp_path),
        "--name",
        "with a bomb",
        "--user",
        "admin",
        stdout=out,
        stderr=io.StringIO(),
    )
    text = out.getvalue()
    assert "rejected image 2 ('bomb.png'): The image is 5000x5000 = 25,000,000 pixels" in text
    assert "1 images, 0 annotations imported" in text
