"""Checks of a registered model as its users get it, run inside the pipeline test on the model it trained (one
training shared): its downloads loaded by stock MMDetection, and predict checks through the API and the command
line."""

from __future__ import annotations

import io
import json
from pathlib import Path

from django.core.management import call_command

from models_registry.models import TrainedModel
from tests.conftest import wait_for


def api_client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def check_downloads_in_stock_mmdetection(model: TrainedModel, dataset, tmp_path: Path) -> None:
    import hashlib
    import zipfile

    from tests.e2e.stock import run_stock_mmdet

    client = api_client(model.created_by)
    config = client.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "config"})
    assert config.status_code == 200 and config["Content-Disposition"].endswith('config.py"')
    assert config["X-Checksum-SHA256"] == hashlib.sha256(config.content).hexdigest()
    checkpoint = client.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "checkpoint"})
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "config.py").write_bytes(config.content)
    (tmp_path / "dl" / "checkpoint.pth").write_bytes(b"".join(checkpoint.streaming_content))
    image = dataset.images.order_by("id").first().image.path
    stock = run_stock_mmdet(tmp_path / "dl", tmp_path / "dl" / "config.py", tmp_path / "dl" / "checkpoint.pth", image)
    assert stock["classes"] == stock["config_classes"] == ["waste_pile", "construction_debris"]
    confident = [(label, score) for label, score in zip(stock["labels"], stock["scores"], strict=True) if score > 0.5]
    assert confident and all(0 <= label < 2 for label, _ in confident), stock["scores"][:10]

    bundle = client.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "bundle"})
    assert bundle.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(bundle.streaming_content))) as zf:
        names = set(zf.namelist())
        root = f"model-{model.pk}"
        assert names == {
            f"{root}/{n}"
            for n in ("checkpoint.pth", "config.py", "config.json", "model_card.json", "model_card.md", "SHA256SUMS")
        }
        sums = dict(line.split("  ")[::-1] for line in zf.read(f"{root}/SHA256SUMS").decode().splitlines())
        for name, digest in sums.items():
            assert hashlib.sha256(zf.read(f"{root}/{name}")).hexdigest() == digest, name
        card = json.loads(zf.read(f"{root}/model_card.json"))
        assert zf.read(f"{root}/config.py") == config.content
    assert sums["checkpoint.pth"] == model.checkpoint_sha256
    assert card["classes"] == model.class_names and card["metrics"]["best_epoch"] == model.best_epoch
    assert [e["epoch"] for e in card["metrics"]["per_epoch"]] == [e["epoch"] for e in model.metrics_history]
    assert card["dataset"]["train_images"] + card["dataset"]["val_images"] == 200
    assert card["training"]["parameters"]["epochs"] == 5 and card["library_versions"]["mmdet"] == "3.3.0"
    assert card["files"]["checkpoint.pth"]["sha256"] == model.checkpoint_sha256


def warm_children(worker) -> list:
    """The warm children of predict checks (``python -m engine.warm``) of ``worker``'s cluster."""
    import psutil

    found = []
    for proc in psutil.Process(worker.proc.pid).children(recursive=True):
        try:
            if "engine.warm" in proc.cmdline():
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def predicted(client, model: TrainedModel, image: Path, **fields) -> dict:
    """A predict check through the API, followed to its end."""
    upload = io.BytesIO(image.read_bytes())
    upload.name = "tile.jpg"
    answer = client.post(f"/api/trained-models/{model.pk}/predict/", {"image": upload, **fields}, format="multipart")
    assert answer.status_code == 202, answer.json()
    prediction_id = answer.json()["id"]
    return wait_for(
        lambda: (
            (p := client.get(f"/api/predictions/{prediction_id}/").json())["status"] in ("succeeded", "failed") and p
        ),
        timeout=300,
        interval=0.2,
        message="the prediction",
    )


def check_predict(model: TrainedModel, dataset, tmp_path: Path, worker) -> None:
    from django_q.models import OrmQ

    from models_registry.models import Prediction

    client = api_client(model.created_by)
    image = Path(dataset.images.order_by("id").first().image.path)
    queued_before = OrmQ.objects.count()
    refused = client.post(
        f"/api/trained-models/{model.pk}/predict/",
        {"image": io.BytesIO(b"this is not an image")},
        format="multipart",
    )
    assert refused.status_code == 400 and "not a readable image" in refused.json()["message"], refused.json()
    assert not Prediction.objects.exists() and OrmQ.objects.count() == queued_before

    done = predicted(client, model, image)
    assert done["status"] == "succeeded", done["error_message"]
    boxes = done["result"]["boxes"]
    assert done["result"]["engine"] == "pytorch" and not done["result"]["warm"]
    assert boxes and {b["class_name"] for b in boxes} <= {"waste_pile", "construction_debris"}
    assert all(b["score"] >= 0.3 and len(b["bbox"]) == 4 for b in boxes)
    preview = client.get(done["preview_url"])
    assert preview.status_code == 200 and b"".join(preview.streaming_content)[:2] == b"\xff\xd8"

    # The worker kept the model loaded in its warm child: the next check skips the load. A warm child that dies
    # is replaced, and the check after it succeeds.
    again = predicted(client, model, image)
    assert again["result"]["warm"] and again["result"]["boxes"] == boxes, again
    children = warm_children(worker)
    assert len(children) == 1, children
    children[0].kill()
    # its worker reaps it when the next check finds it dead: until then it is a zombie
    wait_for(lambda: not children[0].is_running() or children[0].status() == "zombie", timeout=10, message="the kill")
    after = predicted(client, model, image)
    assert after["status"] == "succeeded" and not after["result"]["warm"] and after["result"]["boxes"] == boxes
    assert [c.pid for c in warm_children(worker)] not in ([], [children[0].pid])

    out = tmp_path / "predict.json"
    stdout = io.StringIO()
    call_command(
        "predict", str(model.pk), str(image), "--out", str(out), "--preview-dir", str(tmp_path / "pv"), stdout=stdout
    )
    result = json.loads(out.read_text())
    assert result["images"][0]["boxes"] == boxes and result["model"]["id"] == model.pk
    assert len(list((tmp_path / "pv").glob("*.jpg"))) == 1 and "box(es)" in stdout.getvalue()
