"""The loop from detections back to training data, with the model the pipeline test trained and a real worker:

1. the model detects on a synthetic orthophoto whose east half is a ground it was never trained on (snow: it finds
   the piles on the grass, hardly any on the snow);
2. a scripted reviewer works through the detections over the API as a person would with the queue: confirms a
   detection that sits on a pile, corrects one that is loose (the pile's box), rejects one on bare ground, and
   draws the piles the model missed;
3. the reviewed sites go into a new dataset (tiles around them, false alarms as hard negatives);
4. a fine-tuning from the model on that dataset;
5. both models detect on a second orthophoto of the same kind with its known sites: the new model's site recall
   is higher. Both figures are printed.

Then a labelling task from a dataset run through the new model (the worker runs it in a child process), and its
Label Studio archive read by Label Studio's own converter.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from core.storage import copy_stored, stored_names
from datasets.models import Dataset, DatasetImport
from datasets.orthophotos import orthophoto_store
from detection.models import Detection
from detection.services import detection_run_create
from detection.to_dataset import reviewed_sites_to_dataset
from labelling.building import task_folder
from labelling.models import LabellingTask
from labelling.selection import iou, unmatched
from labelling.services import labelling_task_create
from models_registry.models import TrainedModel
from models_registry.predictions import predict_files
from tests.conftest import wait_for
from tests.detection.scenes import SNOW, ground, write_geotiff
from tests.e2e.detection_checks import known_sites, painted_polygon
from tests.e2e.model_checks import api_client
from tests.e2e.waiting import finished
from tests.labelling.tools import read_with_tool
from training.services import training_run_create

PIXEL_M = 0.2
CONFIRM_IOU, CORRECT_IOU = 0.5, 0.3  # a box over most of its pile is accepted; a loose one is redrawn
SIZES = (40, 80)  # the piles' sides, in pixels, as on the demo tiles
ROWS = 6


def area(seed: int, tmp_path: Path, name: str, origin: tuple[float, float]):
    """A 1024 x 1536 orthophoto (UTM 33N, 0.2 m): grass and soil on its west half, snow on its east half, and a
    pile in each cell of a 4 x 6 grid; with the piles' boxes and the map transform."""
    import numpy as np

    from datasets.demo import paint_object

    rng = np.random.default_rng(seed)
    canvas = ground(1024, ROWS * 256, seed)
    canvas[:, 512:] = ground(512, ROWS * 256, seed + 1, SNOW)
    piles = []
    for row in range(ROWS):
        for col in range(4):
            w, h = (int(v) for v in rng.integers(SIZES[0], SIZES[1], 2))
            x, y = col * 256 + int(rng.integers(4, 252 - w)), row * 256 + int(rng.integers(4, 252 - h))
            _, bx, by, bw, bh = paint_object(canvas, rng, 0, x, y, w, h)
            piles.append((bx, by, bx + bw, by + bh))
    pixels = np.clip(canvas, 0, 255).astype(np.uint8)
    gt = [origin[0], PIXEL_M, 0.0, origin[1], 0.0, -PIXEL_M]
    return write_geotiff(tmp_path / name, pixels, srid=32633, geotransform=gt), piles, gt


def detect(model: TrainedModel, ortho, user, sites: dict | None = None, threshold: float = 0.3):
    run = detection_run_create(
        model=model,
        orthophotos=[ortho],
        parameters={"classes": ["waste_pile"], "score_threshold": threshold},
        created_by=user,
        known_sites=json.dumps(sites).encode() if sites else None,
    )
    run = finished(run.pk)
    assert run.status == "succeeded", f"{run.error_message}\n{run.log_tail[-3000:]}"
    return run


def best_pile(box: list[float], piles: list[tuple]) -> tuple[float, int]:
    x1, y1, x2, y2 = box
    scored = [(iou((x1, y1, x2 - x1, y2 - y1), (p[0], p[1], p[2] - p[0], p[3] - p[1])), i) for i, p in enumerate(piles)]
    return max(scored) if scored else (0.0, -1)


