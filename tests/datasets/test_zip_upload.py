"""COCO zip uploads: checked at once (an unsafe archive is refused with its reason and leaves nothing), imported by
the worker's service with progress and the item report, into a new dataset or an existing one."""

from __future__ import annotations

import json
import re
import stat
import threading
import time
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from guardian.shortcuts import assign_perm

from core.storage import delete_stored, store_file, stored_names
from datasets.import_execution import ProgressReporter, dataset_import_execute, dataset_imports_fail_stale
from datasets.imports import dataset_import_create, imports_root, stored_upload
from datasets.models import Annotation, Dataset, DatasetImage, DatasetImport
from datasets.services import dataset_create, dataset_image_create
from tests.datasets import zip_layouts
from tests.datasets.zip_layouts import CLASSES, TILES, tile_bytes

pytestmark = pytest.mark.django_db


def boxes_of(dataset: Dataset) -> set[tuple]:
    return {
        (a.image.width, a.dataset_class.name, a.x, a.y, a.width, a.height)
        for a in Annotation.objects.filter(image__dataset=dataset).select_related("image", "dataset_class")
    }


EXPECTED_BOXES = {(size[0], CLASSES[c], x, y, w, h) for _, size, _, boxes in TILES for c, x, y, w, h in boxes}


def upload(client, path: Path, **fields):
    with open(path, "rb") as fh:
        return client.post("/api/datasets/import/", {"archive": fh, **fields}, format="multipart")


def run_import(job_id: int) -> DatasetImport:
    dataset_import_execute(import_id=job_id)
    return DatasetImport.objects.get(pk=job_id)


@pytest.mark.parametrize("layout", list(zip_layouts.LAYOUTS))
def test_each_tools_layout_becomes_a_dataset_with_its_boxes(world, tmp_path, layout):
    archive = zip_layouts.LAYOUTS[layout](tmp_path / "export.zip")
    response = upload(world.client("admin"), archive, dataset_name=f"from {layout}")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["layout"] == layout and body["archive_name"] == "export.zip"
    key = DatasetImport.objects.get(pk=body["id"]).key
    assert stored_names(stored_upload(key)) == [stored_upload(key, "archive.zip")]  # kept in the storage

    job = run_import(body["id"])
    assert job.status == "succeeded", job.error_message
    assert (job.images_imported, job.annotations_imported, job.rejected_count) == (3, 3, 0)
    assert (job.items_done, job.items_total, job.percent) == (3, 3, 100.0)
    assert job.dataset.name == f"from {layout}" and job.dataset.class_names() == CLASSES
    assert job.dataset.created_by == world.users["admin"]
    assert boxes_of(job.dataset) == EXPECTED_BOXES
    assert stored_names(stored_upload(job.key)) == [] and not (imports_root() / job.key).exists()  # both gone


def test_into_an_existing_dataset_classes_are_matched_by_name_and_known_images_reported(world, tmp_path):
    dataset = dataset_create(name="field survey", class_names=["Tyres", "waste", "rubble"])
    dataset_image_create(dataset=dataset, content=tile_bytes(0), original_name="already.jpg")
    response = upload(world.client("admin"), zip_layouts.cvat(tmp_path / "cvat.zip"), dataset=dataset.pk)
    job = run_import(response.json()["id"])
    assert job.status == "succeeded" and job.dataset == dataset
    assert dataset.class_names() == ["Tyres", "waste", "rubble"]  # nothing added, order kept
    assert job.images_imported == 2 and job.rejected_count == 2
    reasons = {r["item"]: r["reason"] for r in job.rejected}
    assert "the same image is already in the dataset (already.jpg)" in reasons["image 1 ('tile_a.jpg')"]
    assert "image_id 1 was not imported" in reasons["annotation 1"]
    assert {(b[1], b[4]) for b in boxes_of(dataset)} == {("waste", 10.0), ("Tyres", 40.0)}


def test_classes_the_dataset_lacks_are_added_only_when_asked(world, tmp_path):
    dataset = dataset_create(name="waste only", class_names=["waste"])
    archive = zip_layouts.plain(tmp_path / "plain.zip")
    refused = run_import(upload(world.client("admin"), archive, dataset=dataset.pk).json()["id"])
    assert refused.status == "failed"
    assert "has no class 'tyres'" in refused.error_message and "ask for new classes" in refused.error_message
    assert dataset.images.count() == 0 and dataset.class_names() == ["waste"]

    archive = zip_layouts.plain(tmp_path / "plain.zip")
    job = run_import(upload(world.client("admin"), archive, dataset=dataset.pk, add_classes=True).json()["id"])
    assert job.status == "succeeded" and job.classes_added == ["tyres"]
    assert dataset.class_names() == ["waste", "tyres"] and boxes_of(dataset) == EXPECTED_BOXES


