"""The house rules of docs/architecture.md, checked on the tree's source (nothing is imported), each one shown to
fail on a violation planted in a small tree of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .scan import APPS, PACKAGES, ROOT, Import, all_imports, cycles, modules, project_module, top

# Who may import whom (docs/architecture.md draws these arrows). A package imports itself freely; ``dumpsite`` (the
# project: settings, URLs, WSGI) may import everything and is imported by nobody.
ALLOWED = {
    "engine": set(),
    "access": set(),
    "core": {"access"},
    "audit": {"access", "core"},
    "notifications": {"access", "core", "audit"},
    "workers": {"core"},
    "datasets": {"access", "core", "audit", "notifications", "engine"},
    "models_registry": {"access", "core", "audit", "notifications", "datasets", "engine"},
    "training": {"access", "core", "audit", "notifications", "datasets", "models_registry", "workers", "engine"},
    "detection": {
        "access",
        "core",
        "audit",
        "notifications",
        "datasets",
        "models_registry",
        "training",
        "workers",
        "engine",
    },
    "labelling": {
        "access",
        "core",
        "audit",
        "notifications",
        "datasets",
        "models_registry",
        "training",
        "detection",
        "engine",
    },
    "monitoring": {
        "access",
        "core",
        "audit",
        "notifications",
        "workers",
        "datasets",
        "models_registry",
        "training",
        "labelling",
    },
    "scheduler": {"core", "audit", "notifications", "datasets", "training", "workers", "labelling", "engine"},
    "dumpsite": set(PACKAGES) - {"dumpsite"},
}
DJANGO = ("django", "rest_framework", "django_filters", "drf_spectacular", "guardian", "django_q")
INTERFACES = ("admin", "api", "views")
MAX_LINES = 400


def arrows_broken(imports: list[Import], known: set[str]) -> list[str]:
    bad = []
    for imp in imports:
        target = project_module(imp.target, known)
        if target is None:
            continue
        src, dst = top(imp.source), top(target)
        if src != dst and dst not in ALLOWED.get(src, set()):
            bad.append(f"{imp.source}:{imp.line} imports {target} ({src} -> {dst} is not an arrow)")
    return bad


def engine_imports_django(imports: list[Import]) -> list[str]:
    return [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in imports
        if top(imp.source) == "engine" and top(imp.target) in DJANGO
    ]


def interfaces_crossed(imports: list[Import], known: set[str]) -> list[str]:
    """An app's admin, API and views are its own: no other package imports them (the project's URLs excepted)."""
    bad = []
    for imp in imports:
        target = project_module(imp.target, known)
        if target is None or top(target) not in APPS or top(imp.source) in (top(target), "dumpsite"):
            continue
        if set(target.split(".")[1:]) & set(INTERFACES):
            bad.append(f"{imp.source}:{imp.line} imports {target}, another app's interface")
    return bad


def unexplained_function_imports(imports: list[Import]) -> list[str]:
    return [
        f"{imp.source}:{imp.line} imports {imp.target} inside a function without a comment saying why"
        for imp in imports
        if imp.in_function and not imp.commented
    ]


def private_names_imported(imports: list[Import], known: set[str]) -> list[str]:
    """``from x import _name`` across modules: a private name is its module's own."""
    bad = []
    for imp in imports:
        name = imp.target.rsplit(".", 1)[-1]
        if name.startswith("_") and not name.startswith("__") and project_module(imp.target, known) != imp.target:
            bad.append(f"{imp.source}:{imp.line} imports the private name {imp.target}")
    return bad


def long_modules(root: Path, packages: tuple[str, ...]) -> list[str]:
    found = []
    for name, path in modules(root, packages).items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            found.append(f"{name}: {lines} lines")
    return found


# --- the real tree -------------------------------------------------------------------------------------------------

IMPORTS = all_imports()
KNOWN = set(modules())


def test_the_scanner_reads_relative_and_function_level_imports():
    seen = {(i.source, project_module(i.target, KNOWN)) for i in IMPORTS}
    assert ("training.services.runs", "training.services.queueing") in seen  # ``from .queueing import ...``
    assert ("training.execution.train", "training.services") in seen  # ``from ..services import ...``
    assert ("models_registry.admin.trained_models", "models_registry.services") in seen  # ``from .. import services``
    assert any(i.in_function for i in IMPORTS)
    assert len(KNOWN) > 100


def test_imports_follow_the_arrows():
    assert arrows_broken(IMPORTS, KNOWN) == []


def test_the_engine_imports_no_django():
    assert engine_imports_django(IMPORTS) == []


