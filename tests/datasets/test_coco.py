import json

import pytest

from core.errors import ApplicationError
from datasets.coco_export import build_coco, export_coco
from datasets.coco_import import import_coco
from datasets.models import Annotation, Dataset, DatasetImage
from datasets.services import annotation_create, dataset_create, dataset_image_create
from datasets.splits import split_ids
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db


def test_split_is_reproducible_from_the_seed_and_disjoint():
    ids = list(range(1, 101))
    train, val = split_ids(ids, val_fraction=0.2, seed=7)
    assert (train, val) == split_ids(list(reversed(ids)), val_fraction=0.2, seed=7)
    assert len(val) == 20 and not train & val and train | val == set(ids)
    assert split_ids(ids, val_fraction=0.2, seed=8)[1] != val


def test_split_keeps_one_image_on_each_side():
    train, val = split_ids([1, 2], val_fraction=0.05, seed=0)
    assert len(train) == 1 and len(val) == 1


def test_export_uses_enabled_items_only_and_contiguous_category_ids():
    dataset = dataset_create(name="d", class_names=["zeta", "alpha", "mid"])
    zeta, alpha, mid = dataset.classes.order_by("position")
    images = [
        dataset_image_create(dataset=dataset, content=jpeg_bytes(colour=(i * 25, 0, 0)), original_name=f"{i}.jpg")
        for i in range(10)
    ]
    for image in images:
        annotation_create(image=image, dataset_class=mid, x=0, y=0, width=5, height=5)
        annotation_create(image=image, dataset_class=zeta, x=1, y=1, width=5, height=5, enabled=False)
    images[0].enabled = False
    images[0].save()

    train, val = build_coco(dataset, val_fraction=0.3, seed=0)
    assert (
        train["categories"]
        == val["categories"]
        == [
            {"id": 1, "name": "zeta", "supercategory": "waste"},
            {"id": 2, "name": "alpha", "supercategory": "waste"},
            {"id": 3, "name": "mid", "supercategory": "waste"},
        ]
    )
    ids = {img["id"] for img in train["images"]} | {img["id"] for img in val["images"]}
    assert ids == {image.id for image in images[1:]}
    annotations = train["annotations"] + val["annotations"]
    assert len(annotations) == 9 and {a["category_id"] for a in annotations} == {3}
    assert all(a["bbox"] == [0.0, 0.0, 5.0, 5.0] and a["area"] == 25.0 for a in annotations)


def test_export_refuses_missing_image_files(make_dataset, settings):
    dataset = make_dataset(images=3)
    (settings.MEDIA_ROOT / DatasetImage.objects.filter(dataset=dataset).first().image.name).unlink()
    with pytest.raises(ApplicationError, match="1 image file"):
        build_coco(dataset, val_fraction=0.2, seed=0)


def test_export_replaces_the_folder_atomically(make_dataset, tmp_path):
    dataset = make_dataset(images=5)
    out = tmp_path / "data"
    out.mkdir()
    (out / "stale.json").write_text("{}")
    export = export_coco(dataset, out, val_fraction=0.4, seed=1)
    assert sorted(p.name for p in out.iterdir()) == ["train.json", "val.json"]
    assert export.train_images + export.val_images == 5 and export.val_images == 2
    assert json.loads(export.val_file.read_text())["categories"][0]["name"] == "waste"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data-")]  # no temporary left behind


