"""Run kinds that other rooms add on top of training's own two (``detection`` adds detection runs): what a worker
does with a claimed run of the kind, and how a failed or cancelled one is run again. Each kind's app registers it
in its ``AppConfig.ready``, so that training, below those rooms, never imports them; queueing, progress, cancel,
time limits, the reaper and permissions are the runs' own and need nothing from the kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunKind:
    execute: Callable[[Any], str]  # (run) -> its final status
    again: Callable[..., Any]  # (run=, user=, resume=) -> the new queued attempt
    # The dotted path of (user, models) -> (rows, charts) that the models' compare page adds for runs of the kind
    # (imported when the page is drawn: admin code is not loaded while apps start); "": nothing.
    compare: str = ""
    # (run) -> the figures its end is told with (webhook bodies, the owner's mail): {"label": "value"}
    figures: Callable[[Any], dict[str, str]] | None = None


KINDS: dict[str, RunKind] = {}


def register_kind(
    kind: str,
    *,
    execute: Callable[[Any], str],
    again: Callable[..., Any],
    compare: str = "",
    figures: Callable[[Any], dict[str, str]] | None = None,
) -> None:
    KINDS[kind] = RunKind(execute=execute, again=again, compare=compare, figures=figures)
