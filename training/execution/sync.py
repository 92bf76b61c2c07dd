"""A run's files pushed from the worker's scratch folder to the storage as the run goes (``training.run_files``
names them): the log and the progress events every DUMPSITE_RUN_SYNC_SECONDS when they changed, and each epoch
checkpoint once it is final, the one before it then removed: what resuming needs is in the storage when the worker's
host is gone. A storage that does not answer stops the run with a message that says so. The log and the events are
stored with this host's folders redacted.

An epoch's checkpoint is final once that epoch's validation ended (the progress events say so) or the next epoch
trains: mmengine writes the checkpoint again, in place and under the same name, when its validation made it the
best, and pushing it before that doubled the bytes sent for every epoch that improved. It is pushed whole only (a
snapshot unchanged while copied, a whole zip archive). The last epoch's checkpoint waits for the run's end: a run
that succeeds has its model in the registry and needs none, one that fails or is cancelled pushes it then.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from core.errors import ApplicationError
from core.redact import redact_paths
from core.storage import delete_file, storage_errors, store_file
from engine.config import checkpoint_epoch
from engine.events import EventTail

from ..run_files import EVENTS, PUSHED, SAMPLES, TENSORBOARD, checkpoint_folder, stored_name

logger = logging.getLogger("training.execution")


class RunSync:
    def __init__(self, run_id: int, work: Path, *, every: float | None = None):
        self.run_id, self.work = run_id, Path(work)
        self.every = settings.DUMPSITE_RUN_SYNC_SECONDS if every is None else every
        self.seen: dict[str, tuple[int, int]] = {}
        self.checkpoint: str | None = None  # stored name of the last checkpoint pushed
        self.checkpoint_mark: tuple[int, int] | None = None  # its size and modification time when it was pushed
        self.last = time.monotonic()
        self.events = EventTail(self.work / EVENTS)
        self.max_epochs = 0  # of the training, from its first "start" event
        self.trained = self.validated = 0  # the epoch training is in; the last one whose validation ended

    def tick(self) -> None:
        """Push a checkpoint that became final now, and the log and events if DUMPSITE_RUN_SYNC_SECONDS have passed
        since they were last pushed."""
        self._follow_events()
        self._guarded(lambda: self._push_checkpoint(final=self._final))
        if time.monotonic() - self.last >= self.every:
            self.push_files()

    def push(self) -> None:
        """Push what changed now, the last checkpoint whatever its epoch (a run that ends without success: what
        resuming it starts from); ApplicationError when the storage does not take it."""
        self.push_files()
        self._guarded(lambda: self._push_checkpoint(final=lambda epoch: True))

    def push_files(self) -> None:
        """Push the log, events and result if they changed (a run that trained to its end: no checkpoint needed)."""
        self.last = time.monotonic()
        self._guarded(self._push_files)

    def _push_files(self) -> None:
        for name in PUSHED:
            self._push_if_changed(name)
        for name in (TENSORBOARD, SAMPLES):
            folder = self.work / name
            for path in sorted(folder.iterdir()) if folder.is_dir() else ():
                self._push_binary_if_changed(f"{name}/{path.name}")

    def _follow_events(self) -> None:
        for event in self.events.read_new():
            kind, epoch = event.get("event"), event.get("epoch")
            if kind == "start" and not self.max_epochs:
                self.max_epochs = int(event.get("max_epochs") or 0)
            elif kind == "iter" and isinstance(epoch, int):
                self.trained = max(self.trained, epoch)
            elif kind == "val" and isinstance(epoch, int):
                self.validated = max(self.validated, epoch)

    def _final(self, epoch: int) -> bool:
        """Whether mmengine is done writing the checkpoint of ``epoch`` while the run trains on."""
        if epoch == 0 or epoch >= self.max_epochs:
            return False  # not an epoch's checkpoint, or the last one: the run's end decides
        return self.validated >= epoch or self.trained > epoch

    def _guarded(self, push) -> None:
        try:
            push()
        except storage_errors() as exc:
            # The details (the store's address among them) go to the worker's log, not to the users.
            logger.warning("run %s: the storage did not take its files: %s", self.run_id, exc)
            raise ApplicationError(
                f"The storage did not take the run's files ({type(exc).__name__}); the run was stopped. Retry it "
                "once the storage answers again, or resume it from its last stored checkpoint."
            ) from exc

    def push_quietly(self) -> None:
        """The last push of a run that fails anyway: a storage that does not answer is logged, not raised."""
        try:
            self.push()
        except ApplicationError as exc:
            logger.warning("run %s: %s", self.run_id, exc)

    def _push_if_changed(self, name: str) -> None:
        path = self.work / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            return
        mark = (stat.st_size, stat.st_mtime_ns)
        if self.seen.get(name) == mark:
            return
        # Stored with this host's folders redacted: whoever reads it (the web, another host) does not know them.
        with (
            open(path, encoding="utf-8", errors="replace") as source,
            tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.work, suffix=".push", delete=False) as copy,
        ):
            for line in source:
                copy.write(redact_paths(line))
        store_file(copy.name, stored_name(self.run_id, name), move=True)
        self.seen[name] = mark

    def _push_binary_if_changed(self, name: str) -> None:
        """A file stored as it is (TensorBoard's event files hold no folder of this host: the config they record is
        the published one), from a copy: the writer may append to it meanwhile, and a reader of an event file stops
        at a record cut short."""
        path = self.work / name
        try:
            mark = _mark(path)
        except FileNotFoundError:
            return
        if self.seen.get(name) == mark or not path.is_file():
            return
        snapshot = self.work / f".{path.name}.push"
        try:
            shutil.copyfile(path, snapshot)
            store_file(snapshot, stored_name(self.run_id, name), move=True)
        finally:
            snapshot.unlink(missing_ok=True)
        self.seen[name] = mark

    def _push_checkpoint(self, *, final: Callable[[int], bool]) -> None:
        marker = self.work / "mmengine" / "last_checkpoint"  # written by mmengine once a checkpoint is whole
        try:
            local = Path(marker.read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            return
        name = f"{checkpoint_folder(self.run_id)}/{local.name}"
        if not local.name or not local.is_file():  # the marker is being written, or names a file not there yet
            return
        if not final(checkpoint_epoch(local.name)):
            return
        try:
            mark = _mark(local)
        except FileNotFoundError:
            return
        if (name, mark) == (self.checkpoint, self.checkpoint_mark):
            return
        # mmengine may still write it again (a run's last push, whatever the epoch): a copy taken meanwhile would be
        # cut. So a snapshot is stored only when the file did not change while it was copied and is a whole zip
        # archive (what torch.save writes); else the next tick tries again.
        snapshot = self.work / f".{local.name}.push"
        try:
            try:
                shutil.copyfile(local, snapshot)
                taken = _mark(local) == mark and _whole_zip(snapshot)
            except OSError:  # removed or replaced meanwhile: this host's disk, not the storage
                taken = False
            if not taken:
                return
            store_file(snapshot, name, move=True)
        finally:
            snapshot.unlink(missing_ok=True)
        if self.checkpoint is not None and self.checkpoint != name:
            delete_file(self.checkpoint)
        self.checkpoint, self.checkpoint_mark = name, mark


def _mark(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def _whole_zip(path: Path) -> bool:
    """Whether ``path`` is a whole zip archive: its central directory at its end lists members that lie within it."""
    try:
        with zipfile.ZipFile(path) as archive:
            size = path.stat().st_size
            return all(info.header_offset + info.compress_size <= size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return False
