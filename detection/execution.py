"""The life of a claimed detection run inside a django-q2 worker: the frame its orthophotos share, the child (the
training child's process, supervision, cancel and time limit; ``engine.detect`` inside), and the sites it found
stored in PostGIS in one transaction with the run's success: a cancelled or failed run leaves no row.

The frame: the pixel grid of the run's first georeferenced orthophoto. Each other georeferenced orthophoto gets
the affine map from its pixels to that grid (exact in the same CRS; fitted on nine points through the CRS
transformation otherwise, a sub-pixel approximation over an orthophoto's extent). A merged box in the frame becomes
a polygon through the first orthophoto's geotransform (a rotated grid gives a rotated polygon), then WGS 84.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from django.contrib.gis.gdal import CoordTransform, SpatialReference
from django.contrib.gis.geos import Point, Polygon
from django.db import transaction

from core.errors import ApplicationError
from core.host_cache import local_files
from core.storage import in_bucket, local_file
from datasets.models import Orthophoto
from datasets.rasters import bucket_object
from engine.detect import DetectionJob
from engine.geometry import NO_GEOTRANSFORM, map_to_pixel, pixel_to_map
from engine.pipelines import gsd_factor
from engine.supervisor import tail_text
from models_registry.engines import onnx_refusal
from training.execution.common import crashed, end_unless_trained, fail, supervise, sync_of
from training.execution.scratch import cleanup_work_dir, prepare_work_dir
from training.models import TrainingRun
from training.services import (
    training_run_progress,
    training_run_record,
    training_run_succeed,
)

from .models import Detection, IgnoreZone
from .sites import site_figures
from .warm import runs_warm, supervise_warm

IDENTITY = NO_GEOTRANSFORM  # GDAL's default geotransform: the identity map (a frame of pixels)
WGS84 = SpatialReference(4326)

RESAMPLE_TOLERANCE = 0.1  # an orthophoto within 10 % of the model's ground resolution is read as it is


def fit_affine(pairs: list[tuple[tuple[float, float], tuple[float, float]]]) -> list[float]:
    """The affine map (GDAL's layout) that best takes each source point to its target (least squares)."""
    source = np.array([[1.0, px, py] for (px, py), _ in pairs])
    xs = np.array([t[0] for _, t in pairs])
    ys = np.array([t[1] for _, t in pairs])
    cx = np.linalg.lstsq(source, xs, rcond=None)[0]
    cy = np.linalg.lstsq(source, ys, rcond=None)[0]
    return [float(v) for v in (*cx, *cy)]


@dataclass
class Frame:
    """The run's common frame: the reference orthophoto's grid, CRS and geotransform (None: no georeferencing)."""

    geotransform: list[float] | None
    srs: SpatialReference | None

    def to_frame(self, ortho: Orthophoto) -> list[float]:
        if self.geotransform is None or self.srs is None or not ortho.georeferenced:
            return IDENTITY
        gt, ref = list(ortho.geotransform or IDENTITY), self.geotransform
        step = [(fx * ortho.width, fy * ortho.height) for fx in (0, 0.5, 1) for fy in (0, 0.5, 1)]
        points = [pixel_to_map(gt, px, py) for px, py in step]
        srs = SpatialReference(ortho.srs_wkt)
        if not same_crs(srs, self.srs):
            transform = CoordTransform(srs, self.srs)
            points = [transformed_point(x, y, transform) for x, y in points]
        return fit_affine([(s, map_to_pixel(ref, x, y)) for s, (x, y) in zip(step, points, strict=True)])

    def polygon(self, box: list[float]) -> Polygon | None:
        """The frame box as a WGS 84 polygon (None in pixel frames)."""
        if self.geotransform is None or self.srs is None:
            return None
        x1, y1, x2, y2 = box
        corners = [pixel_to_map(self.geotransform, px, py) for px, py in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
        polygon = Polygon([*corners, corners[0]], srid=self.srs.srid or 0)
        polygon.transform(CoordTransform(self.srs, WGS84))
        return polygon


def same_crs(a: SpatialReference, b: SpatialReference) -> bool:
    return (a.srid is not None and a.srid == b.srid) or a.wkt == b.wkt


def transformed_point(x: float, y: float, transform: CoordTransform) -> tuple[float, float]:
    point = Point(x, y)
    point.transform(transform)
    return point.x, point.y


def frame_of(orthos: list[Orthophoto]) -> Frame:
    reference = next((o for o in orthos if o.georeferenced), None)
    if reference is None:
        return Frame(None, None)
    return Frame(list(reference.geotransform or IDENTITY), SpatialReference(reference.srs_wkt))


def area_m2(polygon: Polygon) -> float:
    """The polygon's area in the UTM zone of its centre (metres)."""
    lon, lat = polygon.centroid.coords
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    metric = polygon.transform(32600 + zone if lat >= 0 else 32700 + zone, clone=True)
    return float(metric.area)


def pixel_box_in(ortho: Orthophoto, to_frame: list[float], box: list[float]) -> list[float]:
    """The frame box's envelope in the orthophoto's own pixels, clipped to it."""
    x1, y1, x2, y2 = box
    points = [map_to_pixel(to_frame, fx, fy) for fx, fy in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    clip = lambda v, hi: round(min(max(v, 0.0), float(hi)), 2)  # noqa: E731 - a one-line helper
    return [
        clip(min(xs), ortho.width),
        clip(min(ys), ortho.height),
        clip(max(xs), ortho.width),
        clip(max(ys), ortho.height),
    ]


def raster_source(ortho: Orthophoto) -> dict:
    """Where the child reads an orthophoto: the local folder's file, or the bucket's object by window (``/vsis3/``;
    the job file names the object, the child's environment holds the credentials)."""
    if in_bucket():
        return {"object": asdict(bucket_object(ortho.file.name, secrets=False))}
    return {"path": str(local_file(ortho.file.name))}


def raster_scale(model_gsd: float | None, ortho_gsd: float | None, params: dict) -> float:
    """The model's pixels per pixel of the orthophoto: its ground resolution (from its footprint, on the ground)
    over the model's, where the run resamples (the default) and both are known; else 1. Within
    ``RESAMPLE_TOLERANCE`` of the model's it is read as it is: resampling by a few per cent blurs more than it
    helps."""
    if not params.get("resample", True) or not model_gsd or not ortho_gsd:
        return 1.0
    scale = gsd_factor(ortho_gsd, model_gsd)
    return 1.0 if abs(math.log(scale)) <= math.log(1 + RESAMPLE_TOLERANCE) else round(scale, 6)


def detection_job(run: TrainingRun, work: Path, orthos: list[Orthophoto], frame: Frame) -> DetectionJob:
    model = run.evaluated_model
    if model is None:
        raise ApplicationError(f"Run #{run.pk} names no model.")
    params = run.parameters
    classes = list(model.class_names)
    keep = [classes.index(c) for c in params.get("classes") or classes if c in classes]
    rasters = []
    for index, ortho in enumerate(orthos):
        georeferenced = ortho.georeferenced and frame.geotransform is not None
        rasters.append(
            {
                "id": ortho.pk,
                **raster_source(ortho),
                "width": ortho.width,
                "height": ortho.height,
                "frame": 0 if georeferenced else index + 1,
                "to_frame": frame.to_frame(ortho) if georeferenced else IDENTITY,
                "scale": raster_scale(model.gsd_m, ortho.gsd_m or ortho.pixel_size_m, params),
            }
        )
    files = [(model.config.name, model.config_sha256), (model.checkpoint.name, model.checkpoint_sha256)]
    onnx = params.get("engine") == "onnxruntime"
    if onnx and onnx_refusal(model):
        raise ApplicationError(f"This run detects with ONNX Runtime, but {onnx_refusal(model)}.")
    # The model's files where this worker reads them: in place, or this host's cached copies of a bucket's.
    local = local_files(files + ([(model.onnx.name, model.onnx_sha256)] if onnx else []))
    return DetectionJob(
        config_file=local.path(model.config.name),
        checkpoint=local.path(model.checkpoint.name),
        classes=classes,
        rasters=rasters,
        events_file=str(work / "events.jsonl"),
        result_file=str(work / "result.json"),
        tile_size=params["tile_size"],
        overlap=params["overlap"],
        score_threshold=params["score_threshold"],
        batch_size=params["batch_size"],
        merge=params["merge"],
        merge_threshold=params["merge_threshold"],
        keep_labels=None if len(keep) == len(classes) else keep,
        device=params.get("device"),
        onnx_file=local.path(model.onnx.name) if onnx else None,
    )


def execute(run: TrainingRun) -> str:
    """The whole life of a running detection run; returns its final status."""
    log_file = run.work_dir / "train.log"
    try:
        work = prepare_work_dir(run)
        by_id = {o.pk: o for o in Orthophoto.objects.filter(pk__in=run.parameters.get("orthophotos") or [])}
        orthos = [by_id[i] for i in run.parameters.get("orthophotos") or [] if i in by_id]
        if not orthos or len(orthos) != len(run.parameters["orthophotos"]):
            raise ApplicationError("An orthophoto of this run was deleted since it was queued.")
        frame = frame_of(orthos)
        job = detection_job(run, work, orthos, frame)
        job.write(work / "job.json")
        result = supervise_warm(run, job) if runs_warm(job) else supervise(run, work / "job.json")
        training_run_progress(run_id=run.pk, state=result.state)
        ended = end_unless_trained(run, result)
        if ended is not None:
            return ended
        sync_of(run).push()  # the log and events stored before the run is seen succeeded
        store_and_succeed(run, job=job, orthos=orthos, frame=frame, log_tail=result.log_tail)
        return TrainingRun.Status.SUCCEEDED
    except ApplicationError as exc:
        return fail(run, message=str(exc), log_tail=tail_text(log_file))
    except Exception:  # noqa: BLE001 - a run must never stay 'running' after its worker gave up
        return crashed(run)


def detection_rows(run: TrainingRun, job: DetectionJob, found: list[dict], orthos: list[Orthophoto], frame: Frame):
    by_id = {o.pk: o for o in orthos}
    to_frame = {r["id"]: r["to_frame"] for r in job.rasters}
    for item in found:
        ortho = by_id[item["raster"]]
        polygon = frame.polygon(item["frame_box"]) if item["frame"] == 0 else None
        yield Detection(
            run=run,
            orthophoto=ortho,
            label=item["label"],
            class_name=job.classes[item["label"]],
            score=item["score"],
            geometry=polygon,
            area_m2=round(area_m2(polygon), 3) if polygon is not None else None,
            pixel_box=pixel_box_in(ortho, to_frame[ortho.pk], item["frame_box"]),
            merged=item.get("merged", 1),
        )


def flag_ignored(run: TrainingRun) -> int:
    """Flag the run's detections that intersect an ignore zone of its dataset; how many were flagged."""
    flagged = 0
    for zone in IgnoreZone.objects.filter(dataset_id=run.dataset_id):
        flagged += Detection.objects.filter(run=run, ignored=False, geometry__intersects=zone.geometry).update(
            ignored=True, ignore_zone=zone
        )
    return flagged


def store_and_succeed(run: TrainingRun, *, job: DetectionJob, orthos: list, frame: Frame, log_tail: str) -> None:
    result = json.loads(Path(job.result_file).read_text(encoding="utf-8"))
    found = result.pop("detections")
    with transaction.atomic():
        Detection.objects.bulk_create(detection_rows(run, job, found, orthos, frame), batch_size=2000)
        ignored = flag_ignored(run)
        params = run.parameters
        sites = site_figures(
            run,
            share=params.get("site_match", 0.5),
            target_recall=params.get("target_recall", 0.9),
            threshold=params["score_threshold"],
        )
        classes: dict[str, int] = {}
        for item in found:
            classes[job.classes[item["label"]]] = classes.get(job.classes[item["label"]], 0) + 1
        summary = {
            **result,
            "orthophotos": len(orthos),
            "detections": len(found),
            "ignored": ignored,
            "by_class": classes,
            "coordinates": "map" if frame.geotransform is not None else "pixel",
            # the model's pixels per pixel of each orthophoto (1: read as it is; else resampled to the model's
            # ground resolution)
            "scales": {str(spec["id"]): spec.get("scale", 1.0) for spec in job.rasters},
            "frame_srid": frame.srs.srid if frame.srs is not None else None,
            **({"sites": sites} if sites is not None else {}),
        }
        training_run_record(run_id=run.pk, export_summary=summary)
        stop = f"{len(found)} detections ({ignored} in ignore zones) over {result['windows']} windows."
        if not training_run_succeed(run_id=run.pk, log_tail=log_tail, stop_reason=stop):
            raise ApplicationError("The run stopped being 'running' before its detections could be stored.")
    cleanup_work_dir(run)


def run_figures(run: TrainingRun) -> dict[str, str]:
    """What a detection run's end is told with: what it found, and how it did against the known sites."""
    summary = run.export_summary or {}
    if "detections" not in summary:
        return {}
    figures = {
        "detections": f"{summary['detections']} ({summary.get('ignored', 0)} in ignore zones)",
        "orthophotos": str(summary.get("orthophotos", "")),
    }
    sites = summary.get("sites")
    if sites and sites.get("recall") is not None:
        figures["site recall"] = f"{sites['recall']:.3f} of {sites['sites']} known sites"
    return figures
