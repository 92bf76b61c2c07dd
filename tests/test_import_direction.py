"""Imports between the apps go one way (ARCHITECTURE.md): training -> models_registry -> datasets; the engine is a
Django-free library that both training and the registry may use; no app's admin imports another app's admin."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports_of(package: str):
    """(file, imported module) for every import statement in the package's non-migration modules."""
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.relative_to(ROOT), alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path.relative_to(ROOT), node.module


def test_the_scanner_sees_imports():
    modules = {module for _, module in imports_of("training")}
    assert {"models_registry.models", "datasets.models", "django.conf"} <= modules


def test_the_engine_imports_no_django_and_no_app():
    bad = [
        (f, m)
        for f, m in imports_of("training/engine")
        if m.split(".")[0] in ("django", "rest_framework", "access", "datasets", "models_registry", "audit", "dumpsite")
        or (m.startswith("training.") and not m.startswith("training.engine"))
    ]
    assert not bad, bad


def test_access_control_imports_no_app():
    bad = [
        (f, m)
        for f, m in imports_of("access")
        if m.split(".")[0] in ("datasets", "training", "models_registry", "audit", "dumpsite")
    ]
    assert not bad, bad


def test_datasets_import_neither_training_nor_the_registry():
    bad = [(f, m) for f, m in imports_of("datasets") if m.split(".")[0] in ("training", "models_registry")]
    assert not bad, bad


def test_the_registry_imports_only_the_engine_of_training():
    bad = [
        (f, m)
        for f, m in imports_of("models_registry")
        if m.split(".")[0] == "training" and not m.startswith("training.engine")
    ]
    assert not bad, bad


@pytest.mark.parametrize("app", ["access", "datasets", "training", "models_registry", "audit"])
def test_no_admin_imports_another_apps_admin_or_views(app):
    bad = [
        (f, m)
        for f, m in imports_of(app)
        if m.split(".")[0] != app
        and m.split(".")[0] in ("access", "datasets", "training", "models_registry", "audit")
        and m.split(".")[-1] in ("admin", "admin_views", "views")
    ]
    assert not bad, bad
