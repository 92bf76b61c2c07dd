"""Image files as they arrive: read and checked (format, size, pixel count) before anything is stored."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, UnidentifiedImageError

from core.errors import ApplicationError

IMAGE_FORMATS = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif", "BMP": "bmp", "WEBP": "webp"}


@dataclass(frozen=True)
class DecodedImage:
    width: int
    height: int
    extension: str
    sha256: str
    format: str = ""  # Pillow's name: JPEG, PNG, TIFF, ...


def decode_image(content: bytes) -> DecodedImage:
    """Check that ``content`` is a whole image in a supported format; the format is read, never trusted."""
    if not content:
        raise ApplicationError("The image file is empty.")
    if len(content) > settings.DUMPSITE_MAX_IMAGE_BYTES:
        raise ApplicationError(
            f"The image is too large ({len(content)} bytes; the limit is {settings.DUMPSITE_MAX_IMAGE_BYTES})."
        )
    limit = settings.DUMPSITE_MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own two limits; any bomb warning is a refusal here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as img:
                fmt = img.format
                width, height = img.size  # from the header: nothing decoded yet
                if width * height > limit:
                    raise ApplicationError(
                        f"The image is {width}x{height} = {width * height:,} pixels; the limit is {limit:,} "
                        f"(DUMPSITE_MAX_IMAGE_PIXELS). Cut large orthophotos into tiles.",
                        {"pixels": width * height},
                    )
                img.load()  # decode all pixels: a truncated file fails here, not in training
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ApplicationError(f"The image is too large to decode safely: {exc}", {"pixels": "too many"}) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ApplicationError(f"The file is not a readable image: {exc}.") from exc
    if fmt not in IMAGE_FORMATS:
        raise ApplicationError(f"Unsupported image format {fmt}; use one of {', '.join(sorted(IMAGE_FORMATS))}.")
    return DecodedImage(
        width=width,
        height=height,
        extension=IMAGE_FORMATS[fmt],
        sha256=hashlib.sha256(content).hexdigest(),
        format=fmt,
    )


def clean_original_name(name: str | None) -> str:
    """Keep only the last path component of an uploaded file name, for display. It never names a stored file."""
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    return "".join(ch for ch in base if ch.isprintable())[:255]
