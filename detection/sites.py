"""A detection run judged against the known sites of its area, the figures a municipality decides on.

- **Known sites** come as the GeoJSON the orthophoto tiling reads (polygons or boxes, any CRS, a class property
  optional), bounded the same way. Only the sites on the ground the run's orthophotos cover count; a file none of
  whose sites lies on that ground is refused (a CRS mix-up, most often).
- **Matching rule**: a detection finds a site when their intersection covers at least ``site_match`` (default 0.5)
  of the smaller of the two areas (areas on the ellipsoid, PostGIS geography), whatever their classes: a register
  of sites seldom says what each holds. Detections in ignore zones are left out.
- **Figures at a score threshold**: site recall (sites found / sites), precision (detections that find a site /
  detections), false detections (those that find none) per km² of the ground covered (the union of the
  orthophotos' footprints). The same at every score threshold of the run's detections gives the precision-recall
  curve, and the highest threshold that still reaches ``target_recall``.
"""

from __future__ import annotations

from django.contrib.gis.gdal import CoordTransform, GDALException, SpatialReference
from django.contrib.gis.geos import GEOSException, GEOSGeometry, MultiPolygon, Polygon
from django.db import connection

from core.errors import ApplicationError
from datasets.models import Orthophoto
from datasets.sites import read_annotations

from .models import Detection, KnownSite

MATCH_RULE = "intersection over the smaller area"
CURVE_POINTS = 200
WGS84 = SpatialReference(4326)


def known_sites_read(content: bytes, orthophotos: list[Orthophoto]) -> list[tuple[str, str, MultiPolygon]]:
    """The known sites on the orthophotos' ground as (label, class, WGS 84 multipolygon); refused when the file is
    not usable or none of its sites lies on that ground."""
    covered = [o.footprint for o in orthophotos if o.footprint is not None]
    if not covered:
        raise ApplicationError(
            "Known sites need georeferenced orthophotos; these are in pixel coordinates.", {"known_sites": "no map"}
        )
    annotations = read_annotations(content, default_class="site")
    transform = CoordTransform(annotations.srs, WGS84)
    ground = MultiPolygon(covered, srid=4326).unary_union
    kept = []
    for site in annotations.sites:
        try:
            geometry = site.geometry.transform(transform, clone=True)
        except (GDALException, GEOSException):
            continue
        if geometry is None or not geometry.valid or not geometry.intersects(ground):
            continue
        kept.append((site.label[:200], site.class_name[:100], as_multipolygon(geometry)))
    if not kept:
        raise ApplicationError(
            f"None of the {len(annotations.sites)} known sites lies on the ground the orthophotos cover: check the "
            f"CRS of the file (EPSG:{annotations.srs.srid}) and that it is of this area.",
            {"known_sites": "no site on the orthophotos"},
        )
    return kept


def as_multipolygon(geometry: GEOSGeometry) -> MultiPolygon:
    if isinstance(geometry, MultiPolygon):
        return geometry
    if isinstance(geometry, Polygon):
        return MultiPolygon([geometry], srid=geometry.srid)
    raise ApplicationError("A known site is not a polygon.", {"known_sites": "polygons or boxes"})


MATCHES_SQL = """
SELECT d.id, d.score, s.id
FROM detection_detection d
JOIN detection_knownsite s ON s.run_id = d.run_id AND ST_Intersects(d.geometry, s.geometry)
WHERE d.run_id = %(run)s AND NOT d.ignored
  AND ST_Area(ST_Intersection(d.geometry, s.geometry)::geography)
      >= %(share)s * LEAST(ST_Area(d.geometry::geography), ST_Area(s.geometry::geography))
"""
COVERED_SQL = """
SELECT COALESCE(ST_Area(ST_Union(footprint)::geography), 0) FROM datasets_orthophoto WHERE id = ANY(%(ids)s)
"""


def figures_at(threshold: float, scores: dict[int, float], matches: list[tuple[int, int]], sites: int) -> dict:
    kept = {d for d, score in scores.items() if score >= threshold}
    true = {d for d, _ in matches if d in kept}
    found = {s for d, s in matches if d in kept}
    return {
        "threshold": round(threshold, 4),
        "detections": len(kept),
        "true": len(true),
        "false": len(kept) - len(true),
        "found": len(found),
        "recall": round(len(found) / sites, 4) if sites else None,
        "precision": round(len(true) / len(kept), 4) if kept else None,
    }


def site_figures(run, *, share: float, target_recall: float, threshold: float) -> dict | None:
    """The run judged against its known sites (None when it was given none); marks each site found or not."""
    sites = KnownSite.objects.filter(run=run).count()
    if not sites:
        return None
    with connection.cursor() as cursor:
        cursor.execute(MATCHES_SQL, {"run": run.pk, "share": share})
        rows = cursor.fetchall()
        cursor.execute(COVERED_SQL, {"ids": list(run.parameters.get("orthophotos") or [])})
        area_km2 = float(cursor.fetchone()[0]) / 1e6
    matches = [(d, s) for d, _, s in rows]
    scores = dict(Detection.objects.filter(run=run, ignored=False).values_list("id", "score"))
    at_run = figures_at(threshold, scores, matches, sites)
    levels = sorted(set(scores.values()), reverse=True)
    step = max(1, len(levels) // CURVE_POINTS)
    curve = [figures_at(t, scores, matches, sites) for t in levels[::step]]
    reaching = [point for point in curve if point["recall"] is not None and point["recall"] >= target_recall]
    found_sites = {s for d, s in matches if scores.get(d, 0) >= threshold}
    KnownSite.objects.filter(run=run).update(found=False)
    KnownSite.objects.filter(run=run, pk__in=found_sites).update(found=True)
    true_ids = {d for d, _ in matches}
    return {
        "match_rule": MATCH_RULE,
        "site_match": share,
        "sites": sites,
        **at_run,
        "area_km2": round(area_km2, 6),
        "false_per_km2": round(at_run["false"] / area_km2, 3) if area_km2 else None,
        "target_recall": target_recall,
        "threshold_for_target": reaching[0]["threshold"] if reaching else None,
        "curve": curve,
        "missed_sites": sorted(set(KnownSite.objects.filter(run=run).values_list("id", flat=True)) - found_sites),
        "false_detections": sorted(d for d, score in scores.items() if score >= threshold and d not in true_ids),
    }
