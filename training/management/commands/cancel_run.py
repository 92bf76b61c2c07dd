from django.core.management.base import BaseCommand

from access.rules import get_visible, visible
from core.commands import USER_HELP, cli_call, cli_user
from training.models import TrainingRun
from training.services import training_run_cancel


class Command(BaseCommand):
    help = "Cancel a queued or running training run (a running one stops within seconds)."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int)
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, run_id, user, **options):
        user = cli_user(user)
        with cli_call():
            run = get_visible(
                visible(user, "training.view_trainingrun", TrainingRun.objects.all()), run_id, "training run"
            )
            training_run_cancel(run=run, user=user)
        self.stdout.write(self.style.SUCCESS(f"Run #{run_id} is cancelled."))
