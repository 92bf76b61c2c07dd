"""Uploaded files as paths on disk, for code that reads files by path (checkpoint inspection in a child process)."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def uploaded_file_path(upload, suffix: str = ".pth"):
    """A path of the uploaded file on disk: Django's own temporary file for large uploads (streamed there, never
    held in memory), else a copy that is removed afterwards."""
    if hasattr(upload, "temporary_file_path"):
        yield Path(upload.temporary_file_path())
        return
    with tempfile.NamedTemporaryFile(suffix=suffix) as fh:
        for chunk in upload.chunks():
            fh.write(chunk)
        fh.flush()
        yield Path(fh.name)
