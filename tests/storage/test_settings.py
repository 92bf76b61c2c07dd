"""Object storage chosen by the environment; half of it refused at start with one line that names what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from dumpsite.object_storage import bucket_from_env, storage_backend

ROOT = Path(__file__).resolve().parents[2]
FULL = {
    "DUMPSITE_STORAGE_URL": "s3://media/site-a",
    "DUMPSITE_S3_ENDPOINT_URL": "http://127.0.0.1:1/",
    "AWS_ACCESS_KEY_ID": "key",
    "AWS_SECRET_ACCESS_KEY": "secret",
}
VARIABLES = (*FULL, "DUMPSITE_S3_REGION", "DUMPSITE_S3_PRESIGNED_DOWNLOADS", "DUMPSITE_S3_ADDRESSING_STYLE")


@pytest.fixture
def env(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_


def test_no_storage_url_is_the_local_folder(env):
    env()
    assert bucket_from_env() is None
    assert storage_backend(None, presign_seconds=60)["BACKEND"] == "django.core.files.storage.FileSystemStorage"


def test_a_whole_configuration_is_the_bucket_under_its_prefix(env):
    env(**FULL, DUMPSITE_S3_REGION="eu-central-1")
    bucket = bucket_from_env()
    assert (bucket.name, bucket.prefix, bucket.endpoint_url, bucket.region) == (
        "media",
        "site-a",
        "http://127.0.0.1:1",
        "eu-central-1",
    )
    options = storage_backend(bucket, presign_seconds=60)["OPTIONS"]
    assert options["location"] == "site-a" and options["file_overwrite"] is False and options["default_acl"] is None
    assert options["querystring_expire"] == 60 and options["use_ssl"] is False


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("DUMPSITE_S3_ENDPOINT_URL", "DUMPSITE_S3_ENDPOINT_URL"),
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_each_missing_part_is_named(env, drop, named):
    env(**{k: v for k, v in FULL.items() if k != drop})
    with pytest.raises(ImproperlyConfigured, match=f"half-configured.*missing {named}"):
        bucket_from_env()


def test_a_missing_bucket_and_a_wrong_scheme_and_stray_variables_are_refused(env):
    env(**{**FULL, "DUMPSITE_STORAGE_URL": "s3:///prefix-only"})
    with pytest.raises(ImproperlyConfigured, match=r"missing the bucket"):
        bucket_from_env()
    env(DUMPSITE_STORAGE_URL="https://media.example.org/x")
    with pytest.raises(ImproperlyConfigured, match="must be s3://BUCKET/PREFIX"):
        bucket_from_env()
    env(DUMPSITE_STORAGE_URL="", DUMPSITE_S3_ENDPOINT_URL="http://127.0.0.1:1")
    with pytest.raises(ImproperlyConfigured, match="DUMPSITE_S3_ENDPOINT_URL set but DUMPSITE_STORAGE_URL is not"):
        bucket_from_env()


def manage(*argv: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_process_started_half_configured_exits_with_one_line():
    result = manage("check", **{k: v for k, v in FULL.items() if k != "AWS_SECRET_ACCESS_KEY"})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "Settings refused: S3 storage half-configured (DUMPSITE_STORAGE_URL=s3://media/site-a): missing "
        "AWS_SECRET_ACCESS_KEY."
    ], result.stderr


def test_a_process_started_with_the_whole_configuration_keeps_files_in_the_bucket():
    code = (
        "from django.core.files.storage import default_storage as s; s._setup(); "
        "print(type(s._wrapped).__name__, getattr(s, 'bucket_name', '-'), s.location)"
    )
    assert manage("shell", "-v", "0", "-c", code).stdout.split()[:2] == ["FileSystemStorage", "-"]
    result = manage("shell", "-v", "0", "-c", code, **FULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["S3Storage", "media", "site-a"]
