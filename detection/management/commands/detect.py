import argparse
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from access.rules import get_visible
from core.commands import USER_HELP, cli_call, cli_user
from datasets.orthophotos import orthophoto_store
from datasets.selectors import dataset_by_ref, orthophotos_visible_to
from datasets.sites import read_sites_file
from detection.exports import export
from detection.params import SPECS
from detection.selectors import detections_of
from detection.services import detection_run_create
from models_registry.selectors import models_visible_to
from training.management.commands.train import watch_run

OUT_FORMATS = {".gpkg": "gpkg", ".geojson": "geojson", ".json": "geojson", ".csv": "csv"}


class Command(BaseCommand):
    help = (
        "Detect with a registered model over whole orthophotos (GeoTIFFs: files given here are kept with --dataset; "
        "stored ones by --orthophoto id). Queued for a worker like a training run. With --wait, follow it with a "
        "progress bar and print what it found; with --out, also write the detections (.gpkg, .geojson or .csv)."
    )

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="*", help="GeoTIFF files to keep with --dataset and detect on.")
        parser.add_argument("--model", type=int, required=True, help="Id of the model to detect with.")
        parser.add_argument("--dataset", help="Dataset name or id the files are kept with.")
        parser.add_argument("--orthophoto", type=int, action="append", default=[], help="Id of a stored orthophoto.")
        parser.add_argument("--classes", help="Class names to keep, comma-separated (default: all).")
        parser.add_argument(
            "--known-sites", help="GeoJSON of the area's known sites: report site recall, precision, false per km²."
        )
        parser.add_argument("--name", default="", help="Run name.")
        parser.add_argument("--user", help=USER_HELP)
        parser.add_argument("--wait", action="store_true", help="Follow the run until it ends.")
        parser.add_argument("--out", help="Write the detections here once it succeeds (implies --wait).")
        for name, spec in SPECS.items():
            if spec.kind is bool:  # --resample / --no-resample
                parser.add_argument(
                    f"--{name.replace('_', '-')}", dest=name, action=argparse.BooleanOptionalAction, help=spec.help
                )
                continue
            kwargs = {"choices": spec.choices} if spec.choices else {"type": spec.kind}
            parser.add_argument(
                f"--{name.replace('_', '-')}", dest=name, help=f"{spec.help} ({spec.describe()})", **kwargs
            )

    def handle(self, *args, **opts):
        user = cli_user(opts["user"])
        out = Path(opts["out"]) if opts["out"] else None
        if out is not None and out.suffix.lower() not in OUT_FORMATS:
            raise CommandError(f"--out must end in one of {', '.join(OUT_FORMATS)}.")
        params = {name: opts[name] for name in SPECS if opts.get(name) is not None}
        if opts["classes"]:
            params["classes"] = [c.strip() for c in opts["classes"].split(",") if c.strip()]
        with cli_call():
            model = get_visible(models_visible_to(user), opts["model"], "trained model")
            seen = orthophotos_visible_to(user)
            orthophotos = [get_visible(seen, pk, "orthophoto") for pk in opts["orthophoto"]]
            if opts["files"]:
                if not opts["dataset"]:
                    raise CommandError("Files need --dataset: the dataset they are kept with.")
                dataset = dataset_by_ref(user, opts["dataset"])
                for name in opts["files"]:
                    if not Path(name).is_file():
                        raise CommandError(f"No file {name}.")
                    orthophotos.append(orthophoto_store(dataset=dataset, source=name, name=name, created_by=user))
            if not orthophotos:
                raise CommandError("Give GeoTIFF files (with --dataset) or --orthophoto ids.")
            known = read_sites_file(opts["known_sites"]) if opts["known_sites"] else None
            run = detection_run_create(
                model=model,
                orthophotos=orthophotos,
                parameters=params,
                name=opts["name"],
                created_by=user,
                known_sites=known,
            )
        self.stdout.write(f"Queued detection run #{run.pk} {run.name!r} over {len(orthophotos)} orthophoto(s).")
        if not (opts["wait"] or out):
            return
        run = watch_run(run.pk)
        summary = run.export_summary
        self.stdout.write(
            self.style.SUCCESS(
                f"Detection run #{run.pk}: {summary.get('detections', 0)} detections "
                f"({summary.get('ignored', 0)} in ignore zones) over {summary.get('windows', 0)} windows "
                f"({summary.get('skipped_nodata', 0)} of nodata skipped), in {summary.get('coordinates')} coordinates."
            )
        )
        for name, count in sorted((summary.get("by_class") or {}).items()):
            self.stdout.write(f"  {name}: {count}")
        sites = summary.get("sites")
        if sites:
            self.stdout.write(site_report(sites))
        if out is not None:
            fmt = OUT_FORMATS[out.suffix.lower()]
            out.write_bytes(export(detections_of(run).iterator(chunk_size=2000), fmt))
            self.stdout.write(f"Wrote {summary.get('detections', 0)} detections to {out} ({fmt}).")


def site_report(sites: dict) -> str:
    def share(value) -> str:
        return "—" if value is None else f"{100 * value:.1f}%"

    target = sites.get("threshold_for_target")
    return "\n".join(
        [
            f"Against {sites['sites']} known sites ({sites['match_rule']} >= {sites['site_match']}), at score "
            f"{sites['threshold']}: found {sites['found']} (site recall {share(sites['recall'])}), precision "
            f"{share(sites['precision'])}, {sites['false']} false detections = {sites['false_per_km2']} per km² "
            f"of {sites['area_km2']:.3f} km².",
            f"Score threshold for a site recall of {share(sites['target_recall'])}: "
            + (f"{target}." if target is not None else "not reached by any detection of this run."),
        ]
    )
