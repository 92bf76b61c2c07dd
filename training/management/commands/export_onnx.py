from django.core.management.base import BaseCommand

from access.rules import get_visible
from core.commands import USER_HELP, cli_call, cli_user
from models_registry.selectors import models_visible_to
from training.management.commands.train import watch_run
from training.services.export_runs import onnx_export_create


class Command(BaseCommand):
    help = (
        "Export a registered model to ONNX for ONNX Runtime (CPU servers), behind the parity gate: the export is kept "
        "only if it finds what the model finds on the model's own validation split. Queued for a worker like a "
        "training run; with --wait, follow it with a progress bar and print the gate's figures."
    )

    def add_arguments(self, parser):
        parser.add_argument("model", type=int, help="Id of the model to export.")
        parser.add_argument("--name", default="", help="Run name.")
        parser.add_argument("--user", help=USER_HELP)
        parser.add_argument("--wait", action="store_true", help="Follow the export until it ends.")

    def handle(self, *args, **opts):
        user = cli_user(opts["user"])
        with cli_call():
            model = get_visible(models_visible_to(user), opts["model"], "trained model")
            run = onnx_export_create(model=model, name=opts["name"], created_by=user)
        self.stdout.write(f"Queued ONNX export #{run.pk} of model #{model.pk} {model.name!r}.")
        if not opts["wait"]:
            return
        try:
            watch_run(run.pk)
        finally:  # the gate's figures, passed or not
            run.refresh_from_db()
            report = (run.export_summary or {}).get("gate")
            if report:
                self.stdout.write(gate_lines(report))
        model.refresh_from_db()
        size = model.onnx_report["bytes"]
        self.stdout.write(self.style.SUCCESS(f"Model #{model.pk} has its ONNX file ({size} bytes)."))


def gate_lines(report: dict) -> str:
    maps, matched, seconds = report["map50"], report["matched"], report["seconds_per_image"]
    lines = [
        f"Parity gate on {report['images']} validation images: {'passed' if report['passed'] else 'FAILED'}",
        f"  mAP50: PyTorch {maps['pytorch']}, ONNX Runtime {maps['onnxruntime']} (difference "
        f"{report['map50_difference']}, at most {report['tolerances']['map50']})",
        f"  detections at score >= {report['score_threshold']} matched: {matched['count']} of {matched['total']} "
        f"({100 * matched['share']:.1f}%)",
        f"  seconds per image on {report['threads']} threads: PyTorch {seconds['pytorch']}, ONNX Runtime "
        f"{seconds['onnxruntime']} ({report['speedup']}x)",
    ]
    lines += [f"  {failure}" for failure in report["failures"]]
    return "\n".join(lines)
