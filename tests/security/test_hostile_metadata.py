"""Hostile EXIF and GeoTIFF values are a problem of their image in the import report, never an internal error or
a 500: a capture time before the first instant a datetime holds (0001-01-01 00:00 at +01:00), GPS clocks and
positions out of range. Through the single-image API, ``import_coco`` and (tests/e2e/test_zip_import.py) a zip
imported by a real worker."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest
from django.core.management import call_command
from PIL import Image

from datasets.georef import read_georeference
from datasets.models import DatasetImage
from tests.datasets.geo_files import exif_jpeg

pytestmark = pytest.mark.django_db
OUT_OF_RANGE = "EXIF DateTimeOriginal '0001:01:01 00:00:00' at '+01:00' is out of range"


def hostile_jpeg(colour=(10, 20, 30)) -> bytes:
    """A JPEG taken at 0001-01-01 00:00 local time, +01:00: 1 h before the first instant a datetime holds."""
    exif = Image.Exif()
    exif[0x8769] = {36867: "0001:01:01 00:00:00", 36881: "+01:00"}
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_a_capture_time_out_of_range_is_a_problem_not_a_crash():
    found = read_georeference(hostile_jpeg(), "JPEG")
    assert found.captured_at is None and found.problems == [OUT_OF_RANGE]


def test_gps_values_out_of_range_are_problems():
    exif = Image.Exif()
    exif[0x8825] = {29: "2026:06:01", 7: (1e300, 0.0, 0.0), 1: "N", 2: (1e308, 1e308, 1e308), 3: "E", 4: (1.0, 0, 0)}
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "JPEG", exif=exif.tobytes())
    found = read_georeference(out.getvalue(), "JPEG")
    assert found.location is None and found.captured_at is None
    assert len(found.problems) == 1 and found.problems[0].startswith("EXIF GPS position unreadable")


def test_the_api_upload_of_a_hostile_exif_date_answers_201_with_the_problem(world, make_dataset):
    dataset = make_dataset(name="exif", images=0)
    upload = io.BytesIO(hostile_jpeg())
    upload.name = "drone.jpg"
    response = world.client("admin").post(f"/api/datasets/{dataset.pk}/images/", {"image": upload}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["georeference"] == {"found": [], "problems": [OUT_OF_RANGE]}


def test_import_coco_goes_on_past_a_hostile_exif_date(tmp_path):
    from core.commands import ensure_operator

    ensure_operator()
    (tmp_path / "a.jpg").write_bytes(hostile_jpeg())
    (tmp_path / "b.jpg").write_bytes(exif_jpeg(taken=datetime(2026, 6, 1, 9, 0), offset="+02:00", colour=(1, 2, 3)))
    doc = {
        "categories": [{"id": 1, "name": "w"}],
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(doc))
    out = io.StringIO()
    call_command("import_coco", str(tmp_path / "c.json"), str(tmp_path), "--name", "x", stdout=out)
    assert DatasetImage.objects.filter(dataset__name="x").count() == 2
    assert DatasetImage.objects.get(original_name="b.jpg").captured_at == datetime.fromisoformat("2026-06-01T07:00Z")
    assert OUT_OF_RANGE in out.getvalue()
