"""The one error type for rule violations, raised by services and shown by every interface."""

from __future__ import annotations


class ApplicationError(Exception):
    """A request that breaks a rule of the domain. ``message`` is for humans; ``extra`` holds field details."""

    def __init__(self, message: str, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}

    def __str__(self) -> str:
        if not self.extra:
            return self.message
        details = "; ".join(f"{key}: {value}" for key, value in self.extra.items())
        return f"{self.message} ({details})"
