"""What a worker does with a labelling task: find the candidate tiles and the model's boxes on them, choose by the
task's rule, write the pictures and the three archives, and record what was exported.

- From a detection run: the orthophotos in a grid of tiles (no overlap: nobody labels one heap twice), each with
  the run's detections on it as the model made them (before any review), a box cut by the tile's edge kept when
  at least 30 % of it is inside. Only tiles with a detection are candidates.
- From a dataset: its enabled images, run through the model (and the second model of the disagreement rule) in a
  child process (``models_registry.predictions.predict_files``).

The task's folder is built under a temporary name and moved into place whole; a failure leaves nothing behind
and a one-line reason on the task.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.gis.gdal import CoordTransform, GDALException, SpatialReference
from django.contrib.gis.geos import Point
from django.utils import timezone

from core.errors import ApplicationError
from core.host_cache import host_scratch, local_files
from core.redact import redact_paths
from core.storage import delete_stored, storage_errors, store_file
from datasets.import_batch import ImageImport
from datasets.models import DatasetImage, Orthophoto
from datasets.rasters import stored_raster
from detection.models import Detection
from engine.geometry import pixel_to_map
from engine.raster import RasterRefused
from models_registry.models import TrainedModel
from models_registry.predictions import predict_files

from .formats import archive_name, write_archives
from .models import LabellingTask
from .selection import Candidate, Rule, choose

logger = logging.getLogger(__name__)
Status = LabellingTask.Status
MIN_SHARE = 0.3
PREDICT_BATCH = 500  # pictures per prediction child
WGS84 = SpatialReference(4326)


def task_folder(task_id: int) -> str:
    """The stored folder of a finished task's archives."""
    return f"labelling/task-{task_id}"


def task_archive(task_id: int, fmt: str) -> str:
    """The stored name of a finished task's archive in the format ``fmt``."""
    return f"{task_folder(task_id)}/{archive_name(fmt)}"


def part_folder(task_id: int) -> Path:
    """Where a worker builds a task (its own scratch); the archives are stored once it is whole."""
    return host_scratch("labelling", f"task-{task_id}.part")


def safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")[:80] or "image"


def _progress(task: LabellingTask, stage: str, done: int, total: int) -> None:
    if stage != task.stage:
        task.stage_started_at = timezone.now()
    task.stage, task.progress_done, task.progress_total = stage, done, total
    task.heartbeat_at = timezone.now()
    task.save(update_fields=["stage", "stage_started_at", "progress_done", "progress_total", "heartbeat_at"])


def clipped(box: list[float], window: tuple[int, int, int, int]) -> list[float] | None:
    """``box`` (x1, y1, x2, y2, orthophoto pixels) in the window's pixels as (x, y, w, h), when at least
    MIN_SHARE of it is inside."""
    x, y, w, h = window
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    cx1, cy1, cx2, cy2 = max(x1, x), max(y1, y), min(x2, x + w), min(y2, y + h)
    if area <= 0 or cx2 - cx1 < 1 or cy2 - cy1 < 1 or (cx2 - cx1) * (cy2 - cy1) < MIN_SHARE * area:
        return None
    return [round(cx1 - x, 2), round(cy1 - y, 2), round(cx2 - cx1, 2), round(cy2 - cy1, 2)]


def _centre(ortho: Orthophoto, window: tuple[int, int, int, int]) -> tuple[float, float] | None:
    if not ortho.georeferenced or not ortho.geotransform:
        return None
    x, y, w, h = window
    mx, my = pixel_to_map(ortho.geotransform, x + w / 2, y + h / 2)
    try:
        point = Point(mx, my, srid=0)
        point.transform(CoordTransform(SpatialReference(ortho.srs_wkt), WGS84))
    except GDALException:
        return None
    return (point.x, point.y)


