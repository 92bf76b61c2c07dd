"""Where the platform keeps its files, read from the environment by the settings: a local folder (the default, no
server needed) or a bucket of an S3-compatible object store.

``DUMPSITE_STORAGE_URL=s3://BUCKET/PREFIX`` chooses the bucket; ``DUMPSITE_S3_ENDPOINT_URL`` (the store's address,
``https://s3.eu-central-1.amazonaws.com`` on AWS), ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` are then
required, ``DUMPSITE_S3_REGION`` optional. Half of it is refused at start, with one line that names what is missing:
a site that silently wrote to its local disk instead would lose every file to the next container restart.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from core.buckets import ATTEMPTS, CONNECT_TIMEOUT, READ_TIMEOUT, Bucket

# The variables that only mean something with a bucket: set without DUMPSITE_STORAGE_URL, they are a mistake.
PART_BYTES = 8 * 2**20
S3_ONLY = ("DUMPSITE_S3_ENDPOINT_URL", "DUMPSITE_S3_REGION", "DUMPSITE_S3_PRESIGNED_DOWNLOADS")


def _env(name: str) -> str:
    return (os.environ.get(name) or "").strip()


def bucket_from_env() -> Bucket | None:
    """The configured bucket, None for the local folder; ImproperlyConfigured (one line) for half of it."""
    url = _env("DUMPSITE_STORAGE_URL")
    if not url:
        stray = [name for name in S3_ONLY if _env(name)]
        if stray:
            raise ImproperlyConfigured(
                f"{', '.join(stray)} set but DUMPSITE_STORAGE_URL is not: set it to s3://BUCKET/PREFIX to keep files "
                "in object storage, or unset them to keep files in the local folder."
            )
        return None
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ImproperlyConfigured(f"DUMPSITE_STORAGE_URL must be s3://BUCKET/PREFIX, not {url!r}.")
    bucket = Bucket(
        name=parts.netloc,
        prefix=parts.path.strip("/"),
        endpoint_url=_env("DUMPSITE_S3_ENDPOINT_URL").rstrip("/"),
        region=_env("DUMPSITE_S3_REGION") or "us-east-1",
        access_key=_env("AWS_ACCESS_KEY_ID"),
        secret_key=_env("AWS_SECRET_ACCESS_KEY"),
        addressing_style=_env("DUMPSITE_S3_ADDRESSING_STYLE") or "path",
    )
    missing = [
        what
        for what, present in (
            ("the bucket (s3://BUCKET/PREFIX)", bucket.name),
            ("DUMPSITE_S3_ENDPOINT_URL", bucket.endpoint_url),
            ("AWS_ACCESS_KEY_ID", bucket.access_key),
            ("AWS_SECRET_ACCESS_KEY", bucket.secret_key),
        )
        if not present
    ]
    if missing:
        raise ImproperlyConfigured(
            f"S3 storage half-configured (DUMPSITE_STORAGE_URL={url}): missing {', '.join(missing)}."
        )
    if not bucket.endpoint_url.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"DUMPSITE_S3_ENDPOINT_URL must start with http:// or https://, not {bucket.endpoint_url!r}."
        )
    if bucket.addressing_style not in ("path", "virtual"):
        raise ImproperlyConfigured("DUMPSITE_S3_ADDRESSING_STYLE must be 'path' or 'virtual'.")
    return bucket


def storage_backend(bucket: Bucket | None, *, presign_seconds: int) -> dict:
    """The ``STORAGES["default"]`` entry for ``bucket`` (django-storages' S3 backend), or the local folder's."""
    if bucket is None:
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    # boto3 is imported only by a site that keeps its files in a bucket
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    # Parts of 8 MiB, at most 4 in flight and 4 read ahead (s3transfer's settings; boto3 does not take them as
    # arguments): an upload or a download holds about 64 MiB whatever the file's size.
    transfer = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4)
    transfer.max_in_memory_upload_chunks = transfer.max_in_memory_download_chunks = 4
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket.name,
            "location": bucket.prefix,
            "endpoint_url": bucket.endpoint_url,
            "region_name": bucket.region,
            "access_key": bucket.access_key,
            "secret_key": bucket.secret_key,
            "client_config": Config(
                s3={"addressing_style": bucket.addressing_style},
                signature_version="s3v4",
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retries={"max_attempts": ATTEMPTS, "mode": "standard"},
            ),
            "file_overwrite": False,  # a second file of one name gets a name of its own, as on a disk
            "default_acl": None,  # the bucket's policy decides; nothing is made public
            "querystring_auth": True,  # URLs are presigned, short-lived
            "querystring_expire": presign_seconds,
            "use_ssl": bucket.secure,
            "transfer_config": transfer,
        },
    }
