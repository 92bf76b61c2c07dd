"""What a user may see of labelling tasks: with the view permission (a role's), those whose source (the detection
run or the dataset) and model they may see."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from access.rules import can
from datasets.selectors import datasets_visible_to
from detection.selectors import detection_runs_visible_to
from models_registry.selectors import models_visible_to

from .models import LabellingTask


def labelling_tasks_visible_to(user) -> QuerySet[LabellingTask]:
    # A task has no permissions of its own per object: it is seen with its source, by the roles that see tasks.
    if not can(user, "labelling.view_labellingtask"):
        return LabellingTask.objects.none()
    tasks = LabellingTask.objects.all()
    source = Q(detection_run__in=detection_runs_visible_to(user)) | Q(dataset__in=datasets_visible_to(user))
    return tasks.filter(source, model__in=models_visible_to(user)).select_related(
        "model", "detection_run", "dataset", "returned_dataset", "created_by"
    )
