"""A detection run's detections as files: GeoJSON (RFC 7946, WGS 84), CSV (one row per site, WKT and centre) and
GeoPackage (written by GDAL/OGR's ``ogr2ogr`` from the GeoJSON, with no network and no side files read)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from core.errors import ApplicationError
from engine.raster import CONFIG

from .models import Detection

FORMATS = {"geojson": "application/geo+json", "csv": "text/csv", "gpkg": "application/geopackage+sqlite3"}
CSV_COLUMNS = [
    "id",
    "class",
    "score",
    "area_m2",
    "lon",
    "lat",
    "orthophoto",
    "pixel_box",
    "merged",
    "ignored",
    "state",
    "wkt",
]


def properties(d: Detection) -> dict:
    return {
        "id": d.pk,
        "run": d.run_id,
        "class": d.class_name,
        "score": round(d.score, 4),
        "area_m2": d.area_m2,
        "orthophoto": d.orthophoto_id,
        "orthophoto_name": d.orthophoto.name,
        "pixel_box": d.pixel_box,
        "coordinates": d.coordinates,
        "merged": d.merged,
        "ignored": d.ignored,
        "state": d.state,
    }


def feature(d: Detection) -> dict:
    geometry = json.loads(d.geometry.geojson) if d.geometry is not None else None
    return {"type": "Feature", "id": d.pk, "geometry": geometry, "properties": properties(d)}


def feature_collection(rows: Iterable[Detection], **extra) -> dict:
    return {"type": "FeatureCollection", **extra, "features": [feature(d) for d in rows]}


def as_csv(rows: Iterable[Detection]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for d in rows:
        centre = d.geometry.centroid if d.geometry is not None else None
        writer.writerow(
            [
                d.pk,
                d.class_name,
                f"{d.score:.4f}",
                "" if d.area_m2 is None else f"{d.area_m2:.2f}",
                "" if centre is None else f"{centre.x:.7f}",
                "" if centre is None else f"{centre.y:.7f}",
                d.orthophoto.name,
                " ".join(f"{v:.1f}" for v in d.pixel_box),
                d.merged,
                d.ignored,
                d.state,
                "" if d.geometry is None else d.geometry.wkt,
            ]
        )
    return out.getvalue().encode("utf-8")


def as_geopackage(rows: Iterable[Detection]) -> bytes:
    """The detections as a GeoPackage layer ``detections`` (EPSG:4326), written by ``ogr2ogr``."""
    with tempfile.TemporaryDirectory(prefix="dumpsite-gpkg-") as tmp:
        source, target = Path(tmp) / "detections.geojson", Path(tmp) / "detections.gpkg"
        doc = feature_collection(rows)
        for f in doc["features"]:
            f["properties"]["pixel_box"] = " ".join(f"{v:.1f}" for v in f["properties"]["pixel_box"])
        source.write_text(json.dumps(doc), encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **CONFIG}
        command = ["ogr2ogr", "-f", "GPKG", "-nln", "detections", "-a_srs", "EPSG:4326", str(target), str(source)]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not target.is_file():
            raise ApplicationError("The GeoPackage could not be written.", {"format": "gpkg"})
        return target.read_bytes()


def export(rows: Iterable[Detection], fmt: str) -> bytes:
    if fmt == "geojson":
        return json.dumps(feature_collection(rows)).encode("utf-8")
    if fmt == "csv":
        return as_csv(rows)
    if fmt == "gpkg":
        return as_geopackage(rows)
    raise ApplicationError(f"Unknown format {fmt!r}.", {"format": ", ".join(FORMATS)})
