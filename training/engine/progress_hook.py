"""An mmengine hook, run inside the training child, that appends progress events to a JSON-lines file."""

from __future__ import annotations

import json
import time

from mmengine.hooks import Hook


class ProgressEventsHook(Hook):
    priority = "VERY_LOW"

    def __init__(self, events_file: str):
        self.events_file = events_file
        self._fh = None

    def _write(self, event: str, **payload) -> None:
        if self._fh is None:
            self._fh = open(self.events_file, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self._fh.write(json.dumps({"event": event, "time": time.time(), **payload}) + "\n")
        self._fh.flush()

    def before_train(self, runner) -> None:
        self._write(
            "start",
            max_epochs=runner.max_epochs,
            max_iters=runner.max_iters,
            iters_per_epoch=len(runner.train_dataloader),
            resumed_iter=runner.iter,
        )

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
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

    def after_val_epoch(self, runner, metrics=None) -> None:
        clean = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        self._write("val", epoch=runner.epoch, metrics=clean)

    def after_run(self, runner) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
