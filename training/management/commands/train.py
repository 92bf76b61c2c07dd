import argparse
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from access.rules import get_visible
from core.commands import USER_HELP, cli_call, cli_user
from core.formatting import duration, metric
from datasets.selectors import dataset_by_ref
from engine.anchors import summary_lines
from engine.params import PARAM_SPECS, total_batch_size
from engine.presets import PRESETS
from models_registry.models import TrainedModel
from models_registry.selectors import models_visible_to
from training.models import TrainingRun
from training.services import training_run_create, training_run_preview


class Command(BaseCommand):
    help = (
        "Create a training run (validated and queued for a worker: run `manage.py worker`). With --wait, "
        "follow it with a live progress bar and exit non-zero unless it succeeds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help="Dataset name or id.")
        parser.add_argument(
            "--architecture",
            choices=sorted(PRESETS),
            help="Architecture preset (default: the base model's, else retinanet_r18_tiny).",
        )
        parser.add_argument("--base-model", type=int, help="Id of a registered model to fine-tune from.")
        parser.add_argument("--name", default="", help="Run name.")
        parser.add_argument("--user", help=USER_HELP)
        parser.add_argument("--wait", action="store_true", help="Follow the run until it ends.")
        parser.add_argument("--time-limit", type=int, help="Wall-clock limit of the run in seconds.")
        parser.add_argument(
            "--priority",
            choices=("normal", "high"),
            default="normal",
            help="high: starts before every normal run (needs the permission to prioritize runs).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Check everything and say what the run would do (parameters, base model weights), queue nothing.",
        )
        for spec in PARAM_SPECS.values():
            if spec.kind is bool:
                parser.add_argument(
                    f"--{spec.name.replace('_', '-')}",
                    dest=spec.name,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=spec.help,
                )
                continue
            parser.add_argument(
                f"--{spec.name.replace('_', '-')}",
                dest=spec.name,
                type=spec.kind,
                choices=spec.choices,
                help=f"{spec.help} ({spec.describe()})",
            )

    def handle(self, *args, **opts):
        user = cli_user(opts["user"])
        params = {name: opts[name] for name in PARAM_SPECS if opts.get(name) is not None}
        with cli_call():
            dataset = dataset_by_ref(user, opts["dataset"])
            base_model = None
            if opts["base_model"] is not None:
                base_model = get_visible(models_visible_to(user), opts["base_model"], "trained model")
            plan = training_run_preview(
                dataset=dataset,
                architecture=opts["architecture"],
                base_model=base_model,
                parameters=params,
                user=user,
            )
            if plan.weight_transfer:
                self.stdout.write(f"Base model #{base_model.pk}: {plan.weight_transfer['summary']}")
            if plan.split:
                self.stdout.write("Split: " + ", ".join(f"{k} {v}" for k, v in plan.split.items()))
            if opts["dry_run"]:
                self.stdout.write("Parameters: " + ", ".join(f"{k}={v}" for k, v in plan.parameters.items()) + ".")
                self.stdout.write("Training pipeline:")
                for step in plan.pipeline:
                    self.stdout.write(f"  - {step}")
                for line in summary_lines(plan.boxes):
                    self.stdout.write(line)
                self.stdout.write("Nothing queued.")
                return
            run = training_run_create(
                dataset=dataset,
                architecture=opts["architecture"],
                base_model=base_model,
                parameters=params,
                name=opts["name"],
                created_by=user,
                time_limit_seconds=opts["time_limit"],
                priority=opts["priority"],
            )
        processes, nodes = run.parameters.get("processes", 1), run.parameters.get("nodes", 1)
        hosts = f" on each of {nodes} hosts" if nodes > 1 else ""
        spread = (
            f", {processes} processes{hosts} x batch {run.parameters['batch_size']} = "
            f"{total_batch_size(run.parameters)} images per iteration"
            if processes * nodes > 1
            else ""
        )
        self.stdout.write(
            f"Queued training run #{run.pk} {run.name!r} ({run.architecture}, {run.parameters['epochs']} epochs"
            f"{spread}{', high priority' if run.priority else ''})."
        )
        if opts["wait"]:
            self._follow(run.pk)

    def _follow(self, run_id: int) -> None:
        run = watch_run(run_id)
        model = TrainedModel.objects.get(source_run=run)
        self.stdout.write(
            self.style.SUCCESS(
                f"Run #{run.pk} succeeded in {run.duration_seconds:.0f} s. Registered model #{model.pk} "
                f"{model.name!r} (best epoch {model.best_epoch}): bbox mAP50 {metric(model.bbox_mAP_50)}, "
                f"mAP {metric(model.bbox_mAP)}."
            )
        )


def watch_run(run_id: int) -> TrainingRun:
    """Follow a run with a progress bar until it ends; CommandError unless it succeeds."""
    bar = tqdm(
        total=1,
        unit="it",
        dynamic_ncols=True,
        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} it {postfix}",
    )
    bar.set_description_str("queued")
    waited = time.monotonic()
    hinted = False
    try:
        while True:
            run = TrainingRun.objects.get(pk=run_id)
            if run.status == TrainingRun.Status.QUEUED:
                if not hinted and time.monotonic() - waited > 15:
                    bar.write("Still queued: is a worker running (`manage.py worker`)?")
                    hinted = True
            elif run.max_iters:
                bar.total = run.max_iters
                bar.n = run.current_iter
                loss = run.latest_losses.get("loss")
                if run.kind == TrainingRun.Kind.EVALUATE:
                    bar.set_description_str("evaluating" if run.current_iter < run.max_iters else "storing results")
                elif run.kind == TrainingRun.Kind.DETECT:
                    detecting = run.current_iter < run.max_iters
                    bar.set_description_str("detecting (windows)" if detecting else "merging, storing detections")
                elif run.kind == TrainingRun.Kind.ONNX_EXPORT:
                    bar.set_description_str("exporting, then PyTorch and ONNX Runtime on each validation image")
                else:
                    bar.set_description_str(
                        f"epoch {run.current_epoch}/{run.max_epochs}"
                        if run.current_iter < run.max_iters
                        else "validating, registering"
                    )
                bar.set_postfix_str(
                    f"loss {loss:.4f} ETA {duration(run.eta_seconds)}"
                    if loss is not None
                    else f"ETA {duration(run.eta_seconds)}"
                )
                bar.refresh()
            else:
                bar.set_description_str("exporting the dataset, starting")
                bar.refresh()
            if run.is_finished:
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        bar.close()
        raise CommandError(f"Stopped following run #{run_id}; it goes on in the worker.") from None
    bar.close()
    if run.status != TrainingRun.Status.SUCCEEDED:
        reason = " ".join((run.error_message or "no reason recorded").split())
        raise CommandError(f"Run #{run.pk} {run.status}: {reason}")
    return run