def grid_window(ortho: Orthophoto, size: int, tx: int, ty: int) -> tuple[int, int, int, int]:
    """Tile (tx, ty) of the orthophoto's grid, cut short at its right and bottom edges."""
    return (tx * size, ty * size, min(size, ortho.width - tx * size), min(size, ortho.height - ty * size))


def run_candidates(task: LabellingTask) -> list[Candidate]:
    """The run's tiles with a detection, each with the model's boxes (``model_box`` where a reviewer moved one)."""
    run = task.detection_run
    assert run is not None
    size = int(task.parameters["tile_size"])
    rows = Detection.objects.filter(run=run, origin=Detection.Origin.MODEL, ignored=False).order_by("id")
    by_ortho: dict[int, list[Detection]] = {}
    for d in rows:
        by_ortho.setdefault(d.orthophoto_id, []).append(d)
    candidates = []
    orthos = list(Orthophoto.objects.filter(pk__in=list(by_ortho)).order_by("id"))
    stems = [safe_stem(o.name) for o in orthos]
    for ortho, stem in zip(orthos, stems, strict=True):
        if stems.count(stem) > 1:  # two orthophotos of one name: their tiles must not share names
            stem = f"{stem}_{ortho.pk}"
        tiles: dict[tuple[int, int], list] = {}
        for d in by_ortho[ortho.pk]:
            box = [float(v) for v in (d.model_box or d.pixel_box)]
            cls = d.model_class or d.class_name
            for tx in range(int(box[0] // size), int(box[2] // size) + 1):
                for ty in range(int(box[1] // size), int(box[3] // size) + 1):
                    window = grid_window(ortho, size, tx, ty)
                    if window[2] <= 0 or window[3] <= 0:
                        continue
                    part = clipped(box, window)
                    if part is not None:
                        tiles.setdefault((tx, ty), []).append([cls, round(d.score, 4), *part])
        for (tx, ty), boxes in sorted(tiles.items()):
            window = grid_window(ortho, size, tx, ty)
            name = f"{stem}_x{window[0]}_y{window[1]}.jpg"
            candidates.append(
                Candidate(
                    key=name,
                    boxes=boxes,
                    centre=_centre(ortho, window),
                    data={"orthophoto": ortho, "window": window, "width": window[2], "height": window[3]},
                )
            )
    return candidates


def _cut(candidate: Candidate, target: Path) -> None:
    # Pillow loads only where a picture is written
    from PIL import Image

    ortho, (x, y, w, h) = candidate.data["orthophoto"], candidate.data["window"]
    try:
        with stored_raster(ortho.file.name) as raster:
            pixels = raster.read_bytes(x, y, w, h, raster.colour_bands, (w, h))
    except (RasterRefused, OSError) as exc:
        raise ApplicationError(f"The orthophoto {ortho.name!r} cannot be read: {exc}.") from None
    Image.frombytes("RGB", (w, h), pixels).save(target, "JPEG", quality=95)


def _predicted(task: LabellingTask, model: TrainedModel, paths: list[Path], threshold: float, stage: str) -> list:
    """``model``'s boxes on each picture, [[class, score, x, y, w, h]], in children of PREDICT_BATCH pictures each
    (progress after each; no child runs long enough to meet the prediction time limit)."""
    boxes: list[list[list]] = []
    _progress(task, stage, 0, len(paths))
    for start in range(0, len(paths), PREDICT_BATCH):
        result = predict_files(
            model=model, paths=paths[start : start + PREDICT_BATCH], score_threshold=threshold, user=None
        )
        boxes.extend(
            [[b["class_name"], b["score"], *_xywh(b["bbox"])] for b in image["boxes"]] for image in result["images"]
        )
        _progress(task, stage, len(boxes), len(paths))
    return boxes


def _xywh(bbox: list[float]) -> list[float]:
    x1, y1, x2, y2 = bbox
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def dataset_candidates(task: LabellingTask) -> list[Candidate]:
    """The dataset's enabled images with the model's boxes on them."""
    images = list(DatasetImage.objects.filter(dataset=task.dataset, enabled=True).order_by("id"))
    low = min(float(task.parameters["score_threshold"]), float(task.parameters["band"][0]))
    # The pictures where this worker reads them: in place, or this host's cached copies of a bucket's.
    local = local_files([(i.image.name, i.sha256) for i in images])
    paths = [Path(local.path(i.image.name)) for i in images]
    boxes = _predicted(task, task.model, paths, low, "running the model on the images")
    candidates = []
    for image, found in zip(images, boxes, strict=True):
        extension = Path(image.image.name).suffix.lower() or ".jpg"
        name = f"{image.pk}_{safe_stem(image.original_name or image.image.name)}{extension}"
        centre = (image.location.x, image.location.y) if image.location is not None else None
        data = {"path": Path(local.path(image.image.name)), "width": image.width, "height": image.height}
        candidates.append(Candidate(key=name, boxes=found, centre=centre, data=data))
    return candidates


def _pictures(task: LabellingTask, candidates: list[Candidate], folder: Path) -> list[Path]:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for index, c in enumerate(candidates, start=1):
        target = folder / "images" / c.key
        if "path" in c.data:
            shutil.copyfile(c.data["path"], target)
        else:
            _cut(c, target)
        paths.append(target)
        if index % 20 == 0 or index == len(candidates):
            _progress(task, "writing the pictures", index, len(candidates))
    return paths


def build(task: LabellingTask, folder: Path) -> dict:
    params = task.parameters
    candidates = run_candidates(task) if task.detection_run_id else dataset_candidates(task)
    threshold = float(params["score_threshold"])
    if params["rule"] != "uncertain":  # only doubt looks below the threshold; the other rules judge what is exported
        for c in candidates:
            c.boxes = [b for b in c.boxes if b[1] >= threshold]
    stats = {"candidates": len(candidates)}
    if params["rule"] == "disagreement" and task.second_model is not None:
        # the second model sees the same pictures: a detection run's tiles are cut first
        paths = (
            _pictures(task, candidates, folder / "candidates")
            if task.detection_run_id
            else [c.data["path"] for c in candidates]
        )
        others = _predicted(task, task.second_model, paths, threshold, "running the second model")
        for c, boxes in zip(candidates, others, strict=True):
            c.others = boxes
    rule = Rule(
        name=params["rule"],
        count=params["count"],
        band=tuple(params["band"]),
        classes=tuple(params.get("classes") or ()),
        min_distance_m=params["min_distance_m"],
    )
    chosen = choose(rule, candidates)
    if not chosen:
        raise ApplicationError(
            f"No tile matches the rule {params['rule']!r} among {len(candidates)} candidates: nothing was exported."
        )
    scratch = folder / "candidates"
    if scratch.exists():  # the disagreement rule on a run's tiles cut every candidate already
        (folder / "images").mkdir()
        for c in chosen:
            (scratch / "images" / c.key).replace(folder / "images" / c.key)
        shutil.rmtree(scratch)
    else:
        _pictures(task, chosen, folder)
    images = [
        {
            "name": c.key,
            "width": c.data["width"],
            "height": c.data["height"],
            "boxes": [b for b in c.boxes if b[1] >= threshold],
        }
        for c in chosen
    ]
    _progress(task, "writing the archives", len(chosen), len(chosen))
    write_archives(
        folder,
        images,
        list(task.model.class_names),
        task_name=task.name,
        model_version=task.model_version,
        image_url=params["image_url"],
    )
    stats.update(chosen=len(images), boxes=sum(len(i["boxes"]) for i in images))
    if task.to_label_dataset_id:
        stats.update(add_to_label(task, chosen, folder))
    return {"images": images, "stats": stats}


def add_to_label(task: LabellingTask, chosen: list[Candidate], folder: Path) -> dict:
    """The chosen pictures into the task's ``to_label_dataset``: disabled (training leaves them out until someone
    labels and enables them), with no box, marked ``to_label`` with the task and the model in their source."""
    _progress(task, "adding the pictures to label", 0, len(chosen))
    dataset = task.to_label_dataset
    assert dataset is not None
    known = set(DatasetImage.objects.filter(dataset=dataset).values_list("sha256", flat=True))
    added = skipped = 0
    source = {"labelling_task": task.pk, "model_version": task.model_version, "to_label": True}
    with ImageImport() as batch:
        for c in chosen:
            content = (folder / "images" / c.key).read_bytes()
            if hashlib.sha256(content).hexdigest() in known:
                skipped += 1
                continue
            location = Point(*c.centre, srid=4326) if c.centre is not None else None
            batch.add(
                dataset=dataset, content=content, original_name=c.key, enabled=False, source=source, location=location
            )
            added += 1
    return {"to_label_added": added, "to_label_already_there": skipped}


def _store_archives(folder: Path, final: str) -> None:
    """The built task's archives into the storage (they hold the pictures), replacing an earlier build's."""
    delete_stored(final)
    for archive in sorted(p for p in folder.iterdir() if p.is_file()):
        store_file(archive, f"{final}/{archive.name}", move=True)


def task_failure_message(exc: Exception, task_id: int) -> str:
    """The failed task's one line (a storage's address and a server's paths go to the log only)."""
    if isinstance(exc, ApplicationError):
        return exc.message
    logger.exception("labelling task %s failed", task_id)
    if isinstance(exc, storage_errors()) and not isinstance(exc, FileNotFoundError):
        return f"The storage did not take the task's archives ({type(exc).__name__}); make the task again."
    return f"{type(exc).__name__}: {exc}"


def build_labelling_task(task_id: int) -> None:
    """The worker's entry: claim the queued task, build it, record the outcome."""
    now = timezone.now()
    claimed = LabellingTask.objects.filter(pk=task_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        return
    related = ("model", "second_model", "detection_run", "dataset", "to_label_dataset")
    task = LabellingTask.objects.select_related(*related).get(pk=task_id)
    final, folder = task_folder(task.pk), part_folder(task.pk)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        built = build(task, folder)
        _store_archives(folder, final)
    except Exception as exc:  # noqa: BLE001 - every failure ends the task with one line
        message = task_failure_message(exc, task_id)
        with suppress(*storage_errors()):
            delete_stored(final)  # nothing half-stored is left
        LabellingTask.objects.filter(pk=task_id).update(
            status=Status.FAILED, error=redact_paths(message)[:2000], finished_at=timezone.now()
        )
        return
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    LabellingTask.objects.filter(pk=task_id).update(
        status=Status.SUCCEEDED,
        images=built["images"],
        stats=built["stats"],
        stage="",
        finished_at=timezone.now(),
    )


def stale_after() -> timedelta:
    """How long a worker may stay silent: its longest silent step is a prediction child, stopped after
    DUMPSITE_PREDICT_TIMEOUT."""
    return timedelta(seconds=settings.DUMPSITE_PREDICT_TIMEOUT + 60)


def labelling_tasks_fail_stale(now=None) -> int:
    """Fail running tasks whose worker stopped reporting (killed, machine gone), and remove what they had
    written. Called by every worker cluster's agent; returns how many were failed."""
    now = now or timezone.now()
    limit = now - stale_after()
    failed = 0
    for pk in LabellingTask.objects.filter(status=Status.RUNNING, heartbeat_at__lt=limit).values_list("pk", flat=True):
        failed += LabellingTask.objects.filter(pk=pk, status=Status.RUNNING, heartbeat_at__lt=limit).update(
            status=Status.FAILED,
            error=f"The worker stopped reporting for over {stale_after().seconds} s (it died or was killed); make "
            "the task again.",
            finished_at=now,
        )
        shutil.rmtree(part_folder(pk), ignore_errors=True)
    return failed
