"""``manage.py labelling_task``: images with a model's boxes for CVAT and Label Studio, from a detection run's
tiles or a dataset run through a model, chosen by a rule; a worker builds it. With ``--wait`` it is followed with a
progress bar, and ``--out`` copies the three archives into a folder."""

from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.commands import USER_HELP, cli_call, cli_user
from core.storage import copy_stored
from datasets.selectors import dataset_by_ref
from detection.selectors import detection_runs_visible_to
from models_registry.selectors import models_visible_to

from ...building import task_archive
from ...formats import FORMATS, archive_name
from ...models import LabellingTask
from ...selection import RULES
from ...services import labelling_task_create


def _model(user, pk: int | None, what: str):
    if pk is None:
        return None
    found = models_visible_to(user).filter(pk=pk).first()
    if found is None:
        raise CommandError(f"No {what} #{pk}.")
    return found


class Command(BaseCommand):
    help = (
        "Export images with a model's boxes as pre-annotations (CVAT COCO 1.0, CVAT for images 1.1, Label Studio "
        "tasks), from a detection run's tiles or a dataset run through the model, chosen by a rule."
    )

    def add_arguments(self, parser):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--detection-run", type=int, help="A finished detection run's id (its tiles).")
        source.add_argument("--dataset", help="Name or id of a dataset to run the model on.")
        parser.add_argument("--model", type=int, help="The model's id (a detection run: its own model).")
        parser.add_argument("--second-model", type=int, help="The other model of the disagreement rule.")
        parser.add_argument("--rule", choices=RULES, default="all", help="How tiles are chosen (default: all).")
        parser.add_argument("--count", type=int, default=100, help="How many tiles at most (default 100).")
        parser.add_argument("--band", type=float, nargs=2, metavar=("LOW", "HIGH"), help="The uncertain scores.")
        parser.add_argument("--weak-classes", type=int, help="How many of the lowest-AP classes (weak_classes).")
        parser.add_argument("--min-distance", type=float, help="Metres between the centres of two chosen tiles.")
        parser.add_argument("--threshold", type=float, help="The lowest score exported as a box (default 0.3).")
        parser.add_argument("--tile-size", type=int, help="Tile size in pixels (default: the run's window size).")
        parser.add_argument("--image-url", help="What Label Studio puts before each file name.")
        parser.add_argument("--to-label", help="Also add the chosen pictures to this dataset, marked to label.")
        parser.add_argument("--name", default="", help="The task's name.")
        parser.add_argument("--wait", action="store_true", help="Follow the task until it ends.")
        parser.add_argument("--out", type=Path, help="With --wait: copy the archives into this folder.")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, **o):
        user = cli_user(o["user"])
        values = {
            "rule": o["rule"],
            "count": o["count"],
            "band": o["band"],
            "weak_classes": o["weak_classes"],
            "min_distance_m": o["min_distance"],
            "score_threshold": o["threshold"],
            "tile_size": o["tile_size"],
            "image_url": o["image_url"],
        }
        with cli_call():
            run = None
            if o["detection_run"] is not None:
                run = detection_runs_visible_to(user).filter(pk=o["detection_run"]).first()
                if run is None:
                    raise CommandError(f"No detection run #{o['detection_run']}.")
            task = labelling_task_create(
                user=user,
                name=o["name"],
                detection_run=run,
                dataset=dataset_by_ref(user, o["dataset"]) if o["dataset"] else None,
                model=_model(user, o["model"], "model"),
                second_model=_model(user, o["second_model"], "model"),
                parameters={k: v for k, v in values.items() if v is not None},
                to_label=dataset_by_ref(user, o["to_label"], "datasets.change_dataset") if o["to_label"] else None,
            )
        self.stdout.write(f"Labelling task #{task.pk} is queued for a worker.")
        if o["wait"]:
            self.follow(task, o["out"])

    def follow(self, task: LabellingTask, out: Path | None) -> None:
        bar = tqdm(unit="tile", desc="labelling task")
        try:
            while task.status in (LabellingTask.Status.QUEUED, LabellingTask.Status.RUNNING):
                time.sleep(1)
                task.refresh_from_db()
                bar.set_description(task.stage or task.status)
                bar.total = task.progress_total or None
                bar.update(task.progress_done - bar.n)
        finally:
            bar.close()
        if task.status != LabellingTask.Status.SUCCEEDED:
            raise CommandError(f"Labelling task #{task.pk} {task.status}: {task.error}")
        stats = task.stats
        self.stdout.write(
            self.style.SUCCESS(
                f"Labelling task #{task.pk}: {stats['chosen']} tiles of {stats['candidates']} candidates, "
                f"{stats['boxes']} pre-annotated boxes ({task.model_version})."
            )
        )
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for fmt in FORMATS:
                name = archive_name(fmt)
                copy_stored(task_archive(task.pk, fmt), out / f"labelling-task-{task.pk}-{name}")
            self.stdout.write(f"Archives in {out}.")
