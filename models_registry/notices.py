"""What a publication tells subscribers (``model.published``, ``model.unpublished``), written into the outbox in
the transaction that changed it."""

from __future__ import annotations

from access.rules import can
from notifications.models import Event
from notifications.services import Notice, notice_emit

from .models import TrainedModel
from .selectors import models_visible_to


def model_visible(model_id: int, *, was_published: bool):
    """Who is told: those who may see the model now, and, of a withdrawal, those who saw it while published."""

    def audience(user) -> bool:
        if was_published and can(user, "models_registry.view_published_trainedmodel"):
            return True
        return models_visible_to(user, TrainedModel.objects.filter(pk=model_id)).exists()

    return audience


def publication_told(model: TrainedModel, *, published: bool, user) -> None:
    event = Event.MODEL_PUBLISHED if published else Event.MODEL_UNPUBLISHED
    notice_emit(
        Notice(
            event=event,
            title=f"Model #{model.pk} {model.name!r} {'published' if published else 'unpublished'}",
            objects={"model": ("trainedmodel", model.pk)},
            audience=model_visible(model.pk, was_published=not published),
            data={
                "name": model.name,
                "architecture": model.architecture,
                "bbox_mAP_50": model.bbox_mAP_50,
                "class_names": model.class_names,
                "by": getattr(user, "username", None),
            },
        )
    )
