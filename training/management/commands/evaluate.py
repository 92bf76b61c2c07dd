from django.core.management.base import BaseCommand

from access.rules import get_visible
from core.commands import USER_HELP, cli_call, cli_user
from core.formatting import metric
from datasets.selectors import dataset_by_ref
from engine.params import PARAM_SPECS
from models_registry.models import Evaluation
from models_registry.selectors import models_visible_to
from training.services.evaluation_runs import EVALUATION_PARAMS, SPLITS, evaluation_run_create

from .train import watch_run


def _dest(name: str) -> str:
    """The option of the split strategy parameter is --split-strategy: --split chooses the images."""
    return "split_strategy" if name == "split" else name


class Command(BaseCommand):
    help = (
        "Evaluate a registered model on a dataset (all of it, a validation split made now, or the model's own "
        "validation split): queued for a worker like a training run. With --wait, follow it with a progress bar, "
        "print the per-class results and exit non-zero unless it succeeds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", type=int, required=True, help="Id of the model to evaluate.")
        parser.add_argument("--dataset", help="Dataset name or id (not needed for --split model).")
        parser.add_argument(
            "--split", choices=list(SPLITS), default="all", help="; ".join(f"{k}: {v}" for k, v in SPLITS.items())
        )
        parser.add_argument("--name", default="", help="Run name.")
        parser.add_argument("--user", help=USER_HELP)
        parser.add_argument("--wait", action="store_true", help="Follow the run until it ends.")
        for name in EVALUATION_PARAMS:
            spec = PARAM_SPECS[name]
            option = "--split-strategy" if name == "split" else f"--{name.replace('_', '-')}"
            kwargs = {"choices": spec.choices} if spec.choices else {"type": spec.kind}
            parser.add_argument(option, dest=_dest(name), help=f"{spec.help} ({spec.describe()})", **kwargs)

    def handle(self, *args, **opts):
        user = cli_user(opts["user"])
        params = {name: opts[_dest(name)] for name in EVALUATION_PARAMS if opts.get(_dest(name)) is not None}
        with cli_call():
            model = get_visible(models_visible_to(user), opts["model"], "trained model")
            dataset = dataset_by_ref(user, opts["dataset"]) if opts["dataset"] else None
            run = evaluation_run_create(
                model=model,
                dataset=dataset,
                split=opts["split"],
                parameters=params,
                name=opts["name"],
                created_by=user,
            )
        self.stdout.write(f"Queued evaluation run #{run.pk} {run.name!r}.")
        if not opts["wait"]:
            return
        run = watch_run(run.pk)
        evaluation = Evaluation.objects.get(run=run)
        overall = evaluation.metrics
        self.stdout.write(
            self.style.SUCCESS(
                f"Evaluation #{evaluation.pk} of model #{model.pk} on {evaluation.counts.get('images')} images: "
                f"bbox mAP50 {metric(overall.get('bbox_mAP_50'))}, mAP {metric(overall.get('bbox_mAP'))}."
            )
        )
        width = max([len(r["class"]) for r in evaluation.per_class] + [5])
        self.stdout.write(f"{'class':<{width}}  AP50    AP      precision recall  boxes")
        for row in evaluation.per_class:
            self.stdout.write(
                f"{row['class']:<{width}}  {metric(row['ap50']):<7} {metric(row['ap']):<7} "
                f"{metric(row['precision']):<9} {metric(row['recall']):<7} {row['gt_boxes']}"
            )