def test_items_are_reported_and_the_good_ones_kept(world, tmp_path):
    doc = {
        "categories": [{"id": 1, "name": "waste"}],
        "images": [
            {"id": 1, "file_name": "images/ok.jpg"},
            {"id": 2, "file_name": "images/broken.jpg"},
            {"id": 3, "file_name": "../../etc/passwd"},
            {"id": 4, "file_name": "images/missing.jpg"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 40, 10, 10]},
        ],
    }
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("annotations.json", json.dumps(doc))
        out.writestr("images/ok.jpg", tile_bytes(0))
        out.writestr("images/broken.jpg", tile_bytes(1)[:200])
    job = run_import(upload(world.client("admin"), archive, dataset_name="mixed").json()["id"])
    assert job.status == "succeeded" and (job.images_imported, job.annotations_imported) == (1, 1)
    reasons = " | ".join(f"{r['item']}: {r['reason']}" for r in job.rejected)
    assert job.rejected_count == 4, reasons
    for fragment in ("broken.jpg'): The file is not a readable image", "passwd'): not in the archive", "not inside"):
        assert fragment in reasons
    detail = world.client("admin").get(f"/api/dataset-imports/{job.pk}/").json()
    assert detail["rejected_count"] == 4 and len(detail["rejected"]) == 4 and detail["percent"] == 100.0


