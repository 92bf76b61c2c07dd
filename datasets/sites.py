"""The dump sites outlined on orthophotos, as operators draw them (QGIS or similar): a GeoJSON FeatureCollection of
polygons or boxes, in any EPSG CRS, each with its class."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.gis.gdal import GDALException, SpatialReference
from django.contrib.gis.geos import GEOSException, GEOSGeometry

from core.errors import ApplicationError

_NUMBER_ARRAY = re.compile(rb"\[\s*[-+0-9.]")


@dataclass
class Site:
    """One annotated dump site: its class and outline (in the GeoJSON's CRS), and its label for reports."""

    label: str
    class_name: str
    geometry: GEOSGeometry
    source: dict = field(default_factory=dict)  # the feature's "source" property: where the site came from


@dataclass
class Annotations:
    sites: list[Site]
    srs: SpatialReference
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        """In order of first appearance."""
        return list(dict.fromkeys(site.class_name for site in self.sites))


@dataclass(frozen=True)
class SiteLimits:
    """What one annotations file may hold (settings ``DUMPSITE_GEOJSON_MAX_*``)."""

    max_bytes: int
    max_features: int
    max_site_vertices: int
    max_vertices: int

    @classmethod
    def from_settings(cls) -> SiteLimits:

        return cls(
            settings.DUMPSITE_GEOJSON_MAX_BYTES,
            settings.DUMPSITE_GEOJSON_MAX_FEATURES,
            settings.DUMPSITE_GEOJSON_MAX_SITE_VERTICES,
            settings.DUMPSITE_GEOJSON_MAX_VERTICES,
        )


def read_sites_file(path) -> bytes:
    """The bytes of an annotations file, refused past ``DUMPSITE_GEOJSON_MAX_BYTES`` before it is read."""
    limits = SiteLimits.from_settings()
    size = Path(path).stat().st_size
    if size > limits.max_bytes:
        raise _over("a size of (bytes)", size, limits.max_bytes, "DUMPSITE_GEOJSON_MAX_BYTES")
    return Path(path).read_bytes()


def _over(what: str, value: int, limit: int, setting: str) -> ApplicationError:
    return ApplicationError(
        f"The annotations have {what} {value:,}; the limit is {limit:,} ({setting}).",
        {"annotations": f"over {setting}", "limit": setting},
    )


def _feature_collection(content: bytes, limits: SiteLimits) -> dict:
    """The parsed FeatureCollection, refused when it is past the byte, vertex or feature limits or not one."""
    if len(content) > limits.max_bytes:
        raise _over("a size of (bytes)", len(content), limits.max_bytes, "DUMPSITE_GEOJSON_MAX_BYTES")
    # Every position is an array that starts with a number: past the vertex limit (plus a bbox per feature) the
    # file is refused before it is parsed (parsing a million-vertex polygon alone takes about a second here).
    if len(_NUMBER_ARRAY.findall(content)) > limits.max_vertices + limits.max_features:
        raise _over("vertices: more than", limits.max_vertices, limits.max_vertices, "DUMPSITE_GEOJSON_MAX_VERTICES")
    try:
        doc = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApplicationError(
            f"The annotations are not GeoJSON (not valid JSON: {exc}).", {"annotations": "not JSON"}
        ) from None
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(features, list):
        raise ApplicationError(
            'The annotations are not a GeoJSON FeatureCollection (needs "type": "FeatureCollection" and a '
            '"features" list).',
            {"annotations": "not a FeatureCollection"},
        )
    if len(features) > limits.max_features:
        raise _over("features:", len(features), limits.max_features, "DUMPSITE_GEOJSON_MAX_FEATURES")
    return doc


def read_annotations(
    content: bytes, *, class_property: str = "class", limits: SiteLimits | None = None, default_class: str = ""
) -> Annotations:
    """The sites of a GeoJSON FeatureCollection: Polygon / MultiPolygon features (boxes are rectangles) or features
    with a ``bbox`` and no geometry; the class from ``class_property``. The CRS is the legacy ``crs`` member's
    (``EPSG:32633``, ``urn:ogc:def:crs:EPSG::32633``), else WGS 84 as RFC 7946 says; a geometry's own ``crs``
    member is ignored (GDAL would resolve it, URLs included). Unusable features are reported, a file that is not
    GeoJSON is refused, and so is one past the limits (bytes, features, vertices of a site and of all sites), before
    any geometry is built. With ``default_class``, a feature without a class is a site of that class (known
    sites often have none)."""
    limits = limits or SiteLimits.from_settings()
    doc = _feature_collection(content, limits)
    srs = _crs_of(doc)
    found = Annotations(sites=[], srs=srs)
    vertices = 0
    for index, feature in enumerate(doc["features"]):
        label = f"feature {index}"
        if not isinstance(feature, dict):
            found.rejected.append((label, "not a GeoJSON feature"))
            continue
        if feature.get("id") is not None:
            label = f"feature {index} (id {feature['id']!r})"
        properties = feature.get("properties") or {}
        name = properties.get(class_property) if isinstance(properties, dict) else None
        if default_class and (not isinstance(name, str) or not name.strip()):
            name = default_class
        if not isinstance(name, str) or not name.strip():
            found.rejected.append((label, f"no class name in its {class_property!r} property"))
            continue
        count = _vertices(feature.get("geometry"), limits.max_site_vertices + 1)
        if count > limits.max_site_vertices:
            raise _over(
                f"{label} with vertices: more than",
                limits.max_site_vertices,
                limits.max_site_vertices,
                "DUMPSITE_GEOJSON_MAX_SITE_VERTICES",
            )
        vertices += count
        if vertices > limits.max_vertices:
            raise _over(
                "vertices: more than", limits.max_vertices, limits.max_vertices, "DUMPSITE_GEOJSON_MAX_VERTICES"
            )
        try:
            geometry = _geometry(feature, srs)
        except ValueError as exc:
            found.rejected.append((label, str(exc)))
            continue
        source = properties.get("source") if isinstance(properties, dict) else None
        found.sites.append(Site(label=label, class_name=name.strip(), geometry=geometry, source=source_of(source)))
    if not found.sites:
        reasons = "; ".join(f"{item}: {why}" for item, why in found.rejected[:3])
        raise ApplicationError(
            f"The annotations hold no usable site{f' ({reasons})' if reasons else ''}.", {"annotations": "no site"}
        )
    return found


def source_of(value: object) -> dict:
    """A site's provenance as it is kept on its boxes: a few short scalar entries of the feature's "source" object
    (anything else in it is left out)."""
    if not isinstance(value, dict):
        return {}
    kept: dict[str, object] = {}
    for key, item in list(value.items())[:8]:
        if isinstance(key, str) and len(key) <= 50 and "\x00" not in key:
            if isinstance(item, bool) or item is None or isinstance(item, int | float):
                kept[key] = item
            elif isinstance(item, str) and "\x00" not in item:
                kept[key] = item[:200]
    return kept


def _crs_of(doc: dict) -> SpatialReference:
    crs = doc.get("crs")
    if crs is None:
        return SpatialReference(4326)
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    if not isinstance(name, str):
        raise ApplicationError("The GeoJSON 'crs' member names no CRS.", {"annotations": "crs"})
    code = name.rsplit(":", 1)[-1] if "EPSG" in name.upper() else ""
    if name.upper().endswith("CRS84"):
        return SpatialReference(4326)
    if not code.isdigit():
        raise ApplicationError(f"The GeoJSON CRS {name!r} is not an EPSG code.", {"annotations": "crs"})
    try:
        return SpatialReference(int(code))
    except (GDALException, ValueError):
        raise ApplicationError(f"The GeoJSON CRS {name!r} is unknown.", {"annotations": "crs"}) from None


def _geometry(feature: dict, srs: SpatialReference) -> GEOSGeometry:
    geometry = feature.get("geometry")
    if geometry is None and isinstance(feature.get("bbox"), list) and len(feature["bbox"]) == 4:
        x1, y1, x2, y2 = feature["bbox"]
        geometry = {"type": "Polygon", "coordinates": [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]}
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        raise ValueError("not a Polygon, MultiPolygon or bbox (dump sites are areas)")
    try:
        # Only the type and the coordinates reach GDAL's reader: a "crs" member inside a geometry would be resolved
        # by GDAL (a URL fetched, a file read); the collection's CRS is the one used.
        geom = GEOSGeometry(json.dumps({"type": geometry["type"], "coordinates": geometry.get("coordinates")}))
    except (GEOSException, ValueError, TypeError, GDALException):
        raise ValueError("its geometry is not readable GeoJSON") from None
    if geom.empty or not geom.valid or geom.area <= 0:
        raise ValueError(f"its outline is not a valid area ({geom.valid_reason if not geom.empty else 'empty'})")
    geom.srid = srs.srid or 4326
    return geom


def _vertices(geometry, stop: int) -> int:
    """Positions in a GeoJSON geometry's coordinates (counted up to ``stop``, without building anything)."""
    if not isinstance(geometry, dict):
        return 0
    count, stack = 0, [geometry.get("coordinates")]
    while stack and count < stop:
        item = stack.pop()
        if isinstance(item, list):
            if item and isinstance(item[0], (int, float)):
                count += 1
            else:
                stack.extend(item)
    return count
