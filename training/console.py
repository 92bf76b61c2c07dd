"""How a run looks and what an operator does with it in the console: the columns and detail fields, and the
cancel and retry actions, shared by every admin of runs (training runs, and detection runs in their own room)."""

from __future__ import annotations

import base64

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audit.selectors import audit_trail_html
from core.admin import progress_bar, related_link, related_model_html
from core.charts import Series, epoch_map_chart, line_chart
from core.errors import ApplicationError
from core.formatting import duration as format_duration
from core.storage import open_stored

from . import services
from .models import TrainingRun
from .run_files import stored_samples
from .selectors import run_log_tail, run_metrics, run_pipeline

SAMPLE_MAX_BYTES = 2 * 2**20  # a sample picture read for the page, at most

BADGE_COLOURS = {
    "queued": "#8a8a8a",
    "running": "#2f6fb0",
    "succeeded": "#3b9c5a",
    "failed": "#b03a48",
    "cancelled": "#b07a2f",
}


def progress_html(run: TrainingRun):
    return progress_bar(status=run.status, percent=run.progress_percent, eta_seconds=run.eta_seconds, run=run.pk)


class RunColumns:
    """Display methods of TrainingRunAdmin (a mixin: the admin class keeps configuration, pages and actions)."""

    # --- columns -------------------------------------------------------------------------------------------
    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return format_html(
            '<span class="badge" style="background:{}">{}</span>',
            BADGE_COLOURS.get(obj.status, "#777"),
            obj.get_status_display(),
        )

    @admin.display(description="progress", ordering="progress_percent")
    def progress(self, obj):
        return progress_html(obj)

    @admin.display(description="best mAP50")
    def best_map50(self, obj):
        model = getattr(obj, "trained_model", None)
        if model is None or model.bbox_mAP_50 is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:models_registry_trainedmodel_change", args=[model.pk]),
            f"{model.bbox_mAP_50:.3f}",
        )

    @admin.display(description="base model")
    def base_model_link(self, obj):
        return related_model_html(
            obj.base_model_id, getattr(obj.base_model, "name", ""), getattr(obj, "base_model_visible", False)
        )

    @admin.display(description="retry of")
    def retry_of_link(self, obj):
        return related_link(
            obj.retry_of_id, getattr(obj, "retry_of_visible", False), url_name="admin:training_trainingrun_change"
        )

    @admin.display(description="duration")
    def duration(self, obj):
        return format_duration(obj.duration_seconds)

    @admin.display(description="trained model")
    def model_link(self, obj):
        model = getattr(obj, "trained_model", None)
        if model is None:
            return "—"
        return format_html(
            '<a href="{}">#{} {}</a>',
            reverse("admin:models_registry_trainedmodel_change", args=[model.pk]),
            model.pk,
            model.name,
        )

    # --- detail ---------------------------------------------------------------------------------------------
    @admin.display(description="loss, learning rate and mAP")
    def curves(self, obj):
        """Loss and learning rate per iteration, mAP per epoch: one read of the run's events for all three."""
        metrics = run_metrics(obj)
        its = metrics["iterations"]

        def per_iteration(key: str, title: str) -> str:
            return line_chart(
                [Series(key, [(i["iteration"], i[key]) for i in its])],
                title=title,
                x_label="iteration",
                y_label=key,
                y_min=0,
            )

        return mark_safe(
            per_iteration("loss", "Training loss")
            + per_iteration("lr", "Learning rate")
            + epoch_map_chart(metrics["epochs"])
        )

    @admin.display(description="hyper-parameters")
    def parameters_table(self, obj):
        return format_html(
            '<table class="kv">{}</table>',
            format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", sorted(obj.parameters.items())),
        )

    @admin.display(description="training pipeline")
    def pipeline_steps(self, obj):
        steps = run_pipeline(obj)
        if not steps:
            return "—"
        return format_html('<ol id="pipeline">{}</ol>', format_html_join("", "<li>{}</li>", ((s,) for s in steps)))

    @admin.display(description="first training batch")
    def samples_html(self, obj):
        """The first batch as the network saw it, boxes drawn (inline pictures: a few small JPEGs)."""
        pictures = []
        for entry in stored_samples(obj.pk):
            try:
                with open_stored(entry["name"]) as fh:
                    data = base64.b64encode(fh.read(SAMPLE_MAX_BYTES)).decode()
            except FileNotFoundError:
                continue
            caption = f"{entry.get('width')} x {entry.get('height')} px, {entry.get('boxes')} boxes" + (
                f", {entry['ignored']} ignored" if entry.get("ignored") else ""
            )
            pictures.append((data, caption, caption))
        if not pictures:
            return "— (saved at the run's first iteration)"
        return format_html(
            '<div class="samples" id="samples">{}</div><p class="help">Green: boxes the model learns; orange: boxes '
            "a crop cut too much, ignored.</p>",
            format_html_join(
                "",
                '<figure style="display:inline-block;margin:0 8px 8px 0"><img src="data:image/jpeg;base64,{}" '
                'alt="{}" style="max-width:256px;max-height:256px"><figcaption>{}</figcaption></figure>',
                pictures,
            ),
        )

    @admin.display(description="exported split")
    def export_table(self, obj):
        keys = ("train_images", "val_images", "train_annotations", "val_annotations", "classes")
        rows = [(k, obj.export_summary.get(k)) for k in keys if k in obj.export_summary]
        gsd = obj.export_summary.get("ground_resolution") if obj.export_summary else None
        if gsd:
            rows.append(
                (
                    "ground resolution (training split)",
                    f"{gsd['min_m'] * 100:.1f} to {gsd['max_m'] * 100:.1f} cm per pixel, median "
                    f"{gsd['median_m'] * 100:.1f} cm ({gsd['images']} images with a footprint)",
                )
            )
        return (
            format_html('<table class="kv">{}</table>', format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))
            if obj.export_summary
            else "—"
        )

    @admin.display(description="base model weights")
    def weight_transfer_html(self, obj):
        """What was said before the run was queued, and, once it started, tensor by tensor what was done."""
        transfer = obj.weight_transfer or {}
        if not transfer:
            return "— (trained from scratch)" if obj.base_model_id is None else "—"
        applied = transfer.get("applied") or {}
        rows = [("plan", transfer.get("summary", ""))]
        if applied:
            # Largest part first (jsonb keeps no key order).
            groups = ", ".join(
                f"{name} ({count})"
                for name, count in sorted((applied.get("loaded_groups") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
            )
            rows.append(("loaded", f"{applied.get('loaded_count')} of {applied.get('total')} tensors: {groups}"))
            rows += [
                (
                    "re-initialised",
                    f"{entry['key']} {'x'.join(map(str, entry['shape']))}"
                    + (f" (base model: {'x'.join(map(str, entry['base_shape']))})" if entry.get("base_shape") else "")
                    + f": {entry['reason']}",
                )
                for entry in applied.get("reinitialised") or []
            ]
            if applied.get("unused_count"):
                rows.append(("not used", f"{applied['unused_count']} tensors of the base model have no place here"))
        else:
            rows.append(("applied", "when the training starts"))
        return format_html(
            '<table class="kv" id="weight-transfer">{}</table>',
            format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
        )

    @admin.display(description="where the time went")
    def timings_table(self, obj):
        if not obj.timings:
            return "—"
        total = sum(obj.timings.values()) or 1.0
        phases = [(phase, obj.timings[phase]) for phase in TrainingRun.PHASES if phase in obj.timings]
        return format_html(
            '<table class="kv" id="run-timings">{}</table>',
            format_html_join(
                "",
                "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
                [(phase, f"{seconds:.2f} s", f"{100 * seconds / total:.1f}%") for phase, seconds in phases],
            ),
        )

    @admin.display(description="log (end)")
    def log(self, obj):
        return format_html('<pre class="log">{}</pre>', run_log_tail(obj)[-8000:] or "—")

    @admin.display(description="audit trail")
    def history(self, obj):
        return audit_trail_html(obj)


class RunActions:
    """Cancel and retry, each run through its service (which checks the user's permission on it)."""

    # --- actions --------------------------------------------------------------------------------------------
    def _each(self, request, queryset, label, func):
        """Apply a service to each selected run; the service checks the user's permission on each one."""
        done = 0
        for run in queryset:
            try:
                func(run)
                done += 1
            except (ApplicationError, PermissionDenied) as exc:
                self.message_user(request, f"Run #{run.pk}: {exc}", messages.ERROR)
        if done:
            self.message_user(request, f"{label.capitalize()}: {done} run(s).", messages.SUCCESS)

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request, queryset):
        self._each(request, queryset, "cancel", lambda run: services.training_run_cancel(run=run, user=request.user))

    @admin.action(description="Retry selected runs")
    def retry_runs(self, request, queryset):
        self._each(request, queryset, "retry", lambda run: services.training_run_retry(run=run, user=request.user))
