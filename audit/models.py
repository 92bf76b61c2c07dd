"""The audit trail: who did what to which run or model, when, and through which interface."""

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    class Interface(models.TextChoices):
        API = "api", "REST API"
        ADMIN = "admin", "Admin"
        CLI = "cli", "Command line"
        WORKER = "worker", "Worker"
        SYSTEM = "system", "System"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    interface = models.CharField(max_length=16, choices=Interface.choices)
    action = models.CharField(max_length=32, db_index=True)
    object_type = models.CharField(max_length=32)
    object_id = models.BigIntegerField()
    object_name = models.CharField(max_length=200, help_text="The object's name at the time (it may be gone).")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.object_type} #{self.object_id} {self.action}"
