"""The pre-annotation archives read by the tools' own readers: datumaro (what CVAT imports and exports with) reads
both CVAT archives, Label Studio's SDK validates the predictions against the labelling config and its converter
turns the accepted tasks into COCO; every box comes back with IoU at least 0.999 and its class."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from labelling.formats import FORMATS, write_archives
from labelling.selection import iou
from tests.conftest import jpeg_bytes
from tests.labelling.tools import read_with_tool

# Class names a tool must carry through untouched: markup characters, quotes, non-ASCII.
CLASSES = ["waste", 'tyres <"old"> & co', "gravats déchets"]
IMAGES: list[dict] = [
    {
        "name": "area_x0_y0.jpg",
        "width": 320,
        "height": 240,
        "boxes": [["waste", 0.91, 10.5, 20.25, 40.0, 30.5], [CLASSES[1], 0.42, 200.0, 100.0, 119.0, 139.0]],
    },
    {"name": "area_x320_y0.jpg", "width": 300, "height": 240, "boxes": [[CLASSES[2], 0.655, 0.0, 0.0, 33.3, 12.7]]},
    {"name": "area_x0_y240.jpg", "width": 320, "height": 200, "boxes": []},
]


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("task")
    (folder / "images").mkdir()
    for image in IMAGES:
        (folder / "images" / image["name"]).write_bytes(jpeg_bytes(image["width"], image["height"]))
    return write_archives(
        folder,
        IMAGES,
        CLASSES,
        task_name="area <1>",
        model_version="tiny #7 (abcd1234)",
        image_url="/data/local-files/?d=task-7/images/",
    )


def unzip(archive: Path, into: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(into)
    return into


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_box_round_trips_through_the_tools_own_reader(archives, fmt, tmp_path):
    read = read_with_tool(fmt, unzip(archives[fmt], tmp_path / fmt))
    assert sorted(read["classes"]) == sorted(CLASSES)
    assert set(read["boxes"]) == {i["name"] for i in IMAGES}
    for image in IMAGES:
        back = sorted(read["boxes"][image["name"]], key=lambda b: (b[1], b[2]))
        sent = sorted(image["boxes"], key=lambda b: (b[2], b[3]))
        assert len(back) == len(sent), image["name"]
        for s, b in zip(sent, back, strict=True):
            assert b[0] == s[0]
            assert iou(s[2:6], b[1:5]) >= 0.999, (s, b)


def test_label_studio_predictions_carry_the_model_version_scores_and_percent(archives, tmp_path):
    folder = unzip(archives["label_studio"], tmp_path / "ls")
    tasks = json.loads((folder / "tasks.json").read_text(encoding="utf-8"))
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d=task-7/images/{i['name']}" for i in IMAGES]
    first = tasks[0]["predictions"][0]
    assert first["model_version"] == "tiny #7 (abcd1234)"
    assert first["score"] == pytest.approx((0.91 + 0.42) / 2, abs=1e-4)
    box = first["result"][0]
    assert box["score"] == 0.91
    assert box["value"]["x"] == pytest.approx(100 * 10.5 / 320)
    assert box["value"]["height"] == pytest.approx(100 * 30.5 / 240)
    assert (box["original_width"], box["original_height"]) == (320, 240)
    assert tasks[2]["predictions"][0]["result"] == []
    assert {p.name for p in (folder / "images").iterdir()} == {i["name"] for i in IMAGES}


def test_cvat_archives_have_cvats_own_layouts(archives):
    with zipfile.ZipFile(archives["cvat_coco"]) as zf:
        names = set(zf.namelist())
        coco = json.loads(zf.read("annotations/instances_default.json"))
    assert {"annotations/instances_default.json", *(f"images/{i['name']}" for i in IMAGES)} <= names
    assert [c["name"] for c in coco["categories"]] == CLASSES
    assert [a["score"] for a in coco["annotations"]] == [0.91, 0.42, 0.655]
    with zipfile.ZipFile(archives["cvat_xml"]) as zf:
        xml = zf.read("annotations.xml").decode()
    assert xml.count('source="auto"') == 3
    assert "&lt;1&gt;" in xml and "tyres &lt;&quot;old&quot;&gt; &amp; co" in xml  # escaped, never pasted
