import re

import pytest
from django.contrib.gis.geos import Point

from core.errors import ApplicationError
from datasets.models import Annotation, Dataset, DatasetImage
from datasets.selectors import dataset_assert_trainable
from datasets.services import (
    annotation_create,
    clean_original_name,
    dataset_create,
    dataset_image_create,
    validate_class_names,
)
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "names, problem",
    [
        ([], "empty"),
        (["waste", ""], "classes[1]"),
        (["waste", "   "], "classes[1]"),
        (["waste", "Waste"], "duplicate"),
        (["x" * 101], "longer than"),
        (["a\x00b"], "NUL"),
        ([3], "non-empty string"),
    ],
)
def test_bad_class_names_are_refused_with_the_reason(names, problem):
    with pytest.raises(ApplicationError) as err:
        validate_class_names(names)
    assert problem in str(err.value)


def test_class_names_keep_quotes_newlines_unicode_and_code_as_text():
    names = ['say "hi"', "line\nbreak", "déchets ♻", "__import__('os').system('id')"]
    dataset = dataset_create(name="odd", class_names=names)
    assert dataset.class_names() == names


def test_dataset_create_with_bad_classes_leaves_nothing():
    with pytest.raises(ApplicationError):
        dataset_create(name="bad", class_names=["a", "a"])
    assert not Dataset.objects.filter(name="bad").exists()


def test_image_is_stored_under_its_hash_whatever_the_uploaded_name(settings):
    dataset = dataset_create(name="d", class_names=["waste"])
    image = dataset_image_create(
        dataset=dataset, content=jpeg_bytes(), original_name="../../etc/passwd", location=Point(14.5, 46.0, srid=4326)
    )
    # Its hash and a random part: an import that rolls back removes only what it stored itself.
    assert re.fullmatch(rf"datasets/{dataset.pk}/images/{image.sha256}-[0-9a-f]{{8}}\.jpg", image.image.name)
    assert image.original_name == "passwd"
    assert (settings.MEDIA_ROOT / image.image.name).is_file()
    assert (image.width, image.height) == (64, 48)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"not an image at all", "not a readable image"),
        (jpeg_bytes()[:200], "not a readable image"),  # truncated JPEG
    ],
)
def test_unreadable_images_are_refused_and_no_file_is_left(content, reason, settings):
    dataset = dataset_create(name="d", class_names=["waste"])
    with pytest.raises(ApplicationError) as err:
        dataset_image_create(dataset=dataset, content=content, original_name="x.jpg")
    assert reason in str(err.value)
    assert DatasetImage.objects.count() == 0
    folder = settings.MEDIA_ROOT / "datasets" / str(dataset.pk)
    assert not folder.exists() or not any(folder.rglob("*.*"))


def test_oversized_image_is_refused(settings):
    settings.DUMPSITE_MAX_IMAGE_BYTES = 100
    dataset = dataset_create(name="d", class_names=["waste"])
    with pytest.raises(ApplicationError, match="too large"):
        dataset_image_create(dataset=dataset, content=jpeg_bytes(), original_name="x.jpg")


def test_duplicate_image_in_one_dataset_is_refused():
    dataset = dataset_create(name="d", class_names=["waste"])
    dataset_image_create(dataset=dataset, content=jpeg_bytes(), original_name="a.jpg")
    with pytest.raises(ApplicationError, match="already in the dataset"):
        dataset_image_create(dataset=dataset, content=jpeg_bytes(), original_name="b.jpg")


@pytest.mark.parametrize(
    "box",
    [
        (0, 0, 0, 10),
        (0, 0, 10, -1),
        (-1, 0, 10, 10),
        (60, 0, 10, 10),
        (0, 40, 10, 10),
        (0, 0, 65, 48),
        (float("nan"), 0, 1, 1),
        ("1", 0, 1, 1),
        (True, 0, 1, 1),
    ],
)
def test_boxes_outside_the_image_or_without_size_are_refused(box):
    dataset = dataset_create(name="d", class_names=["waste"])
    image = dataset_image_create(dataset=dataset, content=jpeg_bytes(64, 48), original_name="a.jpg")
    x, y, w, h = box
    with pytest.raises(ApplicationError):
        annotation_create(image=image, dataset_class=dataset.classes.get(), x=x, y=y, width=w, height=h)
    assert Annotation.objects.count() == 0


def test_box_touching_the_far_edges_is_accepted():
    dataset = dataset_create(name="d", class_names=["waste"])
    image = dataset_image_create(dataset=dataset, content=jpeg_bytes(64, 48), original_name="a.jpg")
    ann = annotation_create(image=image, dataset_class=dataset.classes.get(), x=0, y=0, width=64, height=48)
    assert (ann.width, ann.height) == (64.0, 48.0)


def test_class_of_another_dataset_is_refused():
    d1 = dataset_create(name="d1", class_names=["waste"])
    d2 = dataset_create(name="d2", class_names=["waste"])
    image = dataset_image_create(dataset=d1, content=jpeg_bytes(), original_name="a.jpg")
    with pytest.raises(ApplicationError, match="another dataset"):
        annotation_create(image=image, dataset_class=d2.classes.get(), x=0, y=0, width=5, height=5)


def test_trainable_check_names_what_is_missing(make_dataset):
    empty = dataset_create(name="empty", class_names=["waste"])
    with pytest.raises(ApplicationError, match="no enabled images"):
        dataset_assert_trainable(empty)
    no_boxes = make_dataset(name="noboxes", boxes=False)
    with pytest.raises(ApplicationError, match="no enabled annotations"):
        dataset_assert_trainable(no_boxes)
    disabled = make_dataset(name="disabled")
    Annotation.objects.filter(image__dataset=disabled).update(enabled=False)
    with pytest.raises(ApplicationError, match="no enabled annotations"):
        dataset_assert_trainable(disabled)
    good = make_dataset(name="good")
    assert dataset_assert_trainable(good)["annotations"] == 3


@pytest.mark.parametrize("raw, clean", [("a/b/c.jpg", "c.jpg"), ("..\\..\\x.png", "x.png"), ("ok\n.jpg", "ok.jpg")])
def test_original_names_keep_only_a_printable_base_name(raw, clean):
    assert clean_original_name(raw) == clean