def test_no_app_imports_another_apps_admin_api_or_views():
    assert interfaces_crossed(IMPORTS, KNOWN) == []


def test_no_import_cycles_between_files():
    assert cycles(IMPORTS, KNOWN) == []


def test_imports_inside_functions_say_why():
    assert unexplained_function_imports(IMPORTS) == []


def test_no_private_name_is_imported_across_modules():
    assert private_names_imported(IMPORTS, KNOWN) == []


def test_no_module_is_over_400_lines():
    assert long_modules(ROOT, PACKAGES) == []


# --- each rule fails on a planted violation ------------------------------------------------------------------------


def plant(tmp_path: Path, files: dict[str, str]) -> tuple[list[Import], set[str]]:
    for package in PACKAGES:
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return all_imports(tmp_path), set(modules(tmp_path))


def test_a_planted_upward_import_breaks_an_arrow(tmp_path):
    imports, known = plant(
        tmp_path,
        {"datasets/services.py": "def f():\n    from training import models  # planted\n", "training/models.py": ""},
    )
    assert arrows_broken(imports, known) == [
        "datasets.services:2 imports training.models (datasets -> training is not an arrow)"
    ]


def test_a_planted_app_importing_the_project_breaks_an_arrow(tmp_path):
    imports, known = plant(tmp_path, {"core/x.py": "from dumpsite import settings\n", "dumpsite/settings.py": ""})
    assert arrows_broken(imports, known) == ["core.x:1 imports dumpsite.settings (core -> dumpsite is not an arrow)"]


def test_a_planted_relative_import_of_django_in_the_engine_is_seen(tmp_path):
    imports, _ = plant(
        tmp_path, {"engine/sub/__init__.py": "", "engine/sub/x.py": "from django.conf import settings\n"}
    )
    assert engine_imports_django(imports) == ["engine.sub.x:1 imports django.conf.settings"]
    imports, known = plant(tmp_path / "b", {"engine/x.py": "from ..core import errors\n", "core/errors.py": ""})
    assert arrows_broken(imports, known) == ["engine.x:1 imports core.errors (engine -> core is not an arrow)"]


def test_a_planted_import_of_another_apps_api_is_seen(tmp_path):
    imports, known = plant(
        tmp_path,
        {
            "datasets/api/__init__.py": "",
            "datasets/api/serializers.py": "",
            "training/x.py": "from datasets.api.serializers import S\n",
        },
    )
    assert interfaces_crossed(imports, known) == [
        "training.x:1 imports datasets.api.serializers, another app's interface"
    ]


def test_a_planted_cycle_is_seen_even_through_a_function(tmp_path):
    imports, known = plant(
        tmp_path, {"training/a.py": "from . import b\n", "training/b.py": "def f():\n    from .a import g  # late\n"}
    )
    assert cycles(imports, known) == [["training.a", "training.b"]]


def test_a_planted_function_import_without_a_reason_is_seen(tmp_path):
    imports, _ = plant(
        tmp_path,
        {
            "training/x.py": (
                "def f():\n    import json\n\n\ndef g():\n    # torch stays out of the web process\n    import torch\n"
            )
        },
    )
    assert unexplained_function_imports(imports) == [
        "training.x:2 imports json inside a function without a comment saying why"
    ]


def test_a_planted_import_of_a_private_name_is_seen(tmp_path):
    imports, known = plant(
        tmp_path, {"training/a.py": "def _check():\n    pass\n", "training/b.py": "from .a import _check\n"}
    )
    assert private_names_imported(imports, known) == ["training.b:1 imports the private name training.a._check"]


def test_a_planted_long_module_is_seen(tmp_path):
    plant(tmp_path, {"core/long.py": "x = 1\n" * (MAX_LINES + 1)})
    assert long_modules(tmp_path, PACKAGES) == [f"core.long: {MAX_LINES + 1} lines"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_under_a_rule(package):
    assert package in ALLOWED


def drawn_arrows(text: str) -> dict[str, set[str]]:
    """The table of docs/architecture.md whose header is ``| Room | May import |``."""
    table = text.split("| Room | May import |", 1)[1].split("\n\n", 1)[0]
    arrows = {}
    for row in table.strip().splitlines()[1:]:
        room, allowed = (cell.strip() for cell in row.strip("|").split("|"))
        room = room.strip("`")
        if allowed == "every room":
            arrows[room] = set(PACKAGES) - {room}
        else:
            arrows[room] = {name for name in re.findall(r"`(\w+)`", allowed) if name in PACKAGES}
    return arrows


def test_the_architecture_document_draws_the_arrows_this_test_enforces():
    drawn = drawn_arrows((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    assert drawn == ALLOWED
