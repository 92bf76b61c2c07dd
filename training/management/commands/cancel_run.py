from django.core.management.base import BaseCommand, CommandError

from dumpsite.commands import cli_call, get_user_or_none
from training.models import TrainingRun
from training.services import training_run_cancel


class Command(BaseCommand):
    help = "Cancel a queued or running training run (a running one stops within seconds)."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int)
        parser.add_argument("--user", help="Username recorded as who cancelled it.")

    def handle(self, *args, run_id, user, **options):
        run = TrainingRun.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"No training run #{run_id}.")
        with cli_call():
            training_run_cancel(run=run, user=get_user_or_none(user))
        self.stdout.write(self.style.SUCCESS(f"Run #{run_id} is cancelled."))
