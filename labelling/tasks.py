"""django-q2 entry points of labelling (a task takes an id; the service that queues it runs on commit)."""

from __future__ import annotations

from .building import build_labelling_task

__all__ = ["build_labelling_task"]
