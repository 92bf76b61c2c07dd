import json

from engine.events import EventTail, best_epoch, clean_metric, fold_progress, metrics_history
from engine.supervisor import last_exception_line


def write(fh, **event):
    fh.write(json.dumps(event) + "\n")


def test_tail_reads_only_new_complete_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read_new() == []  # file not there yet
    with open(path, "w") as fh:
        write(fh, event="start", max_iters=10)
        fh.write('{"event": "iter", "it')  # half-written line
    assert [e["event"] for e in tail.read_new()] == ["start"]
    with open(path, "a") as fh:
        fh.write('er": 1}\nnot json\n')
        write(fh, event="iter", iter=2)
    assert [e.get("iter") for e in tail.read_new()] == [1, 2]
    assert tail.read_new() == []


def test_fold_progress_computes_percent_and_keeps_the_latest():
    state = fold_progress(
        {},
        [
            {"event": "start", "max_epochs": 2, "max_iters": 8},
            {"event": "iter", "epoch": 1, "iter": 1, "max_iters": 8, "losses": {"loss": 2.0}, "lr": 0.1, "eta": 70},
            {"event": "iter", "epoch": 1, "iter": 2, "max_iters": 8, "losses": {"loss": 1.5}, "lr": 0.1, "eta": 60},
        ],
    )
    assert state["percent"] == 25.0 and state["losses"] == {"loss": 1.5} and state["eta"] == 60
    fold_progress(state, [{"event": "error", "message": "boom"}])
    assert state["error"] == "boom" and state["iter"] == 2


def test_metrics_history_joins_validation_and_mean_loss():
    events = [
        {"event": "iter", "epoch": 1, "losses": {"loss": 3.0}},
        {"event": "iter", "epoch": 1, "losses": {"loss": 1.0}},
        {"event": "val", "epoch": 1, "metrics": {}},
        {"event": "iter", "epoch": 2, "losses": {"loss": 0.5}},
        {
            "event": "val",
            "epoch": 2,
            "metrics": {"coco/bbox_mAP": 0.4, "coco/bbox_mAP_50": 0.8, "coco/bbox_mAP_l": -1.0},
        },
        {"event": "iter", "epoch": 3, "losses": {"loss": 0.4}},
        {"event": "val", "epoch": 3, "metrics": {"coco/bbox_mAP": 0.4, "coco/bbox_mAP_50": 0.9}},
    ]
    history = metrics_history(events)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[0]["loss"] == 2.0 and history[0]["bbox_mAP"] == 0.0  # nothing detected yet
    assert history[1]["bbox_mAP_l"] is None and history[1]["bbox_mAP_50"] == 0.8
    assert history[1]["bbox_mAP_m"] is None  # metric absent from a non-empty report: unknown, not zero
    assert best_epoch(history)["epoch"] == 2  # ties keep the first, as CheckpointHook(rule="greater") does
    assert best_epoch([{"epoch": 1, "bbox_mAP": None}]) is None


def test_clean_metric():
    assert clean_metric(-1) is None and clean_metric(float("nan")) is None and clean_metric(0.5) == 0.5


def test_last_exception_line_finds_the_error_after_a_traceback():
    log = 'INFO start\nTraceback (most recent call last):\n  File "x", line 1\n    boom()\nValueError: bad image\n'
    assert last_exception_line(log) == "ValueError: bad image"
    assert last_exception_line("all fine\n") is None
