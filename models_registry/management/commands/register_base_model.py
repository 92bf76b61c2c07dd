from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from access.rules import require
from core.commands import USER_HELP, cli_call, cli_user
from engine.presets import PRESETS
from models_registry.services import trained_model_register_file


class Command(BaseCommand):
    help = (
        "Register an existing checkpoint as a model without a run, to fine-tune from or publish: an MMDetection "
        "model-zoo checkpoint of a preset's architecture (e.g. Faster R-CNN R-50 FPN trained on COCO) or one "
        "trained elsewhere. The file is checked weights-only in a separate process, tensor by tensor against the "
        "preset's model."
    )

    def add_arguments(self, parser):
        parser.add_argument("checkpoint", type=Path)
        parser.add_argument("--name", required=True)
        parser.add_argument("--architecture", required=True, choices=sorted(PRESETS))
        parser.add_argument(
            "--classes",
            help=(
                "Comma-separated class names in label order. Default: the names stored in the checkpoint, or COCO's "
                "80 names for an 80-class head."
            ),
        )
        parser.add_argument(
            "--config", type=Path, help="A config file kept beside the model as a document (never run)."
        )
        parser.add_argument("--description", default="")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, checkpoint, name, architecture, classes, config, description, user, **options):
        user = cli_user(user)
        with cli_call():  # refused before the checkpoint is read, not after
            require(user, "models_registry.add_trainedmodel", message=f"{user.username} may not register models.")
        if not checkpoint.is_file():
            raise CommandError(f"Checkpoint not found: {checkpoint}")
        if config is not None and not config.is_file():
            raise CommandError(f"Config not found: {config}")
        self.stdout.write(f"Inspecting {checkpoint.name} (weights only, in a separate process)...")
        with cli_call():
            model, report = trained_model_register_file(
                checkpoint=checkpoint,
                name=name,
                architecture=architecture,
                classes=[c.strip() for c in classes.split(",")] if classes else None,
                config=config,
                description=description,
                created_by=user,
            )
        source = "given" if classes else f"from {report.get('class_source')}"
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered model #{model.pk} {model.name!r}: {architecture}, {len(model.class_names)} classes "
                f"({source}), {report['parameter_count']:,} parameters, all {report['tensors']} tensors fit the "
                f"preset, sha256 {model.checkpoint_sha256[:12]}."
            )
        )