def review(run, piles: list[tuple], client) -> dict[str, int]:
    """Decide every detection against the painted piles, and draw the missed ones, through the API."""
    done = {"confirmed": 0, "corrected": 0, "rejected": 0, "added": 0}
    found: set[int] = set()
    for d in Detection.objects.filter(run=run).order_by("-score"):
        value, index = best_pile(d.pixel_box, piles)
        body: dict[str, object]
        if value >= CONFIRM_IOU and index not in found:
            body, key = {"state": "confirmed"}, "confirmed"
        elif value >= CORRECT_IOU and index not in found:
            body, key = {"state": "confirmed", "pixel_box": [round(v, 1) for v in piles[index]]}, "corrected"
        else:
            body, key = {"state": "rejected"}, "rejected"
        response = client.patch(f"/api/detections/{d.pk}/", body, format="json")
        assert response.status_code == 200, response.json()
        done[key] += 1
        if key != "rejected":
            found.add(index)
    ortho = Detection.objects.filter(run=run).values_list("orthophoto_id", flat=True).first()
    for index, pile in enumerate(piles):
        if index in found:
            continue
        drawn = {
            "run": run.pk,
            "orthophoto": ortho,
            "pixel_box": [round(v, 1) for v in pile],
            "class_name": "waste_pile",
        }
        response = client.post("/api/detections/", drawn, format="json")
        assert response.status_code == 201, response.json()
        done["added"] += 1
    return done


def check_review_loop(model: TrainedModel, user, tmp_path: Path) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    client = api_client(user)
    assert model.dataset is not None
    first_path, first_piles, _gt = area(21, tmp_path, "first-area.tif", (480_000.0, 5_090_000.0))
    second_path, second_piles, second_gt = area(22, tmp_path, "second-area.tif", (482_000.0, 5_090_000.0))
    first = orthophoto_store(dataset=model.dataset, source=first_path, name="first-area.tif", created_by=user)
    second = orthophoto_store(dataset=model.dataset, source=second_path, name="second-area.tif", created_by=user)

    # 1-2. Detect on the first area, review it.
    run = detect(model, first, user, threshold=0.1)  # a reviewer also sees the doubtful ones
    done = review(run, first_piles, client)
    assert done["confirmed"] + done["corrected"] + done["added"] == len(first_piles), done
    assert all(done.values()), done  # each kind of decision was needed at least once

    # 3. The reviewed sites into a new dataset (a worker tiles them).
    job = reviewed_sites_to_dataset(run=run, user=user, dataset_name="reviewed first area", tile_size=256, overlap=64)
    job = wait_for(
        lambda: DatasetImport.objects.filter(pk=job.pk, status__in=("succeeded", "failed")).first(),
        timeout=300,
        message="the reviewed sites to be tiled",
    )
    assert job.status == "succeeded", job.error_message
    reviewed = Dataset.objects.get(name="reviewed first area")
    assert job.stats["with_sites"] >= 10 and job.annotations_imported >= len(first_piles), job.stats

    # 4. Fine-tune from the model on them.
    tuned_run = training_run_create(
        dataset=reviewed,
        base_model=model,
        parameters={"epochs": 8, "learning_rate": 1e-3},
        name="fine-tuned on reviewed sites",
        created_by=user,
    )
    tuned_run = finished(tuned_run.pk, timeout=900)
    assert tuned_run.status == "succeeded", f"{tuned_run.error_message}\n{tuned_run.log_tail[-3000:]}"
    tuned = TrainedModel.objects.get(source_run=tuned_run)
    assert tuned.base_model == model

    # 5. Both models on the second area, judged against its known sites.
    sites = known_sites([painted_polygon(second_gt, box, 32633) for box in second_piles], 32633)
    before = detect(model, second, user, sites).export_summary["sites"]["recall"]
    after = detect(tuned, second, user, sites).export_summary["sites"]["recall"]
    print(f"\nsite recall on the second area: model #{model.pk} {before:.3f}, fine-tuned #{tuned.pk} {after:.3f}")
    print(f"review of the first area: {done}")
    assert after > before, (before, after)

    check_labelling_from_a_dataset(tuned, reviewed, user, tmp_path)
    check_disagreement_on_a_run(run, tuned, user, tmp_path)


