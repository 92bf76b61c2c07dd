"""Image thumbnails with their boxes drawn, for the admin (permission-checked: the dataset must be visible).

The image is decoded once: the first view stores a small copy in the storage (``cache/thumbnails/``, named by the
image's content hash), and every later view draws the current boxes on that copy. Images over the pixel limit are
never decoded here.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET
from PIL import Image, ImageDraw

from core.file_cache import cached_picture, keep_picture
from core.storage import open_stored

from .models import DatasetImage
from .selectors import datasets_visible_to

THUMB = 160
COLOURS = ["#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#bf5af2", "#ff9f0a"]


THUMBNAILS = "cache/thumbnails"  # the stored folder of the thumbnails' cache


def thumbnail_name(image: DatasetImage) -> str:
    return f"{THUMBNAILS}/{image.sha256[:2]}/{image.sha256}-{THUMB}.jpg"


def base_thumbnail(image: DatasetImage) -> Image.Image:
    """The image scaled to fit THUMB x THUMB, from the cache or decoded once and stored (atomically)."""
    if image.width * image.height > settings.DUMPSITE_MAX_IMAGE_PIXELS:
        raise Http404("The image is over the pixel limit.")
    name = thumbnail_name(image)
    cached = cached_picture(name)
    if cached is not None:
        try:
            with Image.open(io.BytesIO(cached)) as picture:
                return picture.convert("RGB")
        except OSError:
            pass
    with open_stored(image.image.name) as fh, Image.open(fh) as img:  # from a bucket: ranged reads, never whole
        img.draft("RGB", (THUMB * 2, THUMB * 2))  # JPEG: decode at a fraction of the size
        img.thumbnail((THUMB, THUMB))  # other formats: reduce while resampling, no full-size copy kept
        small = img.convert("RGB")
    keep_picture(name, lambda out: small.save(out, format="JPEG", quality=85))
    return small


@require_GET
@login_required
def image_thumbnail(request, pk: int):
    datasets = datasets_visible_to(request.user)
    image = DatasetImage.objects.filter(pk=pk, dataset__in=datasets).first()
    if image is None:
        raise Http404
    try:
        img = base_thumbnail(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        raise Http404("The image file is missing or unreadable.") from None
    scale = min(img.width / image.width, img.height / image.height)
    draw = ImageDraw.Draw(img)
    for ann in image.annotations.filter(enabled=True).select_related("dataset_class"):
        colour = COLOURS[ann.dataset_class.position % len(COLOURS)]
        draw.rectangle(
            [ann.x * scale, ann.y * scale, (ann.x + ann.width) * scale, (ann.y + ann.height) * scale],
            outline=colour,
            width=2,
        )
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    response = HttpResponse(out.getvalue(), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=300"
    return response
