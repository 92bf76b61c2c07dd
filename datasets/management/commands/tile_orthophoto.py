"""``manage.py tile_orthophoto``: orthophotos (GeoTIFF) and the dump sites outlined on them (GeoJSON) cut into the
tiles of a new or an existing dataset, with a progress bar; the same service as the API's and the admin's upload,
run here at once."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.commands import USER_HELP, cli_call, cli_user
from datasets.selectors import dataset_by_ref
from datasets.sites import read_sites_file
from datasets.tiling import TilingOptions, tile_orthophotos


class Command(BaseCommand):
    help = (
        "Cut orthophotos (GeoTIFF with a CRS) into training tiles with the dump sites of a GeoJSON file (polygons "
        "or boxes, any EPSG CRS) as boxes; each tile keeps its footprint."
    )

    def add_arguments(self, parser):
        parser.add_argument("orthophotos", type=Path, nargs="+", help="GeoTIFF orthophotos (8-bit grey, RGB, RGBA).")
        parser.add_argument("--annotations", type=Path, required=True, help="GeoJSON FeatureCollection of sites.")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--name", help="Name of the new dataset.")
        target.add_argument("--into", help="Name or id of an existing dataset (classes matched by name).")
        parser.add_argument("--add-classes", action="store_true", help="With --into: add the classes it lacks.")
        defaults = TilingOptions()
        parser.add_argument("--tile-size", type=int, default=defaults.tile_size, help="Tile size in pixels.")
        parser.add_argument("--overlap", type=int, default=defaults.overlap, help="Pixels shared by neighbours.")
        parser.add_argument(
            "--min-box-share", type=float, default=defaults.min_box_share, help="Keep a cut site's box from this share."
        )
        parser.add_argument(
            "--background-ratio", type=float, default=defaults.background_ratio, help="Share of site-less tiles kept."
        )
        parser.add_argument("--class-property", default=defaults.class_property, help="Feature property of the class.")
        parser.add_argument("--seed", type=int, default=defaults.seed, help="Seed of the background choice.")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, orthophotos, annotations, name, into, add_classes, user, **options):
        user = cli_user(user)
        for path in [*orthophotos, annotations]:
            if not path.is_file():
                raise CommandError(f"{path}: no such file.")
        bar = tqdm(unit="tile", desc="tiling")
        with cli_call():
            dataset = None
            if into is not None:
                dataset = dataset_by_ref(user, into)
            checked = TilingOptions.checked(
                **{k: options[k] for k in ("tile_size", "overlap", "min_box_share", "background_ratio", "seed")},
                class_property=options["class_property"],
            )
            try:
                report = tile_orthophotos(
                    orthophotos=orthophotos,
                    annotations=read_sites_file(annotations),
                    options=checked,
                    dataset_name=name,
                    dataset=dataset,
                    add_classes=add_classes,
                    created_by=user,
                    progress=lambda done, total: (setattr(bar, "total", total), bar.update(done - bar.n)),
                )
            finally:
                bar.close()
        for item, reason in report.rejected:
            self.stdout.write(self.style.WARNING(f"rejected {item}: {reason}"))
        stats = report.stats
        self.stdout.write(
            self.style.SUCCESS(
                f"Dataset {report.dataset.name!r} (#{report.dataset.pk}): {report.images} tiles "
                f"({stats['with_sites']} with sites, {stats['background_kept']} background), {report.annotations} "
                f"boxes; of {stats['tiles']} windows {stats['background_skipped']} background and "
                f"{stats['cut_only_skipped']} cut-off-only skipped, {stats['nodata_skipped']} nodata; "
                f"{stats['boxes_cut_dropped']} cut boxes dropped; {len(report.rejected)} item(s) rejected."
            )
        )
