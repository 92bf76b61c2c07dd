"""Evaluations of models: stored from the engine's analysis, read for the API, the admin and the gallery."""

from __future__ import annotations

from django.db.models import QuerySet

from core.file_cache import cached_picture, keep_picture
from core.storage import open_stored
from datasets.models import Dataset, DatasetImage

from .models import Evaluation, EvaluationImage, TrainedModel

BATCH = 1000
GALLERY_ORDERS = {"worst": ("-errors", "id"), "best": ("errors", "id"), "id": ("id",)}


def evaluation_store(
    *,
    model: TrainedModel,
    run,
    dataset: Dataset | None,
    kind: str,
    split: str,
    split_details: dict,
    result: dict,
    gt_doc: dict,
) -> Evaluation:
    """Store ``analysis.analyse``'s ``result`` for ``model`` with one row per image of ``gt_doc`` (the document
    it was evaluated on). Call inside the transaction that finishes the run."""
    evaluation = Evaluation.objects.create(
        model=model,
        run=run,
        dataset=dataset,
        kind=kind,
        split=split[:200],
        split_details=split_details,
        score_threshold=result["score_threshold"],
        iou_threshold=result["iou_threshold"],
        metrics=result["overall"],
        per_class=result["per_class"],
        pr_curves=result["pr_curves"],
        confusion=result["confusion"],
        counts=result["counts"],
        seconds=result.get("seconds"),
    )
    meta = {i["id"]: i for i in gt_doc["images"]}
    existing = set(DatasetImage.objects.filter(pk__in=list(meta)).values_list("pk", flat=True))
    rows = []
    for item in result["images"]:
        image = meta[item["image_id"]]
        rows.append(
            EvaluationImage(
                evaluation=evaluation,
                image_id=item["image_id"] if item["image_id"] in existing else None,
                file_name=image["file_name"],
                width=image["width"],
                height=image["height"],
                true_positives=item["tp"],
                false_positives=item["fp"],
                false_negatives=item["fn"],
                errors=item["fp"] + item["fn"],
                classes=item["classes"],
                detections=item["detections"],
                ground_truth=item["ground_truth"],
            )
        )
    EvaluationImage.objects.bulk_create(rows, batch_size=BATCH)
    return evaluation


def validation_of(model: TrainedModel) -> Evaluation | None:
    """The model's results on its own validation split (from its training run), the newest if several."""
    return model.evaluations.filter(kind=Evaluation.Kind.VALIDATION).order_by("-created_at", "-id").first()


def gallery_images(evaluation: Evaluation, *, class_index: int | None = None, order: str = "worst") -> QuerySet:
    """An evaluation's images for the gallery: optionally those showing a class, worst (most errors) first."""
    rows = evaluation.images.all()
    if class_index is not None:
        rows = rows.filter(classes__contains=[class_index])
    return rows.order_by(*GALLERY_ORDERS.get(order, GALLERY_ORDERS["worst"]))


GALLERY = "cache/gallery"  # the stored folder of the gallery pictures' cache


def gallery_render_name(row: EvaluationImage) -> str:
    """The stored name of a gallery image's rendered picture: a name made of ids only."""
    return f"{GALLERY}/{row.evaluation_id}/{row.pk}.jpg"


# Colours of the gallery: boxes (ground truth) solid, detections thinner; what went wrong in warm colours.
COLOURS = {
    "found": (46, 160, 67),
    "missed": (230, 126, 34),
    "wrong_class": (142, 68, 173),
    "tp": (41, 128, 185),
    "fp": (214, 39, 40),
}


def gallery_render(row: EvaluationImage, *, classes: list[str], max_side: int = 480) -> bytes:
    """The image drawn with its boxes and detections, as JPEG bytes (drawn once; later calls read the cached
    picture). FileNotFoundError when the image is no longer stored."""
    # Pillow loads only where a picture is drawn
    from PIL import Image, ImageDraw

    name = gallery_render_name(row)
    cached = cached_picture(name)
    if cached is not None:
        return cached
    with open_stored(row.file_name) as source, Image.open(source) as opened:
        opened.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced size
        img = opened.convert("RGB")
        scale = min(1.0, max_side / max(row.width, row.height))
        img = img.resize((max(1, round(row.width * scale)), max(1, round(row.height * scale))))
    draw = ImageDraw.Draw(img)
    for _cls, x, y, w, h, status in row.ground_truth:
        box = [x * scale, y * scale, (x + w) * scale, (y + h) * scale]
        draw.rectangle(box, outline=COLOURS.get(status, (0, 0, 0)), width=3)
    for cls, score, x, y, w, h, status in row.detections:
        box = [x * scale, y * scale, (x + w) * scale, (y + h) * scale]
        colour = COLOURS["tp" if status == "tp" else "fp" if status == "fp" else "wrong_class"]
        draw.rectangle(box, outline=colour, width=1)
        label = classes[cls] if cls < len(classes) else str(cls)
        draw.text((box[0] + 2, max(0, box[1] - 11)), f"{label[:16]} {score:.2f}", fill=colour)
    return keep_picture(name, lambda out: img.save(out, "JPEG", quality=82))
