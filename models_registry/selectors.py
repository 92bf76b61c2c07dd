"""What a user may see in the registry (models, their evaluations, predict checks), and a model's lineage."""

from __future__ import annotations

from django.apps import apps
from django.db.models import Exists, OuterRef, Q, QuerySet

from access.rules import can, own_or_all, visible
from datasets.selectors import datasets_visible_to

from .models import Evaluation, Prediction, TrainedModel


def models_visible_to(user, queryset: QuerySet | None = None) -> QuerySet:
    """Models with the view permission (global or per object), plus published ones for roles that see those."""
    queryset = TrainedModel.objects.all() if queryset is None else queryset
    own = visible(user, "models_registry.view_trainedmodel", queryset)
    if can(user, "models_registry.view_published_trainedmodel"):
        return queryset.filter(Q(pk__in=own.values("pk")) | Q(is_published=True))
    return own


RELATED = ("base_model", "source_run", "dataset")


def _visible_related(user) -> dict[str, QuerySet]:
    """The base models, source runs and datasets ``user`` may see, one queryset each (``RELATED`` order).
    Interfaces show a related object's name or id only when it is visible, so a private run or model is never
    confirmed to exist through a published model that refers to it."""
    runs = apps.get_model("training", "TrainingRun").objects.all()
    datasets = apps.get_model("datasets", "Dataset").objects.all()
    return {
        "base_model": models_visible_to(user),
        "source_run": visible(user, "training.view_trainingrun", runs),
        "dataset": visible(user, "datasets.view_dataset", datasets),
    }


def related_visibility(user) -> dict:
    """Annotations for a queryset of models (admin lists): ``<name>_visible`` for each of ``RELATED``."""
    return {
        f"{name}_visible": Exists(seen.filter(pk=OuterRef(f"{name}_id")))
        for name, seen in _visible_related(user).items()
    }


def visible_related_ids(user, models) -> dict[str, set[int]]:
    """For a page of models: which of their base models, source runs and datasets ``user`` may see, as sets of
    ids. Three queries whatever the page size (the list endpoint's cost stays flat; per-row subqueries doubled
    it for object-permission users)."""
    wanted = {name: {getattr(m, f"{name}_id") for m in models} - {None} for name in RELATED}
    return {
        name: set(seen.filter(pk__in=wanted[name]).values_list("pk", flat=True))
        for name, seen in _visible_related(user).items()
    }


def model_lineage(model: TrainedModel, user) -> dict:
    """Ancestors (nearest first) and the tree of descendants, limited to the models the user may see."""
    seen = models_visible_to(user)
    ancestors: list[TrainedModel] = []
    current = model
    while current.base_model_id is not None and len(ancestors) < 100:
        current = TrainedModel.objects.select_related("base_model").get(pk=current.base_model_id)
        ancestors.append(current)
    visible_ids = set(seen.filter(pk__in=[a.pk for a in ancestors]).values_list("pk", flat=True))
    nodes: dict[int, dict] = {}
    frontier = [model.pk]
    while frontier and len(nodes) < 1000:  # one query per generation
        children = list(seen.filter(base_model_id__in=frontier).order_by("created_at", "id"))
        for child in children:
            nodes[child.pk] = {
                "id": child.pk,
                "name": child.name,
                "bbox_mAP_50": child.bbox_mAP_50,
                "is_published": child.is_published,
                "base_model": child.base_model_id,
                "children": [],
            }
        frontier = [child.pk for child in children]
    roots: list[dict] = []
    for node in nodes.values():
        parent = nodes.get(node["base_model"])
        (parent["children"] if parent else roots).append(node)
    return {
        "ancestors": [
            {"id": a.pk, "name": a.name, "bbox_mAP_50": a.bbox_mAP_50, "is_published": a.is_published}
            if a.pk in visible_ids
            else {"id": None, "name": "(not visible to you)"}
            for a in ancestors
        ],
        "descendants": roots,
    }


def evaluations_visible_to(user, queryset: QuerySet | None = None) -> QuerySet:
    """Evaluations of models the user sees, with the statistics permission, on datasets the user sees (an
    evaluation's gallery shows the dataset's images). An evaluation whose dataset was deleted keeps its figures,
    seen only by those who may see every dataset: nobody can tell any more who could see that one."""
    queryset = Evaluation.objects.all() if queryset is None else queryset
    if not can(user, "models_registry.view_trainedmodel_statistics"):
        return queryset.none()
    datasets = datasets_visible_to(user)
    on_dataset = Q(dataset__in=datasets)
    if can(user, "datasets.view_dataset"):
        on_dataset |= Q(dataset__isnull=True)
    return queryset.filter(model__in=models_visible_to(user)).filter(on_dataset)


def predictions_visible_to(user, queryset=None):
    """A user's own predictions; all of them for users who may view every model."""
    queryset = Prediction.objects.select_related("model") if queryset is None else queryset
    return own_or_all(user, "models_registry.view_trainedmodel", queryset)
