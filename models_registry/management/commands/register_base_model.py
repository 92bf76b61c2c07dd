from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from access.rules import require
from dumpsite.commands import USER_HELP, cli_call, cli_user
from models_registry.services import trained_model_register_base
from training.engine.inspect import inspect_checkpoint
from training.engine.presets import PRESETS


class Command(BaseCommand):
    help = (
        "Register an existing checkpoint (+ optional config) as a model without a run, to fine-tune from or "
        "publish. The checkpoint is checked weights-only in a separate process."
    )

    def add_arguments(self, parser):
        parser.add_argument("checkpoint", type=Path)
        parser.add_argument("--name", required=True)
        parser.add_argument("--architecture", required=True, choices=sorted(PRESETS))
        parser.add_argument(
            "--classes",
            help="Comma-separated class names in label order. Default: the names stored in the checkpoint's meta.",
        )
        parser.add_argument("--config", type=Path, help="Config file kept as an artifact (never executed).")
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
        try:
            report = inspect_checkpoint(str(checkpoint.resolve()), architecture)
        except ValueError as exc:
            raise CommandError(f"Refused {checkpoint.name}: {exc}") from exc
        class_names = classes.split(",") if classes else report.get("classes")
        if not class_names:
            raise CommandError("The checkpoint stores no class names; pass --classes.")
        with cli_call():
            model = trained_model_register_base(
                name=name,
                architecture=architecture,
                checkpoint=checkpoint,
                config=config,
                class_names=class_names,
                inspection=report,
                description=description,
                created_by=user,
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered model #{model.pk} {model.name!r}: {architecture}, {len(class_names)} classes, "
                f"{report['parameter_count']:,} parameters, sha256 {model.checkpoint_sha256[:12]}."
            )
        )
