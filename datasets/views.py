"""Image thumbnails with their boxes drawn, for the admin (permission-checked: the dataset must be visible)."""

from __future__ import annotations

import io

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET
from PIL import Image, ImageDraw

from dumpsite.access import visible

from .models import Dataset, DatasetImage

THUMB = 160
COLOURS = ["#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#bf5af2", "#ff9f0a"]


@require_GET
@login_required
def image_thumbnail(request, pk: int):
    datasets = visible(request.user, "datasets.view_dataset", Dataset.objects.all())
    image = DatasetImage.objects.filter(pk=pk, dataset__in=datasets).first()
    if image is None:
        raise Http404
    try:
        with image.image.open("rb") as fh, Image.open(fh) as img:
            img.draft("RGB", (THUMB * 2, THUMB * 2))  # fast JPEG downscale while decoding
            img = img.convert("RGB")
            scale = min(THUMB / image.width, THUMB / image.height)
            img = img.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    except (OSError, ValueError):
        raise Http404("The image file is missing or unreadable.") from None
    draw = ImageDraw.Draw(img)
    for ann in image.annotations.filter(enabled=True).select_related("dataset_class"):
        colour = COLOURS[ann.dataset_class.position % len(COLOURS)]
        draw.rectangle([ann.x * scale, ann.y * scale, (ann.x + ann.width) * scale, (ann.y + ann.height) * scale],
                       outline=colour, width=2)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    response = HttpResponse(out.getvalue(), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=300"
    return response
