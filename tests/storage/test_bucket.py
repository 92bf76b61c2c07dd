"""Files in a real S3 server (SeaweedFS on the loopback address): large files stream both ways, stored files are
read by window with ranged GETs, and downloads can be presigned URLs."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import urllib.request
import zipfile

import pytest
from django.core.files import File
from django.core.files.storage import default_storage

from core.storage import (
    RangeReader,
    StoredFileChanged,
    bucket_key,
    delete_stored,
    download_url,
    fetch_to,
    in_bucket,
    missing_files,
    open_stored,
    read_stored_tail,
    store_file,
    stored_names,
)
from engine.raster import GDAL_OF_RASTER, BucketObject, Raster, RasterRefused, library

MiB = 2**20


class Generated(io.RawIOBase):
    """``size`` deterministic bytes made as they are read: a large upload that never exists whole in memory."""

    def __init__(self, size: int):
        self.size, self.position = size, 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        count = min(len(target), self.size - self.position)
        block = bytes((self.position + i) % 251 for i in range(min(count, 4096))) * (count // 4096 + 1)
        target[:count] = block[:count]
        self.digest.update(block[:count])
        self.position += count
        return count


def test_the_tests_bucket_is_a_real_server(bucket_storage, s3_server):
    assert in_bucket()
    name = default_storage.save("probe/hello.txt", io.BytesIO(b"hello"))
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=bucket_storage.prefix)
    assert [o["Key"] for o in listed["Contents"]] == [bucket_key(name)] == [f"{bucket_storage.prefix}/probe/hello.txt"]
    second = default_storage.save("probe/hello.txt", io.BytesIO(b"again"))
    assert second != name  # never overwritten: a second file of one name gets its own
    with default_storage.open(name) as fh:
        assert fh.read() == b"hello"


def test_a_large_file_goes_up_in_parts_and_down_to_a_worker_without_sitting_in_memory(
    bucket_storage, s3_server, tmp_path
):
    size = 160 * MiB
    source, original = Generated(size), tmp_path / "big.pth"
    with open(original, "wb") as out:
        while block := source.read(4 * MiB):
            out.write(block)
    tracemalloc.start()
    try:
        with open(original, "rb") as fh:
            name = default_storage.save("checkpoints/big.pth", File(fh, name="big.pth"))
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        local = fetch_to(name, tmp_path / "scratch" / "big.pth")
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=bucket_key(name))
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith("-20")  # a multipart upload's ETag: 20 parts of 8 MiB
    # Bounded by the parts in flight and read ahead (8 MiB, 4 + 4: dumpsite/object_storage.py), not by the file.
    assert upload_peak < 72 * MiB and download_peak < 72 * MiB, (upload_peak, download_peak)
    assert hashlib.sha256(local.read_bytes()).hexdigest() == source.digest.hexdigest()
    assert not (tmp_path / "scratch" / "big.pth.part").exists()


def test_a_zip_member_is_read_from_the_bucket_with_a_few_ranged_gets(bucket_storage):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(24):
            zf.writestr(f"images/tile_{i:02d}.jpg", bytes([i]) * MiB)
        zf.writestr("annotations.json", b'{"images": []}')
    name = default_storage.save("uploads/tiles.zip", io.BytesIO(archive.getvalue()))
    reader = open_stored(name, chunk=256 * 1024)
    assert isinstance(reader, RangeReader)
    with io.BufferedReader(reader) as fh, zipfile.ZipFile(fh) as zf:
        assert len(zf.namelist()) == 25
        assert zf.read("annotations.json") == b'{"images": []}'
        assert zf.read("images/tile_07.jpg") == bytes([7]) * MiB
    # The directory, one small member and one 1 MiB member: a handful of requests, not the 24 MiB object.
    assert reader.requests <= 8
    assert reader.requests * 256 * 1024 + MiB < len(archive.getvalue()) / 4


def test_a_reader_fails_loudly_when_the_object_is_replaced_under_it(bucket_storage, s3_server):
    name = default_storage.save("uploads/a.bin", io.BytesIO(b"a" * 3 * MiB))
    reader = open_stored(name, chunk=MiB)
    assert reader.read(10) == b"a" * 10
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=bucket_key(name), Body=b"b" * 3 * MiB)
    reader.seek(2 * MiB)
    with pytest.raises(StoredFileChanged, match="uploads/a"):  # a 412 of the If-Match, said as what it means
        reader.read(10)


def test_downloads_redirect_to_a_short_lived_presigned_url_only_when_asked(bucket_storage, settings):
    name = default_storage.save("exports/run 3.zip", io.BytesIO(b"zip bytes"))
    assert download_url(name, filename="run 3.zip") is None
    settings.DUMPSITE_S3_PRESIGNED_DOWNLOADS = True
    url = download_url(name, filename='run "3".zip')
    assert "X-Amz-Expires=60" in url and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"zip bytes"
        assert response.headers["Content-Disposition"] == 'attachment; filename="run _3_.zip"'
    tampered = url.replace("X-Amz-Expires=60", "X-Amz-Expires=6000")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tampered, timeout=10)
    assert refused.value.code == 403


def test_the_local_folder_is_read_the_same_way(settings, tmp_path):
    assert not in_bucket()
    name = default_storage.save("uploads/local.bin", io.BytesIO(b"x" * 1000))
    with open_stored(name) as fh:
        fh.seek(990)
        assert fh.read() == b"x" * 10
    assert download_url(name, filename="local.bin") is None
    assert fetch_to(name, tmp_path / "copy.bin").read_bytes() == b"x" * 1000


def bucket_object(bucket, key: str, **changes) -> BucketObject:
    fields = dict(
        endpoint_url=bucket.endpoint_url,
        region=bucket.region,
        bucket=bucket.name,
        key=key,
        access_key=bucket.access_key,
        secret_key=bucket.secret_key,
    )
    return BucketObject(**{**fields, **changes})


def test_an_orthophoto_is_read_by_window_straight_from_the_bucket(bucket_storage, tmp_path):
    import numpy as np

    from tests.detection.scenes import rotated, write_geotiff

    pixels = np.random.default_rng(4).integers(0, 255, (1500, 1800, 3), dtype=np.uint8)
    tif = write_geotiff(tmp_path / "area.tif", pixels, srid=32633, geotransform=rotated((500_000, 5_100_000), 0.2, 0))
    with open(tif, "rb") as fh:
        name = default_storage.save("orthophotos/area.tif", File(fh, name="area.tif"))
    obj = bucket_object(bucket_storage, bucket_key(name))
    with Raster.in_bucket(obj) as raster:
        assert (raster.width, raster.height) == (1800, 1500) and "32633" in raster.projection
        window = raster.read(1000, 700, 256, 200, raster.colour_bands)
        assert np.array_equal(window, pixels[700:900, 1000:1256])
        with pytest.raises(RasterRefused):  # the policy still holds for every other name, in this thread too
            Raster(obj.vsi_path)
    with pytest.raises(RasterRefused):  # wrong credentials: the store refuses
        Raster.in_bucket(bucket_object(bucket_storage, bucket_key(name), secret_key="wrong"))
    with pytest.raises(RasterRefused):  # another object than the one named
        Raster.in_bucket(bucket_object(bucket_storage, bucket_key(name) + ".missing"))
    # Closed: the thread's options are gone, and GDAL reaches the bucket no more.
    lib = library()
    assert not lib.GDALOpenEx(obj.vsi_path.encode(), GDAL_OF_RASTER, None, None, None)


def test_a_model_kept_in_the_bucket_downloads_by_ranged_reads_or_by_a_presigned_redirect(
    world, bucket_storage, settings, s3_server
):
    model = world.model
    with open(settings.MEDIA_ROOT / model.checkpoint.name, "rb") as fh:  # the same model, its files in the bucket
        assert default_storage.save(model.checkpoint.name, fh) == model.checkpoint.name
    client = world.client("owner")
    response = client.get(f"/api/trained-models/{model.pk}/download/?artifact=checkpoint")
    assert response.status_code == 200 and response.streaming
    assert b"".join(response.streaming_content) == b"weights of run %d" % world.run.pk
    assert response["X-Checksum-SHA256"] == model.checkpoint_sha256
    settings.DUMPSITE_S3_PRESIGNED_DOWNLOADS = True
    response = client.get(f"/api/trained-models/{model.pk}/download/?artifact=checkpoint")
    assert response.status_code == 302 and response["X-Checksum-SHA256"] == model.checkpoint_sha256
    with urllib.request.urlopen(response["Location"], timeout=10) as stored:
        assert stored.read() == b"weights of run %d" % world.run.pk
        assert f'filename="model-{model.pk}-checkpoint.pth"' in stored.headers["Content-Disposition"]
    assert client.get(f"/api/trained-models/{model.pk}/download/?artifact=checkpoint&x=1").status_code == 302
    anonymous = world.client("anonymous").get(f"/api/trained-models/{model.pk}/download/?artifact=checkpoint")
    assert anonymous.status_code in (401, 403, 404)  # no URL handed out without the right
    s3_server.client().delete_object(Bucket=s3_server.bucket, Key=bucket_key(model.checkpoint.name))
    settings.DUMPSITE_S3_PRESIGNED_DOWNLOADS = False
    gone = client.get(f"/api/trained-models/{model.pk}/download/?artifact=checkpoint")
    assert gone.status_code == 404 and "missing from storage" in gone.json()["message"]


def test_a_workers_file_is_stored_under_its_name_hashed_on_the_way_and_listed_and_removed_by_folder(
    bucket_storage, s3_server, tmp_path
):
    size = 40 * MiB + 123  # several parts and a short last one
    source, original = Generated(size), tmp_path / "epoch_3.pth"
    with open(original, "wb") as out:
        while block := source.read(4 * MiB):
            out.write(block)
    expected = source.digest.hexdigest()
    tracemalloc.start()
    try:
        assert store_file(original, "runs/7/checkpoints/epoch_3.pth") == expected
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 72 * MiB, peak  # parts in flight, not the file
    assert store_file(original, "runs/7/train.log", move=True) == expected and not original.exists()
    back = fetch_to("runs/7/checkpoints/epoch_3.pth", tmp_path / "back.pth")
    assert hashlib.sha256(back.read_bytes()).hexdigest() == expected
    assert stored_names("runs/7") == ["runs/7/train.log"]  # the folder's own files, not its sub-folders'
    assert stored_names("runs/7/checkpoints") == ["runs/7/checkpoints/epoch_3.pth"]
    assert read_stored_tail("runs/7/train.log", 1000) == back.read_bytes()[-1000:]
    assert read_stored_tail("runs/7/nothing.log", 1000) == b""
    assert missing_files(["runs/7/train.log", "runs/7/other.log", "runs/8/x"]) == ["runs/7/other.log", "runs/8/x"]
    delete_stored("runs/7")
    assert stored_names("runs/7") == stored_names("runs/7/checkpoints") == []
    with pytest.raises(ValueError):
        delete_stored("runs/../models")
