from pathlib import Path

from django.core.management.base import BaseCommand
from tqdm import tqdm

from datasets.coco_import import import_coco
from dumpsite.commands import USER_HELP, cli_call, cli_user


class Command(BaseCommand):
    help = "Import a COCO detection file and its image folder as a new dataset; reports every rejected item."

    def add_arguments(self, parser):
        parser.add_argument("json_file", type=Path, help="COCO annotations (instances_*.json).")
        parser.add_argument("images_dir", type=Path, help="Folder the COCO file_name entries are relative to.")
        parser.add_argument("--name", required=True, help="Name of the new dataset.")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, json_file, images_dir, name, user, **options):
        user = cli_user(user)
        bar = tqdm(unit="image", desc="importing")
        with cli_call():
            try:
                report = import_coco(
                    json_path=json_file,
                    images_dir=images_dir,
                    dataset_name=name,
                    created_by=user,
                    progress=lambda done, total: (setattr(bar, "total", total), bar.update(done - bar.n)),
                )
            finally:
                bar.close()
        for item, reason in report.rejected:
            self.stdout.write(self.style.WARNING(f"rejected {item}: {reason}"))
        self.stdout.write(
            self.style.SUCCESS(
                f"Dataset {name!r} (#{report.dataset.pk}): {report.images} images, {report.annotations} annotations "
                f"imported; {len(report.rejected)} item(s) rejected."
            )
        )
