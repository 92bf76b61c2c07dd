from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.commands import USER_HELP, cli_call, cli_user
from datasets.demo import DEMO_CLASSES, demo_dataset_create
from datasets.models import Annotation, Dataset


class Command(BaseCommand):
    help = "Create a dataset of deterministic synthetic georeferenced aerial tiles with annotated waste."

    def add_arguments(self, parser):
        parser.add_argument("--name", default="demo", help="Dataset name (default: demo).")
        parser.add_argument("--images", type=int, default=200, help="Number of 256x256 tiles (default: 200).")
        parser.add_argument("--seed", type=int, default=0, help="Seed; the same seed gives the same dataset.")
        parser.add_argument("--if-missing", action="store_true", help="Do nothing if the dataset already exists.")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, name, images, seed, if_missing, user, **options):
        if if_missing and Dataset.objects.filter(name=name).exists():
            self.stdout.write(f"Dataset {name!r} already exists; nothing to do.")
            return
        if images < 2:
            raise CommandError("--images must be at least 2.")
        user = cli_user(user)
        with cli_call(), tqdm(total=images, unit="tile", desc=name) as bar:
            dataset = demo_dataset_create(
                name=name,
                images=images,
                seed=seed,
                created_by=user,
                progress=lambda done, total: bar.update(done - bar.n),
            )
        boxes = Annotation.objects.filter(image__dataset=dataset).count()
        self.stdout.write(
            self.style.SUCCESS(
                f"Dataset {dataset.name!r} (#{dataset.pk}): {images} tiles, {boxes} boxes, "
                f"classes {', '.join(DEMO_CLASSES)}."
            )
        )
