"""The admin's "Start training run" form. It only shapes input; ``training_run_create`` decides."""

from __future__ import annotations

from django import forms

from access.rules import visible
from core.admin import priority_field, spec_field
from datasets.models import Dataset
from datasets.selectors import datasets_visible_to
from engine.params import COMMON_DEFAULTS, CROPS_DEFAULTS, PARAM_SPECS
from engine.presets import DEFAULT_PRESET, PRESETS, get_preset, preset_choices
from models_registry.selectors import models_visible_to

from ..services.evaluation_runs import SPLITS

DEFAULTS = {**COMMON_DEFAULTS, **get_preset(DEFAULT_PRESET).defaults}
# Defaults the run decides from its dataset (training.services.runs.with_resize), in words.
CHOSEN = {
    "resize": "crops when the images are larger than image_size, else whole",
    **{name: f"{value} with resize crops, else {DEFAULTS[name]}" for name, value in CROPS_DEFAULTS.items()},
}


def _defaults_text(name: str) -> str:
    """The default of one parameter: one value, or each preset's where they differ."""
    if name in CHOSEN:
        return f"default {CHOSEN[name]}"
    values = {key: {**COMMON_DEFAULTS, **preset.defaults}[name] for key, preset in PRESETS.items()}
    if len(set(map(repr, values.values()))) == 1:
        return f"default {values[DEFAULT_PRESET]}"
    return "defaults: " + ", ".join(f"{value} for {key}" for key, value in values.items())


class StartRunForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Optional; defaults to dataset / architecture.")
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), help_text="Datasets you may train on.")
    architecture = forms.ChoiceField(
        choices=preset_choices(),
        initial=DEFAULT_PRESET,
        help_text=" ".join(f"{p.key}: {p.description}" for p in PRESETS.values()),
    )
    base_model: forms.ModelChoiceField = forms.ModelChoiceField(
        queryset=None,
        required=False,
        help_text=(
            "Fine-tune from this model (same architecture). With other classes than the dataset's, the head's class "
            "layers start afresh and the rest loads; you are asked to confirm. Empty: train from scratch."
        ),
    )
    confirm_transfer = forms.BooleanField(
        required=False,
        label="Re-initialise the class layers",
        help_text="Confirms fine-tuning to new classes (shown when the base model's classes differ).",
    )
    priority = priority_field()

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["dataset"].queryset = visible(user, "datasets.use_dataset", Dataset.objects.all())
        self.fields["base_model"].queryset = models_visible_to(user).order_by("-created_at")
        for spec in PARAM_SPECS.values():
            help_text = f"{spec.help} Valid: {spec.describe()}; {_defaults_text(spec.name)}."
            # An empty choice first: a browser submits the selected option, and the run must get its default.
            default = CHOSEN.get(spec.name, DEFAULTS[spec.name])
            self.fields[spec.name] = spec_field(spec, default, help_text, blank_choice=True)

    def parameters(self) -> dict:
        """The parameters that were given and parsed (the rest take the preset's defaults)."""
        return {name: self.cleaned_data[name] for name in PARAM_SPECS if self.cleaned_data.get(name) not in (None, "")}

    def add_service_errors(self, message: str, extra: dict) -> None:
        """Put a service's ApplicationError on the fields it names, the rest on the form."""
        placed = False
        for key, value in (extra or {}).items():
            if key in self.fields:
                # Parameter errors are precise on their own; for the dataset or base model the message says more.
                self.add_error(key, str(value) if key in PARAM_SPECS or not message else message)
                placed = True
        if message and not placed:
            self.add_error(None, message)


class OnnxExportForm(forms.Form):
    """The admin's "Export to ONNX" form: which model; ``onnx_export_create`` decides."""

    model: forms.ModelChoiceField = forms.ModelChoiceField(
        queryset=None,
        help_text=(
            "Models you may see. The export is checked against the model on its own validation split and kept only "
            "if it passes (mAP50 within 0.005, every detection matched at IoU 0.99)."
        ),
    )
    name = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = models_visible_to(user).order_by("-created_at")


class EvaluateForm(forms.Form):
    """The admin's "Evaluate a model" form: which model on which images; ``evaluation_run_create`` decides."""

    model: forms.ModelChoiceField = forms.ModelChoiceField(queryset=None, help_text="Models you may see.")
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(),
        required=False,
        help_text="Datasets you may see (not needed for its own split).",
    )
    split = forms.ChoiceField(choices=[(k, f"{k}: {v}") for k, v in SPLITS.items()], initial="all")
    split_strategy = forms.ChoiceField(
        choices=[(c, c) for c in PARAM_SPECS["split"].choices or ()],
        initial="random",
        help_text="For split=validation: " + PARAM_SPECS["split"].help,
    )
    val_fraction = forms.FloatField(initial=DEFAULTS["val_fraction"], min_value=0.05, max_value=0.5)
    seed = forms.IntegerField(initial=DEFAULTS["seed"], min_value=0)
    split_cell_m = forms.FloatField(initial=DEFAULTS["split_cell_m"], help_text=PARAM_SPECS["split_cell_m"].help)
    score_threshold = forms.FloatField(
        initial=DEFAULTS["score_threshold"], help_text=PARAM_SPECS["score_threshold"].help
    )
    iou_threshold = forms.FloatField(initial=DEFAULTS["iou_threshold"], help_text=PARAM_SPECS["iou_threshold"].help)
    name = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = models_visible_to(user).order_by("-created_at")
        self.fields["dataset"].queryset = datasets_visible_to(user)

    def parameters(self) -> dict:
        data = self.cleaned_data
        params = {"split": data.get("split_strategy")}
        for key in ("val_fraction", "seed", "split_cell_m", "score_threshold", "iou_threshold"):
            params[key] = data.get(key)
        return {k: v for k, v in params.items() if v is not None}
