"""Nothing opens the local media folder or the runs folder directly but the local storage backend and a worker's own
disk: every file the platform keeps goes through the storage, so that a site may keep them in a bucket and its worker
hosts share no folder (issue 29). Checked on the tree's source (nothing is imported), and shown to fail on violations
planted in a small tree of its own."""

from __future__ import annotations

import ast
from pathlib import Path

from .scan import PACKAGES, ROOT, modules

FOLDERS = ("MEDIA_ROOT", "TRAINING_WORK_ROOT")
FIELD_TYPES = ("FileField", "ImageField")
# Who may name the folders: the settings that define them; the local backend (``core.storage``) and the host's own
# disk (``core.host_cache``: the local folder read in place by a child, a worker's scratch folders). The redaction of
# server paths in messages names them without opening anything, and DEBUG's media URLs serve the local folder.
ALLOWED = {"dumpsite.settings", "dumpsite.urls", "core.storage", "core.host_cache", "core.redact"}


def file_fields(found: dict[str, Path]) -> set[str]:
    """The names of the models' file fields (``checkpoint``, ``image``, ...), read from the models' source."""
    names: set[str] = set()
    for name, path in found.items():
        if name.rsplit(".", 1)[-1] != "models":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                func = node.value.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in FIELD_TYPES:
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def local_paths_used(root: Path, packages: tuple[str, ...]) -> list[str]:
    """Every place outside ALLOWED that names one of the FOLDERS, or asks the storage or a stored file for its
    local path (``default_storage.path(...)``, ``model.checkpoint.path``)."""
    found = modules(root, packages)
    fields = file_fields(found)
    bad = []
    for name, path in sorted(found.items()):
        if name in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            what: str | None = None
            if isinstance(node, ast.Attribute) and node.attr in FOLDERS:
                what = node.attr
            elif isinstance(node, ast.Constant) and node.value in FOLDERS:  # getattr(settings, "MEDIA_ROOT")
                what = str(node.value)
            elif isinstance(node, ast.Attribute) and node.attr == "path":
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id == "default_storage":
                    what = "default_storage.path"
                elif isinstance(owner, ast.Attribute) and owner.attr in fields:
                    what = f"{owner.attr}.path"
            if what is not None:
                bad.append(f"{name}:{getattr(node, 'lineno', 0)} uses {what}")
    return bad


def test_only_the_local_backend_and_the_hosts_disk_open_the_folders():
    assert local_paths_used(ROOT, PACKAGES) == []


def test_planted_local_paths_are_seen(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "models.py").write_text(
        "from django.db import models\n\nclass Thing(models.Model):\n    picture = models.ImageField()\n"
    )
    (tmp_path / "app" / "views.py").write_text(
        "from django.conf import settings\n"
        "from django.core.files.storage import default_storage\n"
        "a = settings.MEDIA_ROOT\n"
        "b = getattr(settings, 'TRAINING_WORK_ROOT')\n"
        "c = default_storage.path('x')\n"
        "def f(thing):\n"
        "    return open(thing.picture.path), thing.other.path\n"
    )
    assert local_paths_used(tmp_path, ("app",)) == [
        "app.views:3 uses MEDIA_ROOT",
        "app.views:4 uses TRAINING_WORK_ROOT",
        "app.views:5 uses default_storage.path",
        "app.views:7 uses picture.path",
    ]
