from django.core.management.base import BaseCommand, CommandError

from dumpsite.commands import cli_call, get_user_or_none
from models_registry.models import TrainedModel
from models_registry.services import trained_model_publish, trained_model_unpublish


class Command(BaseCommand):
    help = "Publish a trained model for production detection (or withdraw it with --unpublish)."

    def add_arguments(self, parser):
        parser.add_argument("model_id", type=int)
        parser.add_argument("--unpublish", action="store_true")
        parser.add_argument("--user", help="Username recorded as the publisher.")

    def handle(self, *args, model_id, unpublish, user, **options):
        try:
            model = TrainedModel.objects.get(pk=model_id)
        except TrainedModel.DoesNotExist:
            raise CommandError(f"No trained model #{model_id}.") from None
        with cli_call():
            if unpublish:
                trained_model_unpublish(model=model, user=get_user_or_none(user))
                self.stdout.write(self.style.SUCCESS(f"Model #{model.pk} {model.name!r} is no longer published."))
            else:
                trained_model_publish(model=model, user=get_user_or_none(user))
                self.stdout.write(self.style.SUCCESS(f"Model #{model.pk} {model.name!r} is published."))
