"""GDAL reads only what the platform allows: an uploaded "orthophoto" that is a VRT over a local file, a VRT or a
WMS file naming a URL on a loopback listener, or a GeoTIFF with side files beside it. Each attack is first shown
to work with GDAL as GeoDjango leaves it (a fresh process, no policy), then refused through the real interfaces
(the API upload, the worker's import, the command line) with no request reaching the listener and no byte of the
file in any tile."""

from __future__ import annotations

import ctypes
import http.server
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.gis.gdal.libgdal import lgdal
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError

from core.errors import ApplicationError
from datasets.import_execution import dataset_import_execute
from datasets.imports import SITES, stored_upload
from datasets.models import Dataset, DatasetImage, DatasetImport
from datasets.rasters import registered_drivers
from datasets.tiling import open_orthophoto
from tests.datasets.geo_files import write_geotiff
from tests.datasets.test_tiling import sites_geojson

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
SECRET = b"DUMPSITE-SECRET-" * 256  # 4 KiB of a marker no tile could hold by chance
HEADER = (
    '<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:32633</SRS>'
    "<GeoTransform>500000, 0.1, 0, 5100000, 0, -0.1</GeoTransform>"
)


class Listener:
    """An HTTP server on the loopback address that records every request line it gets."""

    def __init__(self):
        self.requests: list[str] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                seen.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.end_headers()

            do_GET = do_HEAD = _record

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    found = Listener()
    yield found
    found.close()


def file_read_vrt(path: Path, secret: Path) -> Path:
    path.write_text(
        HEADER + '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
        f'<SourceFilename relativetoVRT="0">{secret}</SourceFilename>'
        "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>64</LineOffset>"
        "</VRTRasterBand></VRTDataset>"
    )
    return path


