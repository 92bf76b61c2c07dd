"""An mmengine hook, run inside the training child, that appends progress events to a JSON-lines file."""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, TextIO

from mmengine.hooks import Hook


class ProgressEventsHook(Hook):
    priority = "VERY_LOW"

    def __init__(self, events_file: str, *, test_progress: bool = False):
        self.events_file = events_file
        self.test_progress = test_progress  # an evaluation: the test loop is the progress
        self._fh: TextIO | None = None
        self._test_started = 0.0

    def _write(self, event: str, **payload: Any) -> None:
        if self._fh is None:
            self._fh = open(self.events_file, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self._fh.write(json.dumps({"event": event, "time": time.time(), **payload}) + "\n")
        self._fh.flush()

    def before_train(self, runner: Any) -> None:
        self._write(
            "start",
            max_epochs=runner.max_epochs,
            max_iters=runner.max_iters,
            iters_per_epoch=len(runner.train_dataloader),
            resumed_iter=runner.iter,
        )

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        done = runner.iter + 1  # runner.iter counts from 0 and is advanced after this hook
        # mmengine's IterTimerHook (priority NORMAL, so before this VERY_LOW hook) has just put this iteration's
        # training ETA in the message hub: the same figure its log lines print.
        eta = runner.message_hub.get_info("eta")
        losses = {k: round(float(v.detach() if hasattr(v, "detach") else v), 6) for k, v in (outputs or {}).items()}
        lr = runner.optim_wrapper.get_lr().get("lr", [None])[0]
        self._write(
            "iter",
            epoch=runner.epoch + 1,
            iter=done,
            max_iters=runner.max_iters,
            losses=losses,
            lr=lr,
            eta=None if eta is None else round(float(eta), 1),
        )

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        clean = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        self._write("val", epoch=runner.epoch, metrics=clean)

    def before_test(self, runner: Any) -> None:
        if self.test_progress:
            self._test_started = time.monotonic()
            self._write("start", max_epochs=1, max_iters=len(runner.test_dataloader), iters_per_epoch=0)

    def after_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if not self.test_progress:
            return
        done, total = batch_idx + 1, len(runner.test_dataloader)
        elapsed = time.monotonic() - self._test_started
        eta = elapsed / done * (total - done)
        self._write("iter", epoch=1, iter=done, max_iters=total, losses={}, lr=None, eta=round(eta, 1))

    def after_run(self, runner: Any) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class KeepDetectionsHook(Hook):
    """Keep the detections of the validation passes that matter: the best so far (by ``monitor``, the rule of
    mmengine's CheckpointHook: strictly greater, so the first epoch reaching the best) and the last one. Once
    training ends, those of the registered checkpoint's epoch are analysed per class without running the model
    again: the validation already ran it on that split with those very weights."""

    priority = "LOW"

    def __init__(self, detections_file: str, out_dir: str, monitor: str):
        self.detections_file = detections_file
        self.out_dir = out_dir
        self.monitor = monitor
        self.best = float("-inf")

    def path(self, kind: str) -> str:
        return os.path.join(self.out_dir, f"{kind}_detections.json")

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        if not os.path.isfile(self.detections_file):
            return
        epoch = runner.epoch
        shutil.copyfile(self.detections_file, self.path("last"))
        kept = {"last": epoch}
        score = (metrics or {}).get(self.monitor)
        if isinstance(score, (int, float)) and score > self.best:
            self.best = float(score)
            shutil.copyfile(self.detections_file, self.path("best"))
            kept["best"] = epoch
        index = self.path("epochs").replace(".json", "_index.json")
        known = {}
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as fh:
                known = json.load(fh)
        known.update(kept)
        with open(index, "w", encoding="utf-8") as fh:
            json.dump(known, fh)

    def detections_of(self, epoch: int) -> str | None:
        """The kept detections file of ``epoch``, if one was kept."""
        index = self.path("epochs").replace(".json", "_index.json")
        if not os.path.isfile(index):
            return None
        with open(index, encoding="utf-8") as fh:
            known = json.load(fh)
        for kind in ("best", "last"):
            if known.get(kind) == epoch:
                return self.path(kind)
        return None


def _box_list(instances: Any) -> list[list[float]]:
    """An InstanceData's boxes as lists of (x1, y1, x2, y2); [] when it holds none."""
    if "bboxes" not in instances:
        return []
    boxes = instances.bboxes
    return (boxes.tensor if hasattr(boxes, "tensor") else boxes).tolist()


class TrainingSamplesHook(Hook):
    """Save the first training batch as the network receives it (after the whole pipeline: scaled, cropped,
    oriented, coloured) with its boxes drawn: green for the boxes it learns, orange for those a crop cut too much
    (ignored). Once per run, by the first process; what an operator looks at to see what the model was trained on."""

    priority = "VERY_LOW"

    def __init__(self, out_dir: str, count: int = 6):
        self.out_dir, self.count = out_dir, count
        self.done = False

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if self.done or not data_batch:
            return
        self.done = True
        # OpenCV loads with MMDetection in this child only
        import cv2

        os.makedirs(self.out_dir, exist_ok=True)
        index = []
        for i, (image, sample) in enumerate(zip(data_batch["inputs"], data_batch["data_samples"], strict=False)):
            if i >= self.count:
                break
            picture = image.detach().cpu().permute(1, 2, 0).numpy().copy()  # C, H, W (BGR) to H, W, C
            kept = _box_list(sample.gt_instances)
            ignored = _box_list(sample.ignored_instances)
            for boxes, colour in ((kept, (60, 200, 60)), (ignored, (0, 150, 255))):
                for x1, y1, x2, y2 in boxes:
                    cv2.rectangle(picture, (round(x1), round(y1)), (round(x2) - 1, round(y2) - 1), colour, 1)
            name = f"sample_{i}.jpg"
            cv2.imwrite(os.path.join(self.out_dir, name), picture, [cv2.IMWRITE_JPEG_QUALITY, 85])
            index.append(
                {
                    "file": name,
                    "width": int(picture.shape[1]),
                    "height": int(picture.shape[0]),
                    "boxes": len(kept),
                    "ignored": len(ignored),
                    "source": os.path.basename(str(sample.metainfo.get("img_path", ""))),
                }
            )
        with open(os.path.join(self.out_dir, "samples.json"), "w", encoding="utf-8") as fh:
            json.dump(index, fh)