def _coco_folder(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.jpg").write_bytes(jpeg_bytes(64, 48, (10, 20, 30)))
    (images / "b.jpg").write_bytes(jpeg_bytes(64, 48, (90, 20, 30)))
    (images / "broken.jpg").write_bytes(b"garbage")
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes(64, 48, (1, 2, 3)))
    doc = {
        "categories": [{"id": 7, "name": "tyres"}, {"id": 3, "name": "waste"}],
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
            {"id": 3, "file_name": "broken.jpg", "width": 64, "height": 48},
            {"id": 4, "file_name": "../secret.jpg", "width": 64, "height": 48},
            {"id": 5, "file_name": "/etc/hostname", "width": 64, "height": 48},
            {"id": 6, "file_name": "missing.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [60, 40, 10, 10]},  # outside
            {"id": 3, "image_id": 2, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown category
            {"id": 4, "image_id": 2, "category_id": 7, "bbox": [2, 2, 0, 5]},  # zero width
            {"id": 5, "image_id": 2, "category_id": 7, "bbox": [2, 2, 5, 5]},
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    return tmp_path / "coco.json", images


def test_import_keeps_good_items_and_reports_each_rejected_one(tmp_path):
    json_file, images = _coco_folder(tmp_path)
    report = import_coco(json_path=json_file, images_dir=images, dataset_name="imported")
    dataset = Dataset.objects.get(name="imported")
    assert dataset.class_names() == ["waste", "tyres"]  # ordered by COCO category id
    assert report.images == 2 and report.annotations == 2
    reasons = " | ".join(f"{item}: {why}" for item, why in report.rejected)
    assert len(report.rejected) == 7, reasons
    for fragment in (
        "broken.jpg",
        "not a readable image",
        "outside the image folder",
        "file not found",
        "not inside",
        "unknown category_id 99",
        "positive width",
    ):
        assert fragment in reasons
    assert DatasetImage.objects.filter(dataset=dataset).count() == 2
    assert Annotation.objects.filter(image__dataset=dataset).count() == 2


def test_import_that_saves_nothing_rolls_back_and_removes_files(tmp_path, settings):
    images = tmp_path / "imgs"
    images.mkdir()
    (tmp_path / "coco.json").write_text(
        json.dumps({"categories": [{"id": 1, "name": "w"}], "images": [{"id": 1, "file_name": "nope.jpg"}]})
    )
    with pytest.raises(ApplicationError, match="No image could be imported"):
        import_coco(json_path=tmp_path / "coco.json", images_dir=images, dataset_name="none")
    assert not Dataset.objects.filter(name="none").exists()


@pytest.mark.parametrize("content, message", [("{not json", "not valid JSON"), ('{"images": 3}', "not a COCO")])
def test_import_refuses_files_that_are_not_coco(tmp_path, content, message):
    (tmp_path / "c.json").write_text(content)
    with pytest.raises(ApplicationError, match=message):
        import_coco(json_path=tmp_path / "c.json", images_dir=tmp_path, dataset_name="x")


def test_demo_dataset_that_fails_halfway_leaves_no_rows_and_no_files(settings, monkeypatch):
    from datasets import demo

    calls = {"n": 0}
    real = demo.generate_tile

    def flaky(seed, index, size=256):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("disk full")
        return real(seed, index, size)

    monkeypatch.setattr(demo, "generate_tile", flaky)
    images_root = settings.MEDIA_ROOT / "datasets"
    before = set(images_root.rglob("*.jpg")) if images_root.exists() else set()
    with pytest.raises(RuntimeError, match="disk full"):
        demo.demo_dataset_create(name="flaky", images=6)
    assert not Dataset.objects.filter(name="flaky").exists()
    assert (set(images_root.rglob("*.jpg")) if images_root.exists() else set()) == before


def test_images_sharing_an_id_are_refused_with_their_boxes(tmp_path):
    """COCO ties boxes to images by id: with two images of one id, nobody knows which image a box is on."""
    json_file, images = _coco_folder(tmp_path)
    (images / "c.jpg").write_bytes(jpeg_bytes(64, 48, (200, 20, 30)))
    doc = json.loads(json_file.read_text())
    doc["images"] = [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "c.jpg"}, {"id": 2, "file_name": "b.jpg"}]
    doc["annotations"] = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},
        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [1, 1, 10, 10]},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [3, 3, 10, 10]},
    ]
    json_file.write_text(json.dumps(doc))
    report = import_coco(json_path=json_file, images_dir=images, dataset_name="dupes")
    reasons = [why for _, why in report.rejected]
    assert report.images == 1 and report.annotations == 1
    assert reasons.count("image id 1 is used by 2 images; none of them is imported") == 2
    assert any("image_id 1 is shared by several images" in why for why in reasons)
    assert "duplicate annotation id (the first one is kept)" in reasons
    dataset = Dataset.objects.get(name="dupes")
    assert list(dataset.images.values_list("original_name", flat=True)) == ["b.jpg"]
    assert Annotation.objects.get(image__dataset=dataset).dataset_class.name == "waste"


@pytest.mark.parametrize(
    "categories, message",
    [
        (
            [{"id": 1, "name": "waste"}, {"id": 1, "name": "tyres"}],
            r"Category id 1 is used twice \('waste' and 'tyres'\)",
        ),
        ([{"name": "waste"}], r"categories\[0\] has no integer id"),
        ([{"id": "1", "name": "waste"}], r"categories\[0\] has no integer id"),
        (["waste"], r"categories\[0\] is not an object"),
    ],
)
def test_a_file_with_ambiguous_categories_is_refused_whole(tmp_path, categories, message):
    json_file, images = _coco_folder(tmp_path)
    doc = json.loads(json_file.read_text())
    doc["categories"] = categories
    json_file.write_text(json.dumps(doc))
    with pytest.raises(ApplicationError, match=message):
        import_coco(json_path=json_file, images_dir=images, dataset_name="ambiguous")
    assert not Dataset.objects.filter(name="ambiguous").exists()
