"""Admin pages beyond the change list: start a run, compare runs or models side by side."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.module_loading import import_string

from access.rules import can, visible
from core.charts import Series, line_chart
from core.errors import ApplicationError
from core.formatting import metric
from engine.params import PARAM_SPECS
from engine.presets import DEFAULT_PRESET
from engine.transfer import NEW_CLASSES
from models_registry.models import METRIC_FIELDS, Evaluation
from models_registry.selectors import models_visible_to, related_visibility

from ..kinds import KINDS
from ..models import TrainingRun
from ..services import training_run_create, training_run_preview, training_run_validate
from ..services.evaluation_runs import evaluation_run_create
from ..services.export_runs import onnx_export_create
from .forms import EvaluateForm, OnnxExportForm, StartRunForm


class _NotConfirmed(Exception):
    """Fine-tuning to new classes was not confirmed on the form yet."""


def start_run_view(model_admin, request):
    if not can(request.user, "training.add_trainingrun"):
        raise PermissionDenied
    form = StartRunForm(request.POST or None, user=request.user)
    if request.method == "POST" and not form.is_valid() and form.cleaned_data.get("dataset"):
        # Some fields did not parse; check the ones that did with the service too, so every error shows at once.
        try:
            training_run_validate(
                dataset=form.cleaned_data["dataset"],
                architecture=form.cleaned_data.get("architecture") or DEFAULT_PRESET,
                base_model=form.cleaned_data.get("base_model"),
                parameters=form.parameters(),
            )
        except ApplicationError as exc:
            form.add_service_errors("", {k: v for k, v in exc.extra.items() if k not in form.errors})
    elif request.method == "POST" and form.is_valid():
        try:
            plan = training_run_preview(
                dataset=form.cleaned_data["dataset"],
                architecture=form.cleaned_data["architecture"],
                base_model=form.cleaned_data["base_model"],
                parameters=form.parameters(),
                user=request.user,
            )
            transfer = plan.weight_transfer
            if transfer.get("mode") == NEW_CLASSES and not form.cleaned_data.get("confirm_transfer"):
                # Said before anything is queued, and never silently: the operator confirms it.
                form.add_error("confirm_transfer", f"{transfer['summary']} Tick this box and start again to confirm.")
                raise _NotConfirmed
            run = training_run_create(
                dataset=form.cleaned_data["dataset"],
                architecture=form.cleaned_data["architecture"],
                base_model=form.cleaned_data["base_model"],
                parameters=form.parameters(),
                name=form.cleaned_data["name"],
                created_by=request.user,
                priority=form.cleaned_data["priority"],
            )
        except _NotConfirmed:
            pass
        except ApplicationError as exc:
            form.add_service_errors(exc.message, exc.extra)
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
        else:
            if transfer:
                messages.info(request, f"Base model weights: {transfer['summary']}")
            messages.success(request, f"Training run #{run.pk} {run.name!r} is queued.")
            return redirect(reverse("admin:training_trainingrun_change", args=[run.pk]))
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Start a training run",
        "form": form,
        "opts": model_admin.model._meta,
        "has_view_permission": True,
    }
    return TemplateResponse(request, "admin/training/start_run.html", context)


def model_run_page(model_admin, request, *, form_class, create, what: str, page: dict):
    """A page that queues a run of a model (chosen on the model list, ``?model=``): the form, ``create(data)``'s
    refusal shown on it (the fields it names beside them), or the queued run's page."""
    if not can(request.user, "training.add_trainingrun"):
        raise PermissionDenied
    initial = {"model": request.GET.get("model")} if request.GET.get("model") else None
    form = form_class(request.POST or None, user=request.user, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            run = create(form)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
            for field, problem in (exc.extra or {}).items():
                if field in form.fields:
                    form.add_error(field, str(problem))
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"{what} #{run.pk} {run.name!r} is queued.")
            return redirect(reverse("admin:training_trainingrun_change", args=[run.pk]))
    context = {
        **model_admin.admin_site.each_context(request),
        **page,
        "form": form,
        "opts": model_admin.model._meta,
        "has_view_permission": True,
    }
    return TemplateResponse(request, "admin/training/start_run.html", context)


def onnx_export_view(model_admin, request):
    """Export a model to ONNX: queued as a run; the file is kept with the model once it passes the parity gate."""
    return model_run_page(
        model_admin,
        request,
        form_class=OnnxExportForm,
        create=lambda form: onnx_export_create(
            model=form.cleaned_data["model"], name=form.cleaned_data["name"], created_by=request.user
        ),
        what="ONNX export",
        page={
            "title": "Export a model to ONNX",
            "intro": (
                "A worker writes the model to ONNX (standard operators, NMS inside: plain ONNX Runtime runs it), "
                "then runs both on the model's own validation split: the parity gate. The file is kept with the "
                "model only if it passes; the model's card shows the figures either way."
            ),
            "crumb": "Export to ONNX",
            "form_id": "onnx-export-form",
            "submit_label": "Export",
        },
    )


