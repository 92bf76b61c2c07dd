import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from access.rules import get_visible
from core.commands import USER_HELP, cli_call, cli_user
from models_registry.engines import ENGINES
from models_registry.predictions import predict_files
from models_registry.selectors import models_visible_to


class Command(BaseCommand):
    help = (
        "Run a registered model on image files and write the boxes (class name, score, x1 y1 x2 y2) as JSON. The "
        "detection runs in a separate process (GPU when there is one)."
    )

    def add_arguments(self, parser):
        parser.add_argument("model", type=int, help="Id of the model.")
        parser.add_argument("images", nargs="+", type=Path, help="Image files.")
        parser.add_argument("--out", type=Path, required=True, help="Where to write the result (JSON).")
        parser.add_argument("--score-threshold", type=float, default=0.3, help="Keep boxes scoring at least this.")
        parser.add_argument("--preview-dir", type=Path, help="Also write each image with its boxes drawn here.")
        parser.add_argument(
            "--engine",
            choices=ENGINES,
            default="pytorch",
            help="pytorch: the checkpoint; onnxruntime: the model's ONNX export (one that passed the parity gate).",
        )
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, model, images, out, score_threshold, preview_dir, engine, user, **options):
        user = cli_user(user)
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise CommandError(f"Not a file: {', '.join(missing)}")
        with cli_call():
            trained = get_visible(models_visible_to(user), model, "trained model")
            self.stdout.write(f"Running model #{trained.pk} {trained.name!r} on {len(images)} image(s)...")
            result = predict_files(
                model=trained,
                paths=images,
                score_threshold=score_threshold,
                preview_dir=preview_dir,
                engine=engine,
                user=user,
            )
        result["model"] = {"id": trained.pk, "name": trained.name, "architecture": trained.architecture}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
        boxes = sum(len(image["boxes"]) for image in result["images"])
        self.stdout.write(
            self.style.SUCCESS(
                f"{boxes} box(es) at score >= {result['score_threshold']} on {len(result['images'])} image(s) "
                f"({result['device']}, {result.get('engine', 'pytorch')}, {result['seconds']:.1f} s); written to {out}."
            )
        )
