"""``manage.py detect`` queues what it is told: ``--resample`` and ``--no-resample`` reach the run's parameters as
booleans (argparse's ``type=bool`` once read "false" as true), leaving both out keeps the default, and a value
after the flag is not taken for one."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from training.models import TrainingRun


def queued(world, *flags: str) -> TrainingRun:
    out = io.StringIO()
    args = ["detect", "--model", str(world.model.pk), "--orthophoto", str(world.orthophoto.pk)]
    call_command(*args, "--user", world.users["owner"].username, *flags, stdout=out)
    assert "Queued detection run" in out.getvalue()
    return TrainingRun.objects.filter(kind="detect").latest("id")


@pytest.mark.parametrize("flags, resample", [(("--no-resample",), False), (("--resample",), True), ((), True)])
def test_the_resample_flag_reaches_the_run_as_a_boolean(world, flags, resample):
    run = queued(world, *flags)
    assert run.parameters["resample"] is resample
    assert run.status == "queued" and run.parameters["orthophotos"] == [world.orthophoto.pk]


def test_a_value_after_the_flag_is_refused_and_nothing_is_queued(world):
    assert world.orthophoto  # built (with the owner's own detection run) before counting
    before = TrainingRun.objects.filter(kind="detect").count()
    # The flag takes no value: "false" is read as a GeoTIFF to detect on, never as the flag's value.
    with pytest.raises(CommandError, match="^No file false.$"):
        queued(world, "--resample", "false", "--dataset", str(world.dataset.pk))
    assert TrainingRun.objects.filter(kind="detect").count() == before
