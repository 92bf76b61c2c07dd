"""The worker clusters as the scheduler sees them: where they run, what they declared, what they are busy with."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.db.models import Prefetch
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html_join

from core.admin import ReadOnlyAdmin
from training.models import TrainingRun
from workers.models import Worker


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """The worker clusters: where they run, what they declared, what they are busy with, when they were last seen.
    Read-only: a worker registers itself (``manage.py worker``)."""

    list_display = (
        "name",
        "host",
        "state",
        "resources_declared",
        "busy_with",
        "processes",
        "heartbeat_at",
        "started_at",
    )
    list_filter = ("host",)
    search_fields = ("name", "host")
    fields = list_display
    readonly_fields = list_display

    def get_queryset(self, request):
        running = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).only("id", "name", "assigned_gpus")
        return super().get_queryset(request).prefetch_related(Prefetch("runs", queryset=running, to_attr="running"))

    @admin.display(description="state")
    def state(self, obj):
        if obj.stopped_at:
            return "stopped"
        age = (timezone.now() - obj.heartbeat_at).total_seconds()
        return "alive" if age <= settings.TRAINING_HEARTBEAT_LIMIT else f"silent for {age:.0f} s"

    @admin.display(description="resources")
    def resources_declared(self, obj):
        return obj.describe_resources()

    @admin.display(description="busy with")
    def busy_with(self, obj):
        if not obj.running:
            return "idle"
        return format_html_join(
            ", ",
            '<a href="{}">#{} {}</a>{}',
            (
                (
                    reverse("admin:training_trainingrun_change", args=[run.pk]),
                    run.pk,
                    run.name,
                    f" (GPUs {','.join(run.assigned_gpus)})" if run.assigned_gpus else "",
                )
                for run in obj.running
            ),
        )