def _zip(path: Path, members: dict, symlinks: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


COCO = json.dumps(
    {"images": [{"id": 1, "file_name": "x.png"}], "annotations": [], "categories": [{"id": 1, "name": "w"}]}
)
ATTACKS = {
    "zip slip up": ({"annotations.json": COCO, "../x.png": b"owned"}, {}, r"'\.\./x\.png' climbs out of the archive"),
    "zip slip absolute": ({"annotations.json": COCO, "/etc/x.png": b"owned"}, {}, r"'/etc/x\.png' is an absolute"),
    "symlink": ({"annotations.json": COCO}, {"images/x.png": "/etc/passwd"}, r"'images/x\.png' is a symbolic link"),
    "member count": ({"annotations.json": COCO, **{f"images/{i}.png": b"x" for i in range(12)}}, {}, "13 members"),
    "bytes": ({"annotations.json": COCO, "images/x.png": b"x" * 600_000}, {}, r"unpacks to [0-9,]+ bytes"),
    "ratio": ({"annotations.json": COCO, "images/x.png": b"\0" * (8 * 2**20)}, {}, "a zip bomb"),
    "nested zip": ({"annotations.json": COCO, "images/more.zip": b"PK"}, {}, "an archive inside the archive"),
}


@pytest.mark.parametrize("attack", [*ATTACKS, "empty file", "not a zip"])
def test_unsafe_archives_are_refused_with_their_reason_and_leave_nothing(world, tmp_path, settings, attack):
    settings.DUMPSITE_ZIP_MAX_MEMBERS = 10
    settings.DUMPSITE_ZIP_MAX_BYTES = 500_000 if attack == "bytes" else 50 * 2**20
    if attack == "empty file":
        archive, reason = tmp_path / "a.zip", r"empty \(0 bytes\)"
        archive.write_bytes(b"")
    elif attack == "not a zip":
        archive, reason = tmp_path / "a.zip", "not a zip archive"
        archive.write_text("hello")
    else:
        members, links, reason = ATTACKS[attack]
        archive = _zip(tmp_path / "a.zip", members, links)
    tree = Path(settings.MEDIA_ROOT).parent
    before = set(tree.rglob("*"))
    imports_before = DatasetImport.objects.count()
    response = upload(world.client("admin"), archive, dataset_name="attacked")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid"
    assert re.search(reason, response.json()["message"]), response.json()["message"]
    assert not Dataset.objects.filter(name="attacked").exists() and DatasetImport.objects.count() == imports_before
    assert set(tree.rglob("*")) - before == set()  # not one file or folder left behind
    assert (
        not Path("/etc/x.png").exists() and not (tree / "x.png").exists() and not (tmp_path.parent / "x.png").exists()
    )


def test_a_json_that_is_not_coco_fails_the_import_with_its_reason_and_creates_nothing(world, tmp_path):
    archive = _zip(tmp_path / "a.zip", {"annotations.json": json.dumps({"hello": "world"}), "images/a.jpg": b"x"})
    job = run_import(upload(world.client("admin"), archive, dataset_name="not coco").json()["id"])
    assert job.status == "failed" and "annotations.json is not a COCO detection file" in job.error_message
    assert not Dataset.objects.filter(name="not coco").exists() and not stored_names(stored_upload(job.key))


def test_several_json_files_get_a_clear_error_and_the_choice_is_honoured(world, tmp_path):
    plain = zipfile.ZipFile(zip_layouts.plain(tmp_path / "plain.zip"))
    members = {n: plain.read(n) for n in plain.namelist()}
    members["train.json"] = members.pop("annotations.json")
    members["val.json"] = json.dumps({"images": [], "categories": []})
    archive = _zip(tmp_path / "two.zip", members)
    refused = upload(world.client("admin"), archive, dataset_name="two")
    assert refused.status_code == 400
    message = refused.json()["message"]
    assert "holds 2 JSON files; say which is the COCO file: train.json, val.json" in message
    assert refused.json()["errors"]["json_files"] == ["train.json", "val.json"]
    chosen = upload(world.client("admin"), archive, dataset_name="two", coco_file="train.json")
    assert chosen.status_code == 202 and run_import(chosen.json()["id"]).images_imported == 3


def test_who_may_upload_where(world, tmp_path):
    archive = zip_layouts.plain(tmp_path / "p.zip")
    assert upload(world.client("viewer"), archive, dataset_name="v").status_code == 403
    assert upload(world.client("owner"), archive, dataset=world.dataset.pk).status_code == 403
    # A user who may change one dataset (an object permission) may import into it, and create nothing.
    editor = User.objects.create_user("editor")
    mine = dataset_create(name="editor's", class_names=CLASSES)
    assign_perm("datasets.view_dataset", editor, mine)
    assign_perm("datasets.change_dataset", editor, mine)
    client = world.client("anonymous")
    client.force_authenticate(editor)
    assert upload(client, archive, dataset=mine.pk).status_code == 202
    assert upload(client, archive, dataset_name="new one").status_code == 403
    assert upload(client, archive, dataset=world.dataset.pk).status_code == 404  # not even visible to them
    assert upload(client, archive, dataset=mine.pk, dataset_name="both").status_code == 400
    # Imports are seen by their uploader, and by those who may change every dataset.
    assert [j["dataset_name"] for j in client.get("/api/dataset-imports/").json()["results"]] == ["editor's"]
    job = DatasetImport.objects.get(created_by=editor)
    assert world.client("owner").get(f"/api/dataset-imports/{job.pk}/").status_code == 404
    assert world.client("admin").get(f"/api/dataset-imports/{job.pk}/").status_code == 200
    queued = DatasetImport.objects.filter(status="queued")
    key = queued.get().key
    assert queued.count() == 1 and stored_names(stored_upload(key)) == [stored_upload(key, "archive.zip")]


@pytest.mark.django_db(transaction=True)
def test_progress_is_seen_by_others_while_the_import_transaction_is_open(roles):
    from django.db import connections, transaction

    job = DatasetImport.objects.create(key="k1", new_dataset_name="x", status="running")
    seen = []
    with ProgressReporter(job.pk, interval=0.05) as reporter, transaction.atomic():
        DatasetImage.objects.filter(pk=-1).select_for_update().first()  # the import's transaction is open
        reporter.update(5, 20)
        time.sleep(0.3)

        def look():
            seen.append(DatasetImport.objects.values_list("items_done", "items_total").get(pk=job.pk))
            connections.close_all()

        other = threading.Thread(target=look)
        other.start()
        other.join()
    assert seen == [(5, 20)]
    job.refresh_from_db()
    assert job.heartbeat_at is not None and job.eta_seconds(job.heartbeat_at) is None  # no start time: no ETA


def test_an_import_whose_worker_stopped_reporting_is_failed_and_its_archive_removed(db, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    (tmp_path / "archive.zip").write_bytes(b"PK")
    store_file(tmp_path / "archive.zip", stored_upload("stale", "archive.zip"))
    long_ago = timezone.now() - timedelta(seconds=settings.DUMPSITE_IMPORT_STALE_SECONDS + 5)
    stale = DatasetImport.objects.create(key="stale", status="running", heartbeat_at=long_ago, new_dataset_name="a")
    fresh = DatasetImport.objects.create(
        key="fresh", status="running", heartbeat_at=timezone.now(), new_dataset_name="b"
    )
    assert dataset_imports_fail_stale() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == "failed" and "stopped reporting" in stale.error_message
    assert not stored_names(stored_upload("stale"))
    assert fresh.status == "running"


def test_the_service_refuses_before_writing_anything(world, tmp_path):
    kept = Path(settings.MEDIA_ROOT) / "imports"

    def left() -> set:
        return set(kept.rglob("*")) if kept.exists() else set()

    before = left()
    with pytest.raises(Exception, match="You may not create datasets"):
        dataset_import_create(upload=None, dataset_name="x", user=world.users["viewer"])
    with pytest.raises(Exception, match="already exists"):
        dataset_import_create(upload=None, dataset_name="shared", user=world.users["admin"])
    assert left() == before


def test_an_upload_the_storage_lost_fails_with_a_reason(world, tmp_path):
    job_id = upload(world.client("admin"), zip_layouts.plain(tmp_path / "p.zip"), dataset_name="lost").json()["id"]
    delete_stored(stored_upload(DatasetImport.objects.get(pk=job_id).key))
    job = run_import(job_id)
    assert job.status == "failed" and "The upload is no longer stored" in job.error_message


def test_an_uploader_who_lost_the_right_meanwhile_gets_a_failed_import_saying_so(world, tmp_path):
    from django.contrib.auth.models import Group

    editor = User.objects.create_user("soon gone")
    editor.groups.add(Group.objects.get(name="Administrator"))
    client = world.client("anonymous")
    client.force_authenticate(editor)
    job_id = upload(client, zip_layouts.plain(tmp_path / "p.zip"), dataset_name="revoked").json()["id"]
    editor.groups.clear()
    job = run_import(job_id)
    assert job.status == "failed" and job.error_message == "You may not create datasets."
    assert not Dataset.objects.filter(name="revoked").exists()
