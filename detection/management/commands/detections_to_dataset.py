"""``manage.py detections_to_dataset RUN``: a detection run's reviewed sites into a dataset (new or existing) as a
dataset import a worker runs; with ``--wait``, followed with a progress bar."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.commands import USER_HELP, cli_call, cli_user
from datasets.models import DatasetImport
from datasets.selectors import dataset_by_ref

from ...selectors import detection_runs_visible_to
from ...to_dataset import reviewed_sites_to_dataset


class Command(BaseCommand):
    help = (
        "Add a detection run's reviewed detections to a dataset: confirmed ones (corrected and drawn ones too) as "
        "boxes of tiles cut from its orthophotos, rejected ones as hard-negative tiles; classes matched by name."
    )

    def add_arguments(self, parser):
        parser.add_argument("run", type=int, help="The detection run's id.")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--into", help="Name or id of an existing dataset.")
        target.add_argument("--name", help="Name of a new dataset.")
        parser.add_argument("--tile-size", type=int, help="Tile size in pixels (default: the run's window size).")
        parser.add_argument("--overlap", type=int, help="Pixels shared by neighbouring tiles (default: a quarter).")
        parser.add_argument("--no-hard-negatives", action="store_true", help="Leave the rejected detections out.")
        parser.add_argument("--wait", action="store_true", help="Follow the import until it ends.")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, run, into, name, tile_size, overlap, no_hard_negatives, wait, user, **options):
        user = cli_user(user)
        with cli_call():
            found = detection_runs_visible_to(user).filter(pk=run).first() if user else None
            if found is None:
                raise CommandError(f"No detection run #{run}.")
            job = reviewed_sites_to_dataset(
                run=found,
                user=user,
                dataset=dataset_by_ref(user, into, "datasets.change_dataset") if into else None,
                dataset_name=name,
                tile_size=tile_size,
                overlap=overlap,
                hard_negatives=not no_hard_negatives,
            )
        self.stdout.write(f"Dataset import #{job.pk} is queued for a worker.")
        if not wait:
            return
        bar = tqdm(unit="window", desc="tiling")
        try:
            while job.status in (DatasetImport.Status.QUEUED, DatasetImport.Status.RUNNING):
                time.sleep(1)
                job.refresh_from_db()
                bar.total = job.items_total or None
                bar.update(job.items_done - bar.n)
        finally:
            bar.close()
        if job.status != DatasetImport.Status.SUCCEEDED:
            raise CommandError(f"Import #{job.pk} {job.status}: {job.error_message}")
        stats = job.stats or {}
        self.stdout.write(
            self.style.SUCCESS(
                f"Dataset {job.dataset.name!r} (#{job.dataset_id}): {job.images_imported} tiles "
                f"({stats.get('with_sites', 0)} with sites, {stats.get('hard_negatives', 0)} hard negatives), "
                f"{job.annotations_imported} boxes."
            )
        )
