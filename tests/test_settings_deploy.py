"""Production settings: `manage.py check --deploy` passes with the environment the README documents."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = {
    "DJANGO_HTTPS": "1",
    "DJANGO_SECURE_PROXY_SSL": "1",
    "DJANGO_ALLOWED_HOSTS": "train.example.org",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://train.example.org",
}


def check_deploy(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_HTTPS", "DJANGO_SECURE", "DJANGO_HSTS"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**clean, "DJANGO_SECRET_KEY": secrets.token_urlsafe(48), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_the_documented_production_environment():
    result = check_deploy(**PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_fails_without_it():
    result = check_deploy()
    assert result.returncode != 0
    for code in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert code in result.stderr + result.stdout


def test_no_secret_key_no_start_outside_debug():
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG")}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        timeout=120,
        env={**env, "DJANGO_SETTINGS_MODULE": "dumpsite.settings", "DJANGO_SECRET_KEY": ""},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "DJANGO_SECRET_KEY is not set" in result.stderr


def test_a_bad_rendezvous_port_range_is_refused_at_start():
    for value, reason in (
        ("29400-", "must be a port or a range of ports"),
        ("ports", "must be a port or a range of ports"),
        ("29499-29400", "the lower port first"),
        ("80-90", "within 1024-65535"),
    ):
        result = subprocess.run(
            [sys.executable, "-c", "import django; django.setup()"],
            cwd=ROOT,
            timeout=120,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "dumpsite.settings", "DUMPSITE_RENDEZVOUS_PORTS": value},
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0 and reason in result.stderr, (value, result.stderr[-500:])
        assert result.stderr.strip().splitlines()[-1].startswith("django.core.exceptions.ImproperlyConfigured: ")
