"""``manage.py export_coco``: a dataset, or one side of a run's recorded split, as a COCO zip."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from access.rules import get_visible, visible
from core.commands import USER_HELP, cli_call, cli_user
from datasets.coco_zip import export_document, stream_coco_zip
from datasets.selectors import dataset_by_ref, datasets_visible_to
from training.models import TrainingRun
from training.selectors import run_split_image_ids


class Command(BaseCommand):
    help = (
        "Write a COCO zip (annotations.json with category ids 1..N in the dataset's class order, and images/): "
        "a dataset's enabled images and boxes, or the train or val side of a run's recorded split. "
        "import_coco and the API's upload read it back."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--dataset", help="Dataset name or id.")
        which.add_argument("--run", type=int, help="A training run whose recorded split is exported.")
        parser.add_argument("--side", choices=("train", "val"), default="val", help="With --run: which side.")
        parser.add_argument("--out", type=Path, required=True, help="The zip file to write (not overwritten).")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, dataset, run, side, out, user, **options):
        user = cli_user(user)
        if out.exists():
            raise CommandError(f"{out} exists; choose another file or remove it.")
        with cli_call():
            datasets = datasets_visible_to(user)
            if run is not None:
                runs = visible(user, "training.view_trainingrun", TrainingRun.objects.all())
                the_run = get_visible(runs, run, "training run")
                the_dataset = get_visible(datasets, the_run.dataset_id, "dataset")
                doc = export_document(the_dataset, image_ids=run_split_image_ids(the_run, side))
            else:
                the_dataset = dataset_by_ref(user, dataset)
                doc = export_document(the_dataset)
        partial = out.with_name(out.name + ".part")
        bar = tqdm(total=len(doc["images"]), unit="image", desc="exporting")
        try:
            with open(partial, "wb") as fh:
                for chunk in stream_coco_zip(doc, on_image=lambda: bar.update(1)):
                    fh.write(chunk)
            os.replace(partial, out)  # a finished archive or none: never half a zip under the asked name
        finally:
            bar.close()
            partial.unlink(missing_ok=True)
        self.stdout.write(
            self.style.SUCCESS(
                f"Wrote {out}: {len(doc['images'])} images, {len(doc['annotations'])} boxes, "
                f"{len(doc['categories'])} classes."
            )
        )
