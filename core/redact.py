"""Text shown to users never tells where this server keeps its files.

Errors and logs of training runs come from code that names absolute paths (Python tracebacks, mmengine's log,
OS errors). Users see the same text with each of this server's roots replaced by a short placeholder; operators
find the originals in the server log. A worker redacts a run's log and events before it stores them: the web does not
know the folders of another host.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from functools import lru_cache

from django.conf import settings


@lru_cache(maxsize=8)
def _roots(media: str, work: str, base: str, cache: str) -> tuple[tuple[str, str], ...]:
    pairs = [(work, "<runs>"), (media, "<media>"), (base, "<app>"), (cache, "<cache>")]
    for key in ("purelib", "platlib", "stdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            pairs.append((path, "<python>"))
    pairs += [(sys.prefix, "<python>"), (sys.base_prefix, "<python>"), (os.path.expanduser("~"), "<home>")]
    resolved = []
    for path, label in pairs:
        for variant in {str(path).rstrip("/"), os.path.realpath(str(path)).rstrip("/")}:
            if len(variant) > 1:
                resolved.append((variant, label))
    # Longest first: a root inside another (runs inside the app folder) is named by the more precise label.
    return tuple(sorted(set(resolved), key=lambda pair: -len(pair[0])))


def redact_paths(text: str) -> str:
    """``text`` with the server's media, runs, cache, application and Python roots replaced by placeholders."""
    if not text:
        return text
    roots = _roots(
        str(settings.MEDIA_ROOT),
        str(settings.TRAINING_WORK_ROOT),
        str(settings.BASE_DIR),
        str(settings.DUMPSITE_HOST_CACHE_ROOT),
    )
    for path, label in roots:
        if path in text:
            text = text.replace(path, label)
    return text