def url_vrt(path: Path, port: int) -> Path:
    path.write_text(
        HEADER + '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f"<SourceFilename>/vsicurl/http://127.0.0.1:{port}/ssrf-probe</SourceFilename>"
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return path


def wms_file(path: Path, port: int) -> Path:
    path.write_text(
        f'<GDAL_WMS><Service name="TMS"><ServerUrl>http://127.0.0.1:{port}/tms/${{z}}/${{x}}/${{y}}.png</ServerUrl>'
        "</Service><DataWindow><UpperLeftX>-20037508.34</UpperLeftX><UpperLeftY>20037508.34</UpperLeftY>"
        "<LowerRightX>20037508.34</LowerRightX><LowerRightY>-20037508.34</LowerRightY><TileLevel>1</TileLevel>"
        "<TileCountX>1</TileCountX><TileCountY>1</TileCountY></DataWindow><Projection>EPSG:3857</Projection>"
        "<BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY><BandsCount>3</BandsCount><Cache/></GDAL_WMS>"
    )
    return path


def unguarded_read(path: Path) -> dict:
    """What GeoDjango's plain GDALRaster(path) makes of the file in a process without the platform's policy."""
    code = (
        "import json, sys, numpy as np\n"
        "from django.conf import settings; settings.configure()\n"
        "from django.contrib.gis.gdal import GDALRaster\n"
        "r = GDALRaster(sys.argv[1])\n"
        "band = r.bands[0]\n"
        "out = {'geotransform': list(r.geotransform)}\n"
        "try:\n"
        "    out['row'] = bytes(np.asarray(band.data(offset=(0, 0), size=(64, 1))).ravel()).decode('latin-1')\n"
        "except Exception as exc:\n"
        "    out['row'] = type(exc).__name__\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.env"
    path.write_bytes(SECRET)
    return path


def upload(client, ortho: Path, name: str = "ortho.tif"):
    sites = io.BytesIO(sites_geojson())
    sites.name = "sites.geojson"
    data = io.BytesIO(ortho.read_bytes())
    data.name = name
    before = upload_folders()
    response = client.post(
        "/api/datasets/tile-orthophoto/",
        {"orthophoto": [data], "annotations": sites, "dataset_name": "attacked"},
        format="multipart",
    )
    response.folders_before = before
    return response


def upload_folders() -> set:
    kept = Path(default_storage.path("imports"))
    return set(kept.glob("*")) if kept.exists() else set()


def assert_nothing_left(response):
    """No import, no dataset, and no new upload folder (other tests may leave theirs in the session's tree)."""
    assert not DatasetImport.objects.exists()
    assert not Dataset.objects.filter(name="attacked").exists()
    assert upload_folders() == response.folders_before


def test_only_gtiff_and_mem_are_registered_in_a_django_process():
    assert sorted(registered_drivers()) == ["GTiff", "MEM"]


def test_a_vrt_over_a_local_file_is_refused_at_upload_and_no_byte_reaches_a_tile(tmp_path, secret, admin_api):
    vrt = file_read_vrt(tmp_path / "evil.tif", secret)
    # The attack is real: GDAL as GeoDjango leaves it reads the file as pixels.
    row = unguarded_read(vrt)["row"]
    assert row.encode("latin-1") == SECRET[:64], row

    response = upload(admin_api, vrt)
    assert response.status_code == 400, response.content
    body = response.json()
    assert "not a GeoTIFF" in body["message"] and "ortho.tif" in body["message"]
    assert str(tmp_path) not in json.dumps(body) and "/imports/" not in json.dumps(body)
    assert_nothing_left(response)
    assert not DatasetImage.objects.exists()


def test_vrt_and_wms_files_naming_urls_send_no_request(tmp_path, listener, admin_api):
    vrt = url_vrt(tmp_path / "probe.tif", listener.port)
    unguarded_read(vrt)
    assert any("/ssrf-probe" in line for line in listener.requests), listener.requests  # the attack is real
    listener.requests.clear()

    for attack in (vrt, wms_file(tmp_path / "wms.tif", listener.port)):
        response = upload(admin_api, attack)
        assert response.status_code == 400, response.content
        assert "not a GeoTIFF" in response.json()["message"]
        with pytest.raises(ApplicationError, match="not a GeoTIFF"):
            open_orthophoto(attack)
    assert listener.requests == []
    assert_nothing_left(response)


def test_the_worker_refuses_a_vrt_in_its_upload_folder(tmp_path, secret, listener, roles):
    """The worker opens the stored files again: a file swapped after the web's check is refused there too."""
    user = User.objects.create_user("uploader")
    user.groups.add(Group.objects.get(name="Administrator"))
    folder = Path(default_storage.path(stored_upload("swapped")))  # the local folder: the storage of the tests
    folder.mkdir(parents=True)
    file_read_vrt(folder / "0.tif", secret)
    url_vrt(folder / "1.tif", listener.port)
    (folder / SITES).write_bytes(sites_geojson())
    job = DatasetImport.objects.create(
        key="swapped",
        kind=DatasetImport.Kind.ORTHOPHOTO,
        new_dataset_name="attacked",
        parameters={
            "files": ["0.tif", "1.tif"],
            "names": ["a.tif", "b.tif"],
            "options": {"tile_size": 64, "overlap": 0},
        },
        created_by=user,
    )
    assert dataset_import_execute(import_id=job.pk) == "failed"
    job.refresh_from_db()
    assert "a.tif: not a GeoTIFF" in job.error_message and str(folder) not in job.error_message
    assert not DatasetImage.objects.exists() and listener.requests == []


def test_side_files_beside_a_real_geotiff_are_never_read(tmp_path):
    ortho = write_geotiff(tmp_path / "area.tif", srid=32633, origin=(500_000.0, 5_100_000.0), scale=(0.5, -0.5))
    # A PAM side file that moves the orthophoto 100 km, and an external overview.
    (tmp_path / "area.tif.aux.xml").write_text(
        "<PAMDataset><GeoTransform>600000, 0.5, 0, 5200000, 0, -0.5</GeoTransform></PAMDataset>"
    )
    write_geotiff(tmp_path / "area.tif.ovr", srid=32633, origin=(500_000.0, 5_100_000.0), scale=(1, -1), size=(32, 24))
    assert unguarded_read(ortho)["geotransform"][0] == 600_000.0  # the side file is honoured without the policy

    opened = open_orthophoto(ortho)
    assert opened.geotransform[0] == 500_000.0 and opened.geotransform[3] == 5_100_000.0
    overviews = lgdal["GDALGetOverviewCount"]  # a function object of the test's own
    overviews.argtypes, overviews.restype = [ctypes.c_void_p], ctypes.c_int
    assert overviews(opened.raster.bands[0]._ptr) == 0


def test_the_command_line_refuses_a_vrt_with_one_line(tmp_path, secret, roles):
    User.objects.create_superuser("cli-admin")
    vrt = file_read_vrt(tmp_path / "evil.tif", secret)
    sites = tmp_path / "sites.geojson"
    sites.write_bytes(sites_geojson())
    with pytest.raises(CommandError) as refused:
        call_command("tile_orthophoto", str(vrt), "--annotations", str(sites), "--name", "attacked")
    assert "evil.tif: not a GeoTIFF" in str(refused.value) and "\n" not in str(refused.value)
    assert not Dataset.objects.filter(name="attacked").exists()


def test_a_geometry_naming_an_external_crs_fetches_nothing(tmp_path, listener):
    from datasets.sites import read_annotations

    doc = json.loads(sites_geojson())
    doc["features"][0]["geometry"]["crs"] = {
        "type": "link",
        "properties": {"href": f"http://127.0.0.1:{listener.port}/crs.wkt", "type": "ogcwkt"},
    }
    found = read_annotations(json.dumps(doc).encode())
    assert len(found.sites) == 4 and found.srs.srid == 32633
    assert listener.requests == []


def test_a_damaged_geotiff_ends_the_command_with_one_line(tmp_path, roles):
    """Open may pass and a window's read fail (a truncated file): either way one line, naming the operator's file."""
    User.objects.create_superuser("cli-admin")
    ortho = write_geotiff(
        tmp_path / "cut.tif", srid=32633, origin=(500_000.0, 5_100_000.0), scale=(0.1, -0.1), size=(2000, 1500)
    )
    data = ortho.read_bytes()
    sites = tmp_path / "sites.geojson"
    sites.write_bytes(sites_geojson())
    for keep, name in ((len(data) // 2, "half.tif"), (len(data) * 4 // 5, "tail.tif")):
        damaged = tmp_path / name
        damaged.write_bytes(data[:keep])
        with pytest.raises(CommandError) as refused:
            call_command(
                "tile_orthophoto",
                str(damaged),
                "--annotations",
                str(sites),
                "--name",
                "damaged",
                "--tile-size",
                "512",
                "--background-ratio",
                "1",
            )
        message = str(refused.value)
        assert message.startswith(f"{name}: ") and "\n" not in message and str(tmp_path) not in message, message
    assert not Dataset.objects.filter(name="damaged").exists()


def test_a_location_naming_a_crs_in_any_spelling_reaches_gdal_without_it(make_dataset, admin_api, listener):
    from tests.conftest import jpeg_bytes

    dataset = make_dataset(name="placed", images=0)
    upload = io.BytesIO(jpeg_bytes(colour=(7, 7, 7)))
    upload.name = "tile.jpg"
    link = {"type": "link", "properties": {"href": f"http://127.0.0.1:{listener.port}/crs", "type": "proj4"}}
    point = json.dumps({"type": "Point", "coordinates": [14.5, 46.0], "CRS": link})
    response = admin_api.post(
        f"/api/datasets/{dataset.pk}/images/", {"image": upload, "location": point}, format="multipart"
    )
    assert response.status_code == 201, response.content
    assert response.json()["location"]["coordinates"] == [14.5, 46.0] and listener.requests == []
