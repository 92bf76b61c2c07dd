"""Checkpoints load weights-only; a pickle that tries to run code is refused and runs nothing."""

import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from engine.checkpoints import load_checkpoint, save_weights
from engine.inspect import inspect_checkpoint


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_plain_state_dict_and_mmengine_style_checkpoint_load(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(0.5)
    full = {
        "state_dict": {"w": torch.ones(2, 3)},
        "meta": {"epoch": 3, "seed": np.int64(1)},
        "message_hub": {"log_scalars": {"train/loss": buffer}},
        "optimizer": {"state": {}},
    }
    torch.save(full, tmp_path / "full.pth")
    ckpt = load_checkpoint(str(tmp_path / "full.pth"))
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2, 3))
    assert ckpt["message_hub"]["log_scalars"]["train/loss"].mean() == 0.5

    params = save_weights(str(tmp_path / "full.pth"), str(tmp_path / "slim.pth"), classes=["a"])
    slim = torch.load(tmp_path / "slim.pth", weights_only=True)  # the slim file needs no allow-list at all
    assert params == 6 and set(slim) == {"state_dict", "meta"} and slim["meta"]["dataset_meta"]["classes"] == ["a"]


def test_malicious_pickle_is_refused_without_running(tmp_path):
    sentinel = tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": Evil(sentinel)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights-only"):
        load_checkpoint(str(tmp_path / "evil.pth"))
    assert not sentinel.exists()


def test_getattr_gadget_is_refused(tmp_path):
    """Only HistoryBuffer's statistics methods resolve through the getattr stand-in."""

    class Gadget:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, "__init__"))

    torch.save({"state_dict": {"w": torch.ones(1)}, "g": Gadget()}, tmp_path / "gadget.pth")
    with pytest.raises(ValueError, match="refused attribute lookup"):
        load_checkpoint(str(tmp_path / "gadget.pth"))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", pickle.dumps({"a": 1})])
def test_files_that_are_not_checkpoints_are_refused(tmp_path, content):
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(ValueError):
        load_checkpoint(str(tmp_path / "x.pth"))


def test_inspection_runs_in_a_child_and_refuses_malicious_files(tmp_path):
    sentinel = tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": Evil(sentinel)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights-only"):
        inspect_checkpoint(str(tmp_path / "evil.pth"), "retinanet_r18_tiny")
    assert not sentinel.exists()
    from tests.zoo import build_model

    state = build_model("retinanet_r18_tiny", 2).state_dict()
    torch.save({"state_dict": state, "meta": {"dataset_meta": {"classes": ["a", "b"]}}}, tmp_path / "ok.pth")
    report = inspect_checkpoint(str(tmp_path / "ok.pth"), "retinanet_r18_tiny")
    assert report["num_classes"] == 2 and report["classes"] == ["a", "b"]
    assert report["class_source"] == "meta.dataset_meta.classes" and report["tensors"] == len(state)
    assert report["parameter_count"] == sum(
        t.numel() for k, t in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert report["config"]["model"]["bbox_head"]["num_classes"] == 2 and report["config"]["load_from"] is None
    with pytest.raises(ValueError, match="no roi_head"):
        inspect_checkpoint(str(tmp_path / "ok.pth"), "faster_rcnn_r50_fpn")


def test_inspection_refuses_another_architecture_and_partial_files(tmp_path):
    from tests.zoo import build_model

    state = build_model("retinanet_r18_tiny", 2).state_dict()
    # A stock RetinaNet neck (256 channels) is another architecture than the tiny preset's (64).
    other = {**state, "neck.fpn_convs.0.conv.weight": torch.zeros(256, 256, 3, 3)}
    torch.save({"state_dict": other}, tmp_path / "other.pth")
    with pytest.raises(
        ValueError, match="not a retinanet_r18_tiny checkpoint: .*neck.fpn_convs.0.conv.weight is 256x256x3x3"
    ):
        inspect_checkpoint(str(tmp_path / "other.pth"), "retinanet_r18_tiny")
    partial = {k: v for k, v in state.items() if not k.startswith("neck.")}
    torch.save({"state_dict": partial}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="is missing from the base model"):
        inspect_checkpoint(str(tmp_path / "partial.pth"), "retinanet_r18_tiny")
    data = (tmp_path / "other.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="weights-only"):
        inspect_checkpoint(str(tmp_path / "truncated.pth"), "retinanet_r18_tiny")


def test_zoo_layouts_give_class_names(tmp_path):
    """The names come from MMDetection 3's meta, the 2.x zoo's ``CLASSES``, or COCO's for an 80-class head without
    names (that one through the real child)."""
    from mmdet.datasets import CocoDataset

    from engine.inspect import _class_names
    from tests.zoo import build_model, make_zoo_checkpoint

    coco = tuple(CocoDataset.METAINFO["classes"])
    assert _class_names({"CLASSES": coco}) == (list(coco), "meta.CLASSES")
    assert _class_names({"dataset_meta": {"classes": ["a"]}, "CLASSES": coco}) == (["a"], "meta.dataset_meta.classes")
    assert _class_names({"CLASSES": "not a list"}) == (None, None) and _class_names({}) == (None, None)
    state = build_model("retinanet_r18_tiny", 80).state_dict()
    path = make_zoo_checkpoint(tmp_path / "zoo.pth", "retinanet_r18_tiny", layout="bare", state=state)
    report = inspect_checkpoint(str(path), "retinanet_r18_tiny")
    assert report["num_classes"] == 80 and report["classes"] == list(coco)
    assert report["class_source"] == "COCO (80 classes)"