def evaluate_view(model_admin, request):
    """Evaluate a model on a dataset: queued as an evaluation run; its results appear with the model."""
    return model_run_page(
        model_admin,
        request,
        form_class=EvaluateForm,
        create=lambda form: evaluation_run_create(
            model=form.cleaned_data["model"],
            dataset=form.cleaned_data["dataset"],
            split=form.cleaned_data["split"],
            parameters=form.parameters(),
            name=form.cleaned_data["name"],
            created_by=request.user,
        ),
        what="Evaluation run",
        page={"title": "Evaluate a model", "crumb": "Evaluate", "form_id": "evaluate-form", "submit_label": "Evaluate"},
    )


def per_class_rows(user, models: list) -> list[tuple[str, list]]:
    """AP50, precision and recall per class, from each model's validation on its training run's split (one
    query); classes in the order they first appear. Statistics, so only for users who may see those."""
    if not can(user, "models_registry.view_trainedmodel_statistics"):
        return []
    found: dict[int | None, dict] = {}
    for evaluation in Evaluation.objects.filter(
        model__in=[m for m in models if m], kind=Evaluation.Kind.VALIDATION
    ).order_by("created_at", "id"):
        found[evaluation.model_id] = {row["class"]: row for row in evaluation.per_class}  # the newest wins
    classes = list(dict.fromkeys(name for per in found.values() for name in per))
    rows = []
    for name in classes:
        for key, label in (("ap50", "AP50"), ("precision", "precision"), ("recall", "recall")):
            values = []
            for m in models:
                row = found.get(getattr(m, "pk", None), {}).get(name)
                values.append(metric(row.get(key)) if row and row.get(key) is not None else "—")
            rows.append((f"{label} · {name}", values))
    return rows


def compare_view(admin_site, request, *, kind: str, ids: list[int]):
    """Parameters and metrics of two or more runs or models in columns. A column shows only what the user may
    see: a published model's private run (its parameters) or dataset stays out, as does a visible run's model
    that the user may not see."""
    user = request.user
    hidden = "(not visible to you)"
    if kind == "runs":
        runs = list(
            visible(user, "training.view_trainingrun", TrainingRun.objects.select_related("dataset"))
            .filter(pk__in=ids)
            .order_by("pk")
        )
        seen_models = {m.pk: m for m in models_visible_to(user).filter(source_run__in=runs)}
        items = [
            (
                f"Run #{r.pk} {r.name}",
                r,
                seen_models.get(getattr(getattr(r, "trained_model", None), "pk", None)),
                str(r.dataset),
            )
            for r in runs
        ]
    else:
        models = list(
            models_visible_to(user)
            .select_related("source_run", "dataset")
            .annotate(**related_visibility(user))
            .filter(pk__in=ids)
            .order_by("pk")
        )
        items = [
            (
                f"Model #{m.pk} {m.name}",
                m.source_run if m.source_run_visible else None,
                m,
                (str(m.dataset) if m.dataset_visible else hidden) if m.dataset_id else "—",
            )
            for m in models
        ]
    if len(items) < 2:
        messages.warning(request, "Choose at least two items you may see to compare.")
        return redirect(reverse("admin:index"))
    rows = [
        ("Dataset", [dataset for *_x, dataset in items]),
        ("Architecture", [getattr(run or model, "architecture", "—") for _, run, model, _d in items]),
    ]
    for name in PARAM_SPECS:
        rows.append((name, [run.parameters.get(name, "—") if run else "—" for _, run, _m, _d in items]))
    for field in METRIC_FIELDS:
        rows.append((field, [metric(getattr(m, field)) if m else "—" for _l, _r, m, _d in items]))
    rows.append(("best epoch", [m.best_epoch if m else "—" for _l, _r, m, _d in items]))
    rows.extend(per_class_rows(user, [m for _l, _r, m, _d in items]))
    rows.append(
        (
            "parameters (count)",
            [f"{m.parameter_count:,}" if m and m.parameter_count else "—" for _l, _r, m, _d in items],
        )
    )
    rows.append(
        (
            "training time",
            [str(m.training_duration).split(".")[0] if m and m.training_duration else "—" for _l, _r, m, _d in items],
        )
    )

    charts = []
    if kind == "models":
        for run_kind in KINDS.values():  # figures other rooms' runs of these models add (detection's sites)
            if run_kind.compare:
                compare = import_string(run_kind.compare)
                more_rows, more_charts = compare(user, [m for _l, _r, m, _d in items])
                rows.extend(more_rows)
                charts.extend(more_charts)
    chart = line_chart(
        [
            Series(label, [(e["epoch"], e.get("bbox_mAP_50")) for e in (m.metrics_history or [])])
            for label, _r, m, _d in items
            if m
        ],
        title="bbox mAP50 per epoch",
        x_label="epoch",
        y_label="mAP50",
        y_min=0,
        y_max=1,
        width=720,
        x_integer=True,
    )
    context = {
        **admin_site.each_context(request),
        "title": f"Compare {kind}",
        "columns": [i[0] for i in items],
        "rows": rows,
        "chart": chart,
        "charts": charts,
    }
    return TemplateResponse(request, "admin/compare.html", context)
