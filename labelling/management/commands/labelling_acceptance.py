"""``manage.py labelling_acceptance``: what came back from the labelling tool against what a task sent (the share
of pre-annotated boxes accepted unchanged, corrected, removed, added), for one task or per model version."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from core.commands import USER_HELP, cli_call, cli_user
from datasets.selectors import dataset_by_ref

from ...acceptance import acceptance_by_model_version, labelling_task_acceptance
from ...selectors import labelling_tasks_visible_to

COLUMNS = ("exported", "unchanged", "corrected", "removed", "added")


def _rate(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


class Command(BaseCommand):
    help = (
        "Compare a labelling task's pre-annotations with the labelled images imported into a dataset (TASK "
        "--dataset D), or list the acceptance rate per model version (no arguments)."
    )

    def add_arguments(self, parser):
        parser.add_argument("task", type=int, nargs="?", help="The labelling task's id.")
        parser.add_argument("--dataset", help="Name or id of the dataset the tool's export was imported into.")
        parser.add_argument("--user", help=USER_HELP)

    def handle(self, *args, task, dataset, user, **options):
        user = cli_user(user)
        with cli_call():
            if task is None:
                rows = acceptance_by_model_version(labelling_tasks_visible_to(user).exclude(acceptance={}))
            else:
                found = labelling_tasks_visible_to(user).filter(pk=task).first()
                if found is None:
                    raise CommandError(f"No labelling task #{task}.")
                if not dataset:
                    raise CommandError("Name the dataset the labelled images were imported into (--dataset).")
                report = labelling_task_acceptance(task=found, dataset=dataset_by_ref(user, dataset), user=user)
                rows = [{**report, "tasks": 1}]
        self.stdout.write(f"{'model version':40} {'tasks':>5} " + " ".join(f"{c:>9}" for c in COLUMNS) + "  accepted")
        for row in rows:
            counts = " ".join(f"{row[c]:>9}" for c in COLUMNS)
            self.stdout.write(
                f"{row['model_version'][:40]:40} {row['tasks']:>5} {counts}  {_rate(row['acceptance_rate'])}"
            )
        if not rows:
            self.stdout.write("No labelling task has come back yet.")
