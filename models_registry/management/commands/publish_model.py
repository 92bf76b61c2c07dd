from django.core.management.base import BaseCommand

from access.rules import get_visible
from core.commands import USER_HELP, cli_call, cli_user
from models_registry.selectors import models_visible_to
from models_registry.services import trained_model_publish, trained_model_unpublish


class Command(BaseCommand):
    help = "Publish a trained model for production detection (or withdraw it with --unpublish)."

    def add_arguments(self, parser):
        parser.add_argument("model_id", type=int)
        parser.add_argument("--unpublish", action="store_true")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, model_id, unpublish, user, **options):
        user = cli_user(user)
        with cli_call():
            model = get_visible(models_visible_to(user), model_id, "trained model")
            if unpublish:
                trained_model_unpublish(model=model, user=user)
                self.stdout.write(self.style.SUCCESS(f"Model #{model.pk} {model.name!r} is no longer published."))
            else:
                trained_model_publish(model=model, user=user)
                self.stdout.write(self.style.SUCCESS(f"Model #{model.pk} {model.name!r} is published."))
