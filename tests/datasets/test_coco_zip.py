"""A dataset out as a COCO zip and back in: the same images (by sha256), boxes and classes; pycocotools reads it;
the API, the command line and a run's recorded split give the same archive."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from datasets.coco_import import import_coco_zip
from datasets.coco_zip import COCO_NAME, export_document, stream_coco_zip
from datasets.demo import demo_dataset_create
from datasets.models import Annotation, Dataset, DatasetImage
from datasets.zips import ZipLimits, check_zip

pytestmark = pytest.mark.django_db
LIMITS = ZipLimits(max_members=10_000, max_bytes=2**30, max_ratio=100)


def write_zip(doc: dict, path: Path) -> Path:
    path.write_bytes(b"".join(stream_coco_zip(doc)))
    return path


def content(dataset: Dataset) -> dict[str, list[tuple]]:
    """sha256 -> sorted (class, x, y, w, h) of the enabled boxes of the enabled images."""
    found: dict[str, list[tuple]] = {}
    for image in DatasetImage.objects.filter(dataset=dataset, enabled=True):
        found[image.sha256] = sorted(
            (a.dataset_class.name, a.x, a.y, a.width, a.height)
            for a in Annotation.objects.filter(image=image, enabled=True).select_related("dataset_class")
        )
    return found


def test_a_dataset_exported_and_imported_again_is_the_same_dataset(tmp_path):
    from pycocotools.coco import COCO

    source = demo_dataset_create(name="round trip", images=12, seed=21)
    hidden = DatasetImage.objects.filter(dataset=source).order_by("id").first()
    DatasetImage.objects.filter(pk=hidden.pk).update(enabled=False)  # a disabled image stays out of the export
    archive = write_zip(export_document(source), tmp_path / "out.zip")

    contents = check_zip(archive, LIMITS)
    assert (contents.coco_file, contents.layout) == (COCO_NAME, "plain COCO")
    with zipfile.ZipFile(archive) as opened:
        (tmp_path / COCO_NAME).write_bytes(opened.read(COCO_NAME))
    coco = COCO(str(tmp_path / COCO_NAME))  # pycocotools reads it as it is
    assert sorted(coco.getCatIds()) == [1, 2] and len(coco.getImgIds()) == 11
    doc = json.loads((tmp_path / COCO_NAME).read_text())
    assert [c["name"] for c in doc["categories"]] == source.class_names()
    assert all(name.startswith("images/") for name in contents.files if name != COCO_NAME)
    report = import_coco_zip(archive_path=archive, contents=contents, dataset_name="round trip, back")
    assert report.rejected == []
    copy = report.dataset
    assert copy.class_names() == source.class_names()
    before, after = content(source), content(copy)
    assert hidden.sha256 not in after and set(after) == set(before)
    for sha, boxes in before.items():
        assert len(after[sha]) == len(boxes)
        for (c1, *b1), (c2, *b2) in zip(boxes, after[sha], strict=True):
            assert c1 == c2 and max(abs(p - q) for p, q in zip(b1, b2, strict=True)) <= 0.01


def test_the_api_streams_the_zip_of_a_visible_dataset_only(world, tmp_path):
    client = world.client("viewer")
    response = client.get(f"/api/datasets/{world.dataset.pk}/export/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response.streaming and "attachment" in response["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        doc = json.loads(archive.read(COCO_NAME))
        assert len(doc["images"]) == world.dataset.images.filter(enabled=True).count()
        assert all(archive.getinfo(i["file_name"]).file_size > 0 for i in doc["images"])
    # A user without a role sees no dataset: the archive is as hidden as the dataset (404, not 403).
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    stranger = APIClient()
    stranger.force_authenticate(get_user_model().objects.create_user("no-role", password="x"))
    assert stranger.get(f"/api/datasets/{world.dataset.pk}/export/").status_code == 404


def test_a_runs_recorded_split_exports_exactly_that_side(world):
    from training.models import TrainingManifest

    manifest = TrainingManifest.objects.get(run=world.run)
    client = world.client("owner")
    for side, ids in (("train", manifest.train_image_ids), ("val", manifest.val_image_ids)):
        response = client.get(f"/api/training-runs/{world.run.pk}/export/", {"side": side})
        assert response.status_code == 200, response.content[:300]
        with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
            assert sorted(i["id"] for i in json.loads(archive.read(COCO_NAME))["images"]) == sorted(ids)
    bad = client.get(f"/api/training-runs/{world.run.pk}/export/", {"side": "test"})
    assert bad.status_code == 400 and "train or val" in json.dumps(bad.json())


def test_the_command_writes_the_archive_or_nothing(tmp_path):
    from core.commands import ensure_operator

    ensure_operator()
    demo_dataset_create(name="cli export", images=6, seed=22)
    out = tmp_path / "cli.zip"
    call_command("export_coco", "--dataset", "cli export", "--out", str(out), stdout=io.StringIO())
    assert check_zip(out, LIMITS).layout == "plain COCO"
    with pytest.raises(CommandError, match="exists"):
        call_command("export_coco", "--dataset", "cli export", "--out", str(out), stdout=io.StringIO())
    with pytest.raises(CommandError, match="No dataset 'nope'"):
        call_command("export_coco", "--dataset", "nope", "--out", str(tmp_path / "x.zip"), stdout=io.StringIO())
    assert not (tmp_path / "x.zip").exists() and not list(tmp_path.glob("*.part"))
