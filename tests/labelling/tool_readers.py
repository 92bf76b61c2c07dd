"""The labelling tools' own readers, run in their own environment (``.venv-formats``: datumaro and label-studio-sdk
need NumPy 2, the product pins NumPy 1 for MMDetection). Not a test module: the tests run it as a child and read
what it prints.

    python tool_readers.py read  FORMAT FOLDER        -> {"classes": [...], "boxes": {file name: [[class, x, y, w, h]]}}
    python tool_readers.py edit  FOLDER EDITS OUT.zip -> a CVAT COCO 1.0 export of FOLDER after EDITS, by datumaro

FORMAT is cvat_coco or cvat_xml (datumaro, the framework CVAT imports and exports with) or label_studio (the
Label Studio SDK's converter: the tasks as a person who accepted every prediction exports them, turned into COCO).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path


def _datumaro(fmt: str, folder: Path):
    import datumaro as dm

    return dm.Dataset.import_from(str(folder), {"cvat_coco": "coco_instances", "cvat_xml": "cvat"}[fmt])


def _boxes_of(dataset) -> tuple[list[str], dict]:
    import datumaro as dm

    labels = dataset.categories()[dm.AnnotationType.label]
    boxes: dict = {}
    for item in dataset:
        name = Path(item.media.path).name
        boxes[name] = [
            [labels[a.label].name, a.x, a.y, a.w, a.h] for a in item.annotations if a.type == dm.AnnotationType.bbox
        ]
    return [label.name for label in labels], boxes


def _label_studio(folder: Path) -> tuple[list[str], dict]:
    from label_studio_sdk.converter import Converter
    from label_studio_sdk.label_interface import LabelInterface

    config = (folder / "label_config.xml").read_text(encoding="utf-8")
    tasks = json.loads((folder / "tasks.json").read_text(encoding="utf-8"))
    interface = LabelInterface(config)
    for task in tasks:
        for prediction in task["predictions"]:
            if not interface.validate_prediction(prediction):
                raise SystemExit(f"Label Studio refuses the prediction of task {task['id']}")
        # what Label Studio exports once a person submitted the prediction unchanged
        task["annotations"] = [{"id": task["id"], "result": task["predictions"][0]["result"]}]
    with tempfile.TemporaryDirectory() as tmp:
        exported = Path(tmp) / "export.json"
        exported.write_text(json.dumps(tasks), encoding="utf-8")
        Converter(config, project_dir=str(folder), download_resources=False).convert_to_coco(
            str(exported), str(Path(tmp) / "coco"), is_dir=False
        )
        coco = json.loads((Path(tmp) / "coco" / "result.json").read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    # Label Studio names an exported picture "<8 hex digits>__<file name>"
    files = {i["id"]: re.sub(r"^[0-9a-f]{8}__", "", i["file_name"].rsplit("/", 1)[-1]) for i in coco["images"]}
    boxes: dict = {name: [] for name in files.values()}
    for a in coco["annotations"]:
        boxes[files[a["image_id"]]].append([names[a["category_id"]], *a["bbox"]])
    return sorted(names.values()), boxes


def read(fmt: str, folder: Path) -> dict:
    classes, boxes = _label_studio(folder) if fmt == "label_studio" else _boxes_of(_datumaro(fmt, folder))
    return {"classes": classes, "boxes": boxes}


def edit(folder: Path, edits: dict, out: Path) -> None:
    """A person's work in CVAT, done with datumaro: ``edits`` maps a file name to its new boxes
    ([[class, x, y, w, h]]); the result is exported as CVAT exports a task (COCO 1.0, pictures included)."""
    import datumaro as dm

    dataset = _datumaro("cvat_coco", folder)
    labels = dataset.categories()[dm.AnnotationType.label]
    index = {label.name: i for i, label in enumerate(labels)}
    for item in list(dataset):
        name = Path(item.media.path).name
        if name in edits:
            boxes = [dm.Bbox(x, y, w, h, label=index[c]) for c, x, y, w, h in edits[name]]
            dataset.put(item.wrap(annotations=boxes))
    with tempfile.TemporaryDirectory() as tmp:
        dataset.export(tmp, "coco_instances", save_media=True)
        shutil.make_archive(str(out.with_suffix("")), "zip", tmp)


def main(argv: list[str]) -> None:
    if argv[1] == "read":
        print(json.dumps(read(argv[2], Path(argv[3]))))
    elif argv[1] == "edit":
        edit(Path(argv[2]), json.loads(Path(argv[3]).read_text(encoding="utf-8")), Path(argv[4]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
