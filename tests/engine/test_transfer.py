"""Which weights of a base model load and which start afresh: from the class lists before a run is queued, and
tensor by tensor from the real models of each preset."""

import pytest

from engine.presets import PRESETS
from engine.transfer import FULL, NEW_CLASSES, TransferError, describe_transfer, plan_transfer
from tests.zoo import build_model

TINY, FRCNN = PRESETS["retinanet_r18_tiny"], PRESETS["faster_rcnn_r50_fpn"]


def shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_same_classes_load_everything_other_classes_renew_the_class_layers():
    assert describe_transfer(TINY, ["a", "b"], ["a", "b"])["mode"] == FULL
    other = describe_transfer(TINY, ["a", "b"], ["x", "y"])
    assert other["mode"] == NEW_CLASSES and other["reinitialised_layers"] == ["bbox_head.retina_cls"]
    assert "other classes (2 ('a', 'b'))" in other["summary"]
    coco = describe_transfer(FRCNN, [f"c{i}" for i in range(80)], ["waste", "tyres"])
    assert "predicts 80 ('c0', 'c1', 'c2', 'c3', 'c4', 'c5', and 74 more) classes, the dataset has 2" in coco["summary"]
    assert coco["reinitialised_layers"] == ["roi_head.bbox_head.fc_cls", "roi_head.bbox_head.fc_reg"]
    assert "another order" in describe_transfer(TINY, ["a", "b"], ["b", "a"])["reason"]


def test_plan_keeps_what_fits_and_refuses_another_architecture():
    model = {"backbone.w": (4, 3), "neck.w": (8,), "bbox_head.retina_cls.weight": (18, 4), "bbox_head.x": (2,)}
    base = {**model, "bbox_head.retina_cls.weight": (720, 4), "ema.w": (1,)}
    plan = plan_transfer(model, base, class_dependent=["bbox_head.retina_cls"], new_classes=True, reason="r")
    assert plan["loaded_count"] == 3 and plan["total"] == 4 and plan["unused"] == ["ema.w"]
    assert plan["loaded_groups"] == {"backbone": 1, "neck": 1, "bbox_head": 1}
    assert plan["reinitialised"] == [
        {"key": "bbox_head.retina_cls.weight", "shape": [18, 4], "base_shape": [720, 4], "reason": "r"}
    ]
    # The same shapes under other class names are re-initialised too: same shape, other meaning.
    same_shape = plan_transfer(model, model, class_dependent=["bbox_head.retina_cls"], new_classes=True)
    assert [e["key"] for e in same_shape["reinitialised"]] == ["bbox_head.retina_cls.weight"]
    # Without new classes the head must fit as well.
    with pytest.raises(TransferError, match="720x4 in the base model, 18x4 here"):
        plan_transfer(model, base, class_dependent=["bbox_head.retina_cls"], new_classes=False)
    with pytest.raises(TransferError, match="neck.w is missing"):
        plan_transfer(model, {k: v for k, v in base.items() if k != "neck.w"}, class_dependent=[], new_classes=False)
    with pytest.raises(TransferError, match="no tensor"):
        plan_transfer({"a": (1,)}, {}, class_dependent=["a"], new_classes=True)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (TINY, {"bbox_head.retina_cls.weight", "bbox_head.retina_cls.bias"}),
        (
            FRCNN,
            {
                "roi_head.bbox_head.fc_cls.weight",
                "roi_head.bbox_head.fc_cls.bias",
                "roi_head.bbox_head.fc_reg.weight",
                "roi_head.bbox_head.fc_reg.bias",
            },
        ),
    ],
)
def test_real_models_of_80_and_2_classes_differ_exactly_in_the_class_layers(preset, expected):
    """The presets' ``class_dependent`` prefixes name every tensor whose shape follows the classes, and only those."""
    coco, ours = shapes(build_model(preset.key, 80)), shapes(build_model(preset.key, 2))
    assert set(coco) == set(ours)
    assert {k for k in ours if ours[k] != coco[k]} == expected
    plan = plan_transfer(ours, coco, class_dependent=preset.class_dependent, new_classes=True, reason="80 -> 2")
    assert {e["key"] for e in plan["reinitialised"]} == expected
    assert plan["loaded_count"] == len(ours) - len(expected) and plan["unused_count"] == 0
    assert plan["loaded_groups"]["backbone"] > 50 and plan["loaded_groups"]["neck"] > 0


def test_the_small_object_preset_is_the_same_network_with_smaller_anchors():
    """faster_rcnn_r50_fpn_small loads the same model-zoo checkpoints in full: every tensor has the same name and
    shape; what differs is configuration (anchor size, input size, proposal counts)."""
    from engine.inspect import preset_config

    small = PRESETS["faster_rcnn_r50_fpn_small"]
    assert shapes(build_model(small.key, 80)) == shapes(build_model(FRCNN.key, 80))
    config = preset_config(small.key, 2)
    assert config["model"]["rpn_head"]["anchor_generator"]["scales"] == [4]
    assert config["model"]["rpn_head"]["anchor_generator"]["strides"] == [4, 8, 16, 32, 64]
    assert config["model"]["test_cfg"]["rcnn"]["max_per_img"] == 300 and small.defaults["image_size"] == 1344
    assert preset_config(FRCNN.key, 2)["model"]["rpn_head"]["anchor_generator"]["scales"] == [8]
