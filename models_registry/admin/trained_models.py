"""The operator console for trained models: metrics, lineage, publish / unpublish, downloads, comparison."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from access.rules import can
from core.admin import AccessControlledAdmin, VisibleRelatedOnlyFilter, fields_of, parse_ids
from core.errors import ApplicationError
from core.uploads import uploaded_file_path
from engine.presets import preset_choices

from .. import predictions, services
from ..card import card_markdown, model_card
from ..evaluations import validation_of
from ..models import TrainedModel
from ..selectors import models_visible_to, related_visibility
from .columns import ModelColumns, lineage_html
from .evaluations import results_context
from .predictions import PredictForm


class RegisterCheckpointForm(forms.Form):
    checkpoint = forms.FileField(help_text="The .pth file (a dict with state_dict and meta, as the model zoo has it).")
    name = forms.CharField(max_length=200)
    architecture = forms.ChoiceField(choices=preset_choices())
    classes = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One class name per line, in label order. Empty: the names stored in the file, or COCO's 80.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def class_names(self) -> list[str] | None:
        names = [line.strip() for line in (self.cleaned_data.get("classes") or "").splitlines() if line.strip()]
        return names or None


@admin.register(TrainedModel)
class TrainedModelAdmin(ModelColumns, AccessControlledAdmin, admin.ModelAdmin):
    change_list_template = "admin/models_registry/trainedmodel/change_list.html"
    list_display = (
        "id",
        "name",
        "published",
        "map",
        "map50",
        "map75",
        "architecture",
        "base_model_link",
        "dataset_link",
        "created_by",
        "created_at",
    )
    list_display_links = ("id", "name")
    list_filter = ("is_published", "architecture", "origin", ("dataset", VisibleRelatedOnlyFilter))
    search_fields = ("name", "description")
    list_select_related = ("base_model", "dataset", "created_by")
    actions = ["publish", "unpublish", "compare", "evaluate", "export_onnx", "detect"]
    fieldsets = [
        (
            None,
            {
                "fields": (
                    "name",
                    "description",
                    "published",
                    "origin",
                    "architecture",
                    "class_names",
                    "dataset_link",
                    "run_link",
                    "downloads",
                )
            },
        ),
        (
            "Metrics (best epoch)",
            {
                "fields": (
                    "best_epoch",
                    "bbox_mAP",
                    "bbox_mAP_50",
                    "bbox_mAP_75",
                    "bbox_mAP_s",
                    "bbox_mAP_m",
                    "bbox_mAP_l",
                    "map_chart",
                )
            },
        ),
        (
            "Artifacts",
            {
                "fields": (
                    "checkpoint_sha256",
                    "config_sha256",
                    "parameter_count",
                    "training_duration",
                    "gsd_m",
                    "mlflow_registration",
                    "created_by",
                    "created_at",
                )
            },
        ),
        ("History", {"fields": ("history",)}),
    ]
    # Everything on the page is read-only but what the service lets the user change.
    readonly_fields = tuple(f for f in fields_of(fieldsets) if f not in ("name", "description"))

    class Media:
        css = {"all": ("admin_console/console.css",)}

    def visible_queryset(self, request, queryset):
        user = request.user
        return models_visible_to(user, queryset).annotate(**related_visibility(user))

    def save_with_service(self, request, obj, data):
        services.trained_model_update(
            model=obj, name=data.get("name"), description=data.get("description"), user=request.user
        )

    def has_delete_permission(self, request, obj=None):
        return False  # deletion goes through trained_model_delete (API), which keeps lineages and published models

    def has_add_permission(self, request):
        return False  # models come from runs or `manage.py register_base_model`, which check their files

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not can(request.user, "models_registry.publish_trainedmodel"):
            actions.pop("publish", None)
            actions.pop("unpublish", None)
        if not can(request.user, "training.add_trainingrun"):
            actions.pop("evaluate", None)
            actions.pop("export_onnx", None)
        if not can(request.user, "detection.run_detection"):
            actions.pop("detect", None)
        return actions

    def get_urls(self):
        return [
            path(
                "compare/", self.admin_site.admin_view(self.compare_page), name="models_registry_trainedmodel_compare"
            ),
            path(
                "lineage/", self.admin_site.admin_view(self.lineage_page), name="models_registry_trainedmodel_lineage"
            ),
            path(
                "register/",
                self.admin_site.admin_view(self.register_page),
                name="models_registry_trainedmodel_register",
            ),
            path(
                "<int:pk>/predict/",
                self.admin_site.admin_view(self.predict_page),
                name="models_registry_trainedmodel_predict",
            ),
            path(
                "<int:pk>/publish/",
                self.admin_site.admin_view(self.publish_page),
                name="models_registry_trainedmodel_publish",
            ),
        ] + super().get_urls()

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        """The parts of the page that depend on who looks (the publish button, the lineage as that user may see
        it) are computed here with the request and handed to the template; nothing is stashed on the object."""
        if obj is not None:
            try:
                card = card_markdown(model_card(obj, request.user))
            except ApplicationError as exc:
                card = str(exc)
            context.update(
                publish_button=self._publish_button(request, obj),
                predict_url=(
                    reverse("admin:models_registry_trainedmodel_predict", args=[obj.pk])
                    if can(request.user, "models_registry.predict_trainedmodel", obj)
                    else ""
                ),
                lineage=lineage_html(obj, request.user),
                model_card=card,
                evaluate_url=(
                    reverse("admin:training_trainingrun_evaluate") + f"?model={obj.pk}"
                    if can(request.user, "training.add_trainingrun")
                    else ""
                ),
                detect_url=self._detect_url(request, obj.pk),
            )
            validation = (
                validation_of(obj) if can(request.user, "models_registry.view_trainedmodel_statistics") else None
            )
            if validation is not None:
                context.update(results_context(validation, sort=request.GET.get("sort", ""), base_url=request.path))
                context["evaluations_url"] = (
                    reverse("admin:models_registry_evaluation_changelist") + f"?model__id__exact={obj.pk}"
                )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _detect_url(self, request, pk: int) -> str:
        # The detection room's page, named by URL only: the registry, below that room, imports nothing of it.
        if not can(request.user, "detection.run_detection"):
            return ""
        return reverse("admin:detection_detectionrun_start") + f"?model={pk}"

    def _publish_button(self, request, obj):
        if not can(request.user, "models_registry.publish_trainedmodel", obj):
            return ""
        # A button of the change form posting elsewhere (formaction): forms cannot nest.
        return format_html(
            '<button type="submit" formaction="{}" formmethod="post" name="{}" value="1" class="button" '
            'id="publish-toggle">{}</button>',
            reverse("admin:models_registry_trainedmodel_publish", args=[obj.pk]),
            "unpublish" if obj.is_published else "publish",
            "Unpublish" if obj.is_published else "Publish",
        )

    # --- pages and actions ----------------------------------------------------------------------------------
    def changelist_view(self, request, extra_context=None):
        extra = {"can_register": can(request.user, "models_registry.add_trainedmodel"), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def predict_page(self, request, pk):
        """Upload an image and queue the model on it; the prediction's page shows the boxes when it is done."""
        model = models_visible_to(request.user).filter(pk=pk).first()
        if model is None:
            raise Http404
        if not can(request.user, "models_registry.predict_trainedmodel", model):
            raise PermissionDenied
        form = PredictForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["image"]
            try:
                if upload.size > settings.DUMPSITE_MAX_IMAGE_BYTES:
                    raise ApplicationError(f"The image is larger than {settings.DUMPSITE_MAX_IMAGE_BYTES:,} bytes.")
                prediction = predictions.prediction_create(
                    model=model,
                    content=upload.read(),
                    original_name=upload.name,
                    score_threshold=form.cleaned_data["score_threshold"],
                    user=request.user,
                )
            except ApplicationError as exc:
                form.add_error("image" if "score_threshold" not in exc.extra else "score_threshold", exc.message)
            else:
                messages.success(request, f"Prediction #{prediction.pk} is queued for a worker.")
                return redirect("admin:models_registry_prediction_change", prediction.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Predict with model #{model.pk} {model.name}",
            "form": form,
            "opts": self.model._meta,
            "submit_label": "Predict",
            "intro": "The model runs on the image in a worker (never in the web server); its boxes and a preview "
            "show on the prediction's page.",
        }
        return TemplateResponse(request, "admin/upload_form.html", context)

    def register_page(self, request):
        """Upload a checkpoint and register it as a base model (the service checks the file and the user)."""
        if not can(request.user, "models_registry.add_trainedmodel"):
            raise PermissionDenied
        form = RegisterCheckpointForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                with uploaded_file_path(form.cleaned_data["checkpoint"]) as checkpoint:
                    model, report = services.trained_model_register_file(
                        checkpoint=checkpoint,
                        name=form.cleaned_data["name"],
                        architecture=form.cleaned_data["architecture"],
                        classes=form.class_names(),
                        description=form.cleaned_data["description"],
                        created_by=request.user,
                    )
            except ApplicationError as exc:
                form.add_error("checkpoint" if "checkpoint" in exc.extra else None, exc.message)
                if "classes" in exc.extra:
                    form.add_error("classes", "Give the class names, one per line, in label order.")
            else:
                messages.success(
                    request,
                    f"Registered model #{model.pk} {model.name!r}: {len(model.class_names)} classes (from "
                    f"{'the form' if form.class_names() else report.get('class_source')}), "
                    f"{report['parameter_count']:,} parameters.",
                )
                return redirect("admin:models_registry_trainedmodel_change", model.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": "Register a checkpoint",
            "form": form,
            "opts": self.model._meta,
            "submit_label": "Register",
            "intro": "Register an MMDetection checkpoint as a base model to fine-tune from: for example a model-zoo "
            "checkpoint of Faster R-CNN R-50 FPN trained on COCO. The file is checked weights-only in a separate "
            "process, tensor by tensor against the preset's model; nothing in it is run.",
        }
        return TemplateResponse(request, "admin/upload_form.html", context)

    def publish_page(self, request, pk):
        if request.method != "POST":
            return redirect("admin:models_registry_trainedmodel_change", pk)
        model = models_visible_to(request.user).filter(pk=pk).first()
        if model is None:
            raise Http404
        self._toggle(request, [model], publish="publish" in request.POST)
        return redirect("admin:models_registry_trainedmodel_change", pk)

    def _toggle(self, request, models, *, publish: bool):
        for model in models:  # the service checks the user's permission on each one
            try:
                if publish:
                    services.trained_model_publish(model=model, user=request.user)
                else:
                    services.trained_model_unpublish(model=model, user=request.user)
            except (ApplicationError, PermissionDenied) as exc:
                self.message_user(request, f"Model #{model.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Model #{model.pk} {model.name!r} is {'published' if publish else 'no longer published'}.",
                    messages.SUCCESS,
                )

    @admin.action(description="Publish selected models")
    def publish(self, request, queryset):
        self._toggle(request, list(queryset), publish=True)

    @admin.action(description="Unpublish selected models")
    def unpublish(self, request, queryset):
        self._toggle(request, list(queryset), publish=False)

    @admin.action(description="Evaluate the selected model on a dataset")
    def evaluate(self, request, queryset):
        # The form is the training app's (an evaluation is a run); the registry names it by URL only.
        chosen = list(queryset.values_list("pk", flat=True)[:2])
        if len(chosen) != 1:
            self.message_user(request, "Choose one model to evaluate.", messages.WARNING)
            return None
        return redirect(f"{reverse('admin:training_trainingrun_evaluate')}?model={chosen[0]}")

    @admin.action(description="Export the selected model to ONNX (behind the parity gate)")
    def export_onnx(self, request, queryset):
        # The form is the training app's (an export is a run); the registry names it by URL only.
        chosen = list(queryset.values_list("pk", flat=True)[:2])
        if len(chosen) != 1:
            self.message_user(request, "Choose one model to export.", messages.WARNING)
            return None
        return redirect(f"{reverse('admin:training_trainingrun_onnx_export')}?model={chosen[0]}")

    @admin.action(description="Detect on orthophotos with the selected model")
    def detect(self, request, queryset):
        chosen = list(queryset.values_list("pk", flat=True)[:2])
        if len(chosen) != 1:
            self.message_user(request, "Choose one model to detect with.", messages.WARNING)
            return None
        return redirect(self._detect_url(request, chosen[0]))

    @admin.action(description="Compare selected models side by side")
    def compare(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:models_registry_trainedmodel_compare')}?ids={ids}")

    def compare_page(self, request):
        # One compare page for runs and models, the training app's (it shows the runs' parameters); the registry
        # names it by URL only and imports nothing of training.
        query = urlencode({"kind": "models", "ids": ",".join(map(str, parse_ids(request.GET.get("ids"))))})
        return redirect(f"{reverse('admin:training_trainingrun_compare')}?{query}")

    def lineage_page(self, request):
        """Every visible root model (no visible base) with the tree of models derived from it."""
        visible_models = models_visible_to(request.user)
        roots = visible_models.exclude(base_model__in=visible_models).order_by("created_at")
        trees = [(root, lineage_html(root, request.user)) for root in roots[:200]]
        context = {
            **self.admin_site.each_context(request),
            "title": "Model lineage",
            "trees": trees,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/models_registry/lineage.html", context)
