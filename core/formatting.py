"""How numbers are written for people, the same in the admin, the API's texts and the commands."""

from __future__ import annotations


def duration(seconds) -> str:
    """``1:05`` for 65 s, ``1:02:05`` past an hour, ``—`` when unknown."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def metric(value) -> str:
    """A score such as mAP with three decimals, ``—`` when there is none."""
    return "—" if value is None else f"{value:.3f}"
