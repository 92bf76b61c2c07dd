"""The run's checkpoints pushed to the storage once and only whole: mmengine writes an epoch's checkpoint a second
time, in place under the same name, once its validation made it the best, and a copy taken while it does so would be
cut (a stored checkpoint that torch then refuses: "failed finding central directory"); while the run trains, an
epoch's checkpoint is pushed once its validation ended or the next epoch trains, the last epoch's at the run's end
only if the run does not succeed."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

from core.storage import open_stored, stored_names
from training.execution import sync as sync_module
from training.execution.sync import RunSync
from training.run_files import EVENTS, TENSORBOARD, checkpoint_folder, stored_tensorboard_files


def checkpoint_bytes(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # torch.save writes a zip archive like this one
        archive.writestr("archive/data.pkl", payload)
    return buffer.getvalue()


def epoch(work: Path, n: int, content: bytes) -> Path:
    folder = work / "mmengine"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch_{n}.pth"
    path.write_bytes(content)
    (folder / "last_checkpoint").write_text(str(path))
    return path


def stored(run_id: int, n: int) -> bytes | None:
    name = f"{checkpoint_folder(run_id)}/epoch_{n}.pth"
    if name not in stored_names(checkpoint_folder(run_id)):
        return None
    with open_stored(name) as fh:
        return fh.read()


def test_a_checkpoint_written_again_under_its_name_is_pushed_again(tmp_path):
    sync = RunSync(7001, tmp_path, every=0)
    first = checkpoint_bytes(b"epoch 1 as trained")
    epoch(tmp_path, 1, first)
    sync.push()
    assert stored(7001, 1) == first
    again = checkpoint_bytes(b"epoch 1 with its best score recorded, a little longer")
    epoch(tmp_path, 1, again)
    sync.push()
    assert stored(7001, 1) == again  # before: the same name counted as pushed, and the first copy stayed
    second = checkpoint_bytes(b"epoch 2")
    epoch(tmp_path, 2, second)
    sync.push()
    assert stored(7001, 2) == second and stored(7001, 1) is None  # the one before it removed


def test_a_cut_checkpoint_is_not_pushed_and_the_last_whole_one_stays(tmp_path):
    sync = RunSync(7002, tmp_path, every=0)
    whole = checkpoint_bytes(b"epoch 1" * 1000)
    epoch(tmp_path, 1, whole)
    sync.push()
    epoch(tmp_path, 1, whole[: len(whole) // 2])  # being written again: only its first half there yet
    sync.push()
    assert stored(7002, 1) == whole
    epoch(tmp_path, 1, whole)  # written to the end
    sync.push()
    assert stored(7002, 1) == whole


def test_a_checkpoint_that_changes_while_it_is_copied_waits_for_the_next_tick(tmp_path, monkeypatch):
    sync = RunSync(7003, tmp_path, every=0)
    path = epoch(tmp_path, 1, checkpoint_bytes(b"epoch 1"))
    rewritten = checkpoint_bytes(b"epoch 1, the best so far")
    copied = []
    copy = shutil.copyfile

    def copy_then_rewrite(source, target):
        copy(source, target)
        if not copied:  # mmengine writes it again just after the snapshot was taken
            copied.append(True)
            path.write_bytes(rewritten)

    monkeypatch.setattr(sync_module.shutil, "copyfile", copy_then_rewrite)
    sync.push()
    assert stored(7003, 1) is None  # the snapshot no longer matched the file: not stored
    sync.push()
    assert stored(7003, 1) == rewritten
    assert not list(tmp_path.glob(".*.push"))  # no snapshot left behind


def test_a_marker_being_written_or_naming_nothing_yet_is_passed_over(tmp_path):
    sync = RunSync(7004, tmp_path, every=0)
    (tmp_path / "mmengine").mkdir()
    (tmp_path / "mmengine" / "last_checkpoint").write_text("")  # mmengine has opened it, not written it yet
    sync.push()
    (tmp_path / "mmengine" / "last_checkpoint").write_text(str(tmp_path / "mmengine" / "epoch_1.pth"))  # not there
    sync.push()
    assert stored_names(checkpoint_folder(7004)) == []


def events(work: Path, *lines: dict) -> None:
    with open(work / EVENTS, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)


def test_while_the_run_trains_an_epoch_is_pushed_once_final_and_the_last_one_at_a_failed_end(tmp_path):
    sync = RunSync(7005, tmp_path, every=3600)
    events(tmp_path, {"event": "start", "max_epochs": 3}, {"event": "iter", "epoch": 1})
    first = checkpoint_bytes(b"epoch 1 as trained")
    epoch(tmp_path, 1, first)
    sync.tick()
    assert stored(7005, 1) is None  # its validation may still make it the best and mmengine write it again
    rewritten = checkpoint_bytes(b"epoch 1 with its best score recorded")
    epoch(tmp_path, 1, rewritten)
    events(tmp_path, {"event": "val", "epoch": 1})
    sync.tick()
    assert stored(7005, 1) == rewritten  # pushed once, final
    events(tmp_path, {"event": "iter", "epoch": 2}, {"event": "iter", "epoch": 3})  # epoch 2 not validated
    epoch(tmp_path, 2, checkpoint_bytes(b"epoch 2"))
    sync.tick()
    assert stored(7005, 2) == checkpoint_bytes(b"epoch 2") and stored(7005, 1) is None  # epoch 3 trains: final
    last = checkpoint_bytes(b"epoch 3")
    epoch(tmp_path, 3, last)
    events(tmp_path, {"event": "val", "epoch": 3})
    sync.tick()
    assert stored(7005, 3) is None  # the last epoch waits for the run's end
    sync.push_files()  # a run that succeeded: its files, no checkpoint
    assert stored(7005, 3) is None and f"runs/7005/{EVENTS}" in stored_names("runs/7005")
    sync.push()  # a run that failed or was cancelled: what resuming starts from
    assert stored(7005, 3) == last and stored(7005, 2) is None


def test_tensorboard_files_are_pushed_as_they_are_whenever_they_changed(tmp_path):
    folder = tmp_path / TENSORBOARD
    folder.mkdir()
    event_file = folder / "events.out.tfevents.1.host.1.0"
    record = bytes(range(256)) + f"{tmp_path}".encode()  # binary, and stored byte for byte (nothing redacted)
    event_file.write_bytes(record)
    sync = RunSync(41, tmp_path, every=0)
    sync.push_files()
    name = f"runs/41/{TENSORBOARD}/{event_file.name}"
    with open_stored(name) as fh:
        assert fh.read() == record
    with event_file.open("ab") as fh:
        fh.write(b"more")
    sync.push_files()
    with open_stored(name) as fh:
        assert fh.read() == record + b"more"
    assert stored_tensorboard_files(41) == [name] and not list(tmp_path.glob(".*.push"))
