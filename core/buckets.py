"""A bucket of an S3-compatible object store, as the settings describe it (``dumpsite/object_storage.py`` reads it
from the environment; ``core.storage`` uses it)."""

from __future__ import annotations

from dataclasses import dataclass

# How the platform talks to the store, in botocore's client and in core.bucket_puts alike: a store that does not
# answer fails a request within seconds (3 tries) rather than after botocore's minute-long connect timeout and 5 tries.
CONNECT_TIMEOUT = 5  # seconds
READ_TIMEOUT = 60  # seconds
ATTEMPTS = 3


@dataclass(frozen=True)
class Bucket:
    name: str
    prefix: str  # without a leading or trailing slash; "" for the bucket's root
    endpoint_url: str
    region: str
    access_key: str
    secret_key: str
    addressing_style: str  # "path" (most self-hosted stores) or "virtual"

    @property
    def secure(self) -> bool:
        return self.endpoint_url.startswith("https://")
