"""Zip archives are checked member by member before anything is read; annotation tools' layouts are found; members
are read straight from the archive, as far as they declare, with their CRC checked."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest

from core.errors import ApplicationError
from datasets.coco_import import ZipImages
from datasets.zips import ZipLimits, check_zip, find_coco_file

LIMITS = ZipLimits(max_members=1000, max_bytes=50 * 2**20, max_ratio=100)
COCO = json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "waste"}]})


def make_zip(path: Path, members: dict[str, bytes | str], *, symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def refused(path: Path, match: str, limits: ZipLimits = LIMITS) -> ApplicationError:
    with pytest.raises(ApplicationError, match=match) as caught:
        check_zip(path, limits)
    return caught.value


@pytest.mark.parametrize(
    ("layout", "members", "coco_file", "root"),
    [
        (
            "CVAT (COCO 1.0)",
            {"annotations/instances_default.json": COCO, "images/a.jpg": b"x"},
            "annotations/instances_default.json",
            "",
        ),
        ("Label Studio (COCO)", {"result.json": COCO, "images/a.jpg": b"x"}, "result.json", ""),
        ("plain COCO", {"annotations.json": COCO, "images/a.jpg": b"x"}, "annotations.json", ""),
        (
            "CVAT (COCO 1.0)",
            {"task_7/annotations/instances_default.json": COCO, "task_7/images/a.jpg": b"x"},
            "task_7/annotations/instances_default.json",
            "task_7/",
        ),
        ("a single COCO file", {"export/coco.json": COCO, "export/a.jpg": b"x"}, "export/coco.json", "export/"),
    ],
)
def test_the_layouts_annotation_tools_export_are_found_without_renaming(tmp_path, layout, members, coco_file, root):
    contents = check_zip(make_zip(tmp_path / "a.zip", members), LIMITS)
    assert (contents.coco_file, contents.layout, contents.root) == (coco_file, layout, root)
    assert set(contents.files) == set(members) and contents.total_bytes == sum(len(v) for v in members.values())


def test_several_json_files_ask_which_one(tmp_path):
    path = make_zip(tmp_path / "two.zip", {"a/train.json": COCO, "b/val.json": COCO, "a/x.jpg": b"x"})
    error = refused(path, r"holds 2 JSON files; say which is the COCO file: a/train\.json, b/val\.json")
    assert error.extra["json_files"] == ["a/train.json", "b/val.json"]
    assert check_zip(path, LIMITS, coco_file="b/val.json").coco_file == "b/val.json"
    with pytest.raises(ApplicationError, match="no JSON file 'c.json'; it has: a/train.json, b/val.json"):
        check_zip(path, LIMITS, coco_file="c.json")
    with pytest.raises(ApplicationError, match="no COCO JSON file"):
        find_coco_file(["images/a.jpg"])


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x.png", r"'\.\./x\.png' climbs out of the archive"),
        ("images/../../x.png", "climbs out of the archive"),
        ("/etc/x.png", r"'/etc/x\.png' is an absolute path"),
        ("C:\\Windows\\x.png", "is an absolute path"),
        ("images\\..\\..\\x.png", "climbs out of the archive"),
        ("inner.zip", r"'inner\.zip' is an archive inside the archive"),
    ],
)
def test_dangerous_member_names_are_refused_before_anything_is_extracted(tmp_path, name, reason):
    path = make_zip(tmp_path / "bad.zip", {"annotations.json": COCO, name: b"data"})
    error = refused(path, reason)
    assert error.message.startswith("The archive is refused: ")
    assert list(tmp_path.iterdir()) == [path]  # nothing was written


def test_symlink_members_are_refused(tmp_path):
    path = make_zip(tmp_path / "link.zip", {"annotations.json": COCO}, symlinks={"images/a.jpg": "/etc/passwd"})
    refused(path, r"'images/a\.jpg' is a symbolic link")


def test_bombs_by_member_count_bytes_and_ratio_are_refused(tmp_path):
    many = make_zip(tmp_path / "many.zip", {"annotations.json": COCO, **{f"images/{i}.jpg": b"x" for i in range(30)}})
    refused(many, "has 31 members; at most 20 are accepted", ZipLimits(20, 2**30, 100))
    refused(many, "unpacks to [0-9,]+ bytes; at most 100 are accepted", ZipLimits(1000, 100, 100))

    zeros = make_zip(tmp_path / "zeros.zip", {"annotations.json": COCO, "images/big.jpg": b"\0" * (20 * 2**20)})
    refused(zeros, r"'images/big\.jpg' unpacks [0-9,]+ times its compressed size \(at most 100\): a zip bomb")


def test_empty_files_and_non_zips_are_refused(tmp_path):
    empty = tmp_path / "empty.zip"
    empty.write_bytes(b"")
    refused(empty, r"empty \(0 bytes\)")
    text = tmp_path / "text.zip"
    text.write_text("not a zip at all")
    refused(text, "not a zip archive")


def test_a_member_whose_data_is_longer_than_it_declares_is_not_extracted_past_that(tmp_path):
    """A member is read as far as its header declares, and its CRC is checked: a forged size cannot pass."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("annotations.json", COCO)
        archive.writestr("images/a.jpg", b"A" * 1000)
    data = bytearray(buffer.getvalue())
    # Forge the central directory's uncompressed size of images/a.jpg down to 10 bytes.
    central = data.rfind(b"PK\x01\x02")
    while data[central + 46 : central + 46 + 12] != b"images/a.jpg":
        central = data.rfind(b"PK\x01\x02", 0, central)
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    path = tmp_path / "forged.zip"
    path.write_bytes(bytes(data))
    contents = check_zip(path, LIMITS)
    with zipfile.ZipFile(path) as archive, pytest.raises(LookupError, match="damaged in the archive"):
        ZipImages(archive, contents).read("a.jpg")  # found under images/, then refused by its CRC
