from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.commands import USER_HELP, cli_call, cli_user
from datasets.coco_import import import_coco, import_coco_zip
from datasets.selectors import dataset_by_ref
from datasets.zips import ZipLimits, check_zip


class Command(BaseCommand):
    help = (
        "Import a COCO detection file and its image folder, or a COCO zip (--zip: as CVAT, Label Studio or "
        "export_coco write it), as a new dataset (--name) or into an existing one (--into); reports every "
        "rejected item."
    )

    def add_arguments(self, parser):
        parser.add_argument("json_file", type=Path, nargs="?", help="COCO annotations (instances_*.json).")
        parser.add_argument(
            "images_dir", type=Path, nargs="?", help="Folder the COCO file_name entries are relative to."
        )
        parser.add_argument("--zip", type=Path, help="A COCO zip instead of a file and a folder (checked first).")
        parser.add_argument("--coco-file", help="With --zip: the COCO file, when the archive holds several JSON files.")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--name", help="Name of the new dataset.")
        target.add_argument("--into", help="Name or id of an existing dataset (classes matched by name).")
        parser.add_argument("--add-classes", action="store_true", help="With --into: add the classes it lacks.")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, json_file, images_dir, zip, coco_file, name, into, add_classes, user, **options):
        folder_given = json_file is not None and images_dir is not None
        if (zip is not None and json_file is not None) or (zip is None and not folder_given):
            raise CommandError("Give a COCO file and its image folder, or --zip ARCHIVE.")
        user = cli_user(user)
        bar = tqdm(unit="image", desc="importing")
        target = {"dataset_name": name, "dataset": None, "add_classes": add_classes, "created_by": user}
        progress = lambda done, total: (setattr(bar, "total", total), bar.update(done - bar.n))  # noqa: E731
        with cli_call():
            try:
                if into is not None:
                    target["dataset"] = dataset_by_ref(user, into)
                if zip is not None:
                    if not zip.is_file():
                        raise CommandError(f"{zip}: no such file.")
                    contents = check_zip(zip, ZipLimits.from_settings(), coco_file=coco_file)
                    self.stdout.write(
                        f"{zip.name}: {contents.layout} ({contents.coco_file}), {len(contents.files)} files"
                    )
                    report = import_coco_zip(archive_path=zip, contents=contents, progress=progress, **target)
                else:
                    report = import_coco(json_path=json_file, images_dir=images_dir, progress=progress, **target)
            finally:
                bar.close()
        for item, reason in report.rejected:
            self.stdout.write(self.style.WARNING(f"rejected {item}: {reason}"))
        if report.georeferenced:
            told = Counter(what for _, found in report.georeferenced for what in found.split("; "))
            summary = ", ".join(f"{what}: {n}" for what, n in sorted(told.items()))
            self.stdout.write(f"{len(report.georeferenced)} image(s) placed or dated by their files ({summary})")
        added = f"; classes added: {', '.join(report.classes_added)}" if report.classes_added else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"Dataset {report.dataset.name!r} (#{report.dataset.pk}): {report.images} images, {report.annotations} "
                f"annotations imported; {len(report.rejected)} item(s) rejected{added}."
            )
        )
