"""``resize`` not given is chosen from the dataset (bench ``aerial_steps``: crops beat shrunk whole tiles on large
tiles): crops when the enabled images' median longer side exceeds ``image_size`` or a ``target_gsd`` is given, whole
otherwise; with crops the augmentations default to the aerial recipe's (all eight orientations, colour and scale
jitter: they helped on crops and cost on shrunk whole tiles); what is given wins, the choice is stored with the run,
and the admin's start form leaves it to the run."""

from __future__ import annotations

import re

import pytest

from datasets.selectors import longest_side_median
from datasets.services import annotation_create, dataset_image_create
from engine.params import validate_params
from tests.conftest import jpeg_bytes
from training.models import TrainingRun
from training.services import training_run_create
from training.services.runs import training_run_validate


def resize_of(dataset, **given) -> str:
    params = training_run_validate(
        dataset=dataset, architecture="retinanet_r18_tiny", base_model=None, parameters=given
    )
    return params["resize"]


def test_large_images_take_crops_and_small_ones_stay_whole(make_dataset):
    small = make_dataset(name="small tiles", images=3, size=(256, 200))  # the tiny preset's input is 256 px
    large = make_dataset(name="large tiles", images=3, size=(640, 480))
    assert longest_side_median(small) == 256 and longest_side_median(large) == 640
    assert resize_of(small) == "whole" and resize_of(large) == "crops"
    assert resize_of(large, image_size=640) == "whole"  # no larger than the network input
    assert resize_of(large, resize="whole") == "whole"  # what is given wins
    assert resize_of(small, target_gsd=0.05) == "crops"  # resampling to a resolution needs crops


def test_crops_take_the_aerial_augmentations_unless_told_otherwise(make_dataset):
    small = make_dataset(name="small tiles", images=3, size=(256, 200))
    large = make_dataset(name="large tiles", images=3, size=(640, 480))

    def augmentations(dataset, **given):
        params = training_run_validate(
            dataset=dataset, architecture="retinanet_r18_tiny", base_model=None, parameters=given
        )
        return params["orientations"], params["colour"], params["scale_jitter"]

    assert augmentations(small) == ("flips", "none", 0.0)
    assert augmentations(large) == ("all", "jitter", 0.2)
    assert augmentations(small, resize="crops") == ("all", "jitter", 0.2)
    assert augmentations(large, resize="whole") == ("flips", "none", 0.0)
    assert augmentations(large, orientations="flips", scale_jitter=0.0) == ("flips", "jitter", 0.0)
    assert validate_params("retinanet_r18_tiny", {"resize": "crops"})["orientations"] == "all"  # the engine's rule


def test_the_median_of_the_enabled_images_decides(make_dataset):
    mixed = make_dataset(name="mixed", images=2, size=(640, 480))
    first = mixed.classes.get()
    for i in range(3):
        content = jpeg_bytes(128, 96, colour=(60 * i, 200, 9))
        image = dataset_image_create(dataset=mixed, content=content, original_name=f"s{i}.jpg")
        annotation_create(image=image, dataset_class=first, x=1, y=2, width=10, height=12)
    assert resize_of(mixed) == "whole"  # 3 of 5 are small
    mixed.images.filter(width=128).update(enabled=False)
    assert resize_of(mixed) == "crops"


def test_the_choice_is_stored_with_the_run(make_dataset):
    run = training_run_create(dataset=make_dataset(name="large", size=(640, 480)), parameters={"epochs": 1})
    assert TrainingRun.objects.get(pk=run.pk).parameters["resize"] == "crops"


def test_the_admin_start_form_leaves_every_choice_to_the_run(world):
    """A browser submits the option shown selected: each choice opens on "default", so an untouched form asks for
    nothing (the first real option once sent orientations "none" and optimizer AdamW for every preset)."""
    client = world.staff_client("owner")
    html = client.get("/admin/training/trainingrun/start/").content.decode()
    for name in ("orientations", "colour", "resize", "optimizer", "split", "device"):
        select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', html, re.S)
        assert select is not None, name
        first = re.search(r"<option([^>]*)>([^<]*)</option>", select.group(1))
        assert first is not None and 'value=""' in first.group(1) and first.group(2).startswith("default"), name
    assert "default (crops when the images are larger than image_size, else whole)" in html
    assert "default (all with resize crops, else flips)" in html
    form = {"dataset": world.dataset.pk, "architecture": "retinanet_r18_tiny", "orientations": "", "optimizer": ""}
    response = client.post("/admin/training/trainingrun/start/", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    run = TrainingRun.objects.latest("id")
    assert run.parameters["orientations"] == "flips" and run.parameters["optimizer"] == "AdamW"


@pytest.mark.parametrize("size, resize", [((256, 200), "whole"), ((640, 480), "crops")])
def test_the_dry_run_says_which_was_chosen(make_dataset, size, resize):
    from training.services import training_run_preview

    plan = training_run_preview(
        dataset=make_dataset(name=f"ds{size[0]}", size=size),
        architecture=None,
        base_model=None,
        parameters={},
        user=None,
    )
    assert plan.parameters["resize"] == resize
    assert plan.pipeline[0].startswith("resized so that" if resize == "whole" else "kept at full resolution"), (
        plan.pipeline
    )