def check_labelling_from_a_dataset(model: TrainedModel, dataset: Dataset, user, tmp_path: Path) -> None:
    """A dataset run through a model by the worker, the uncertain tiles exported, read by Label Studio's tools."""
    task = labelling_task_create(
        user=user, dataset=dataset, model=model, parameters={"rule": "all", "count": 8, "min_distance_m": 30}
    )
    task = wait_for(
        lambda: LabellingTask.objects.filter(pk=task.pk, status__in=("succeeded", "failed")).first(),
        timeout=300,
        message="the labelling task",
    )
    assert task.status == "succeeded", task.error
    assert 0 < len(task.images) <= 8 and task.stats["candidates"] == dataset.images.filter(enabled=True).count()
    folder = tmp_path / "label-studio"
    copy_stored(f"{task_folder(task.pk)}/label-studio.zip", tmp_path / "label-studio.zip")
    with zipfile.ZipFile(tmp_path / "label-studio.zip") as zf:
        zf.extractall(folder)
    read = read_with_tool("label_studio", folder)
    for image in task.images:
        back = read["boxes"][image["name"]]
        assert len(back) == len(image["boxes"]) and all(
            iou(s[2:6], b[1:5]) >= 0.999 for s, b in zip(image["boxes"], back, strict=True)
        )


def check_disagreement_on_a_run(run, second: TrainedModel, user, tmp_path: Path) -> None:
    """The tiles of the first area where the old and the new model disagree: the worker cuts the run's tiles, runs
    the new model on them in a child process, and keeps those with a disagreement."""
    task = labelling_task_create(
        user=user, detection_run=run, second_model=second, parameters={"rule": "disagreement", "count": 4}
    )
    task = wait_for(
        lambda: LabellingTask.objects.filter(pk=task.pk, status__in=("succeeded", "failed")).first(),
        timeout=300,
        message="the disagreement task",
    )
    assert task.status == "succeeded", task.error
    assert task.stats["candidates"] > 4, task.stats  # a choice was made among more tiles than were kept
    assert task.stats["chosen"] == len(task.images) and 1 <= len(task.images) <= 4, task.stats
    assert stored_names(task_folder(task.pk)) == [
        f"{task_folder(task.pk)}/{name}" for name in ("cvat-coco.zip", "cvat-xml.zip", "label-studio.zip")
    ]  # the archives alone: the cut candidates are gone, the chosen pictures are in each archive
    folder = tmp_path / "disagreement"
    folder.mkdir(parents=True)
    copy_stored(f"{task_folder(task.pk)}/cvat-coco.zip", folder / "cvat-coco.zip")
    with zipfile.ZipFile(folder / "cvat-coco.zip") as zf:
        zf.extractall(folder)
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(i["name"] for i in task.images)
    # On every chosen tile the two models really disagree: the new model, run here on the exported picture, has a
    # box the old one lacks, or lacks one it has (same class, IoU 0.5), at the exported threshold.
    threshold = task.parameters["score_threshold"]
    paths = [folder / "images" / image["name"] for image in task.images]
    seen = predict_files(model=second, paths=paths, score_threshold=threshold, user=None)["images"]
    for image, found in zip(task.images, seen, strict=True):
        others = [[b["class_name"], b["score"], b["bbox"][0], b["bbox"][1], b["bbox"][2] - b["bbox"][0],
                   b["bbox"][3] - b["bbox"][1]] for b in found["boxes"]]  # fmt: skip
        assert unmatched(image["boxes"], others) + unmatched(others, image["boxes"]) > 0, (image, others)
