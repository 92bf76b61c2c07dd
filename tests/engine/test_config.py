"""Config building: golden dicts, and the merge into mmdet's pinned base done as data."""

import json

import pytest

from engine.child import build_config
from engine.config import build_overrides, restore_tuples
from engine.job import TrainingJob
from engine.loading import resolve_base_config
from engine.params import validate_params
from engine.presets import PRESETS


def evil(sentinels) -> list[str]:
    """Class names that would run code (touching a file under ``sentinels``) if they were ever pasted into Python
    source or evaluated."""
    return [
        'quote " and \' and """',
        "new\nline",
        f"__import__('os').system('touch {sentinels}/pwned-by-class')",
        f"'); import os; os.system('touch {sentinels}/pwned-2') #",
        "déchets ♻",
    ]


EVIL = evil("/nonexistent")


def overrides(classes=("waste", "debris"), load_from=None, **params):
    return build_overrides(
        preset=PRESETS["retinanet_r18_tiny"],
        params=validate_params("retinanet_r18_tiny", params),
        classes=list(classes),
        train_ann_file="/w/data/train.json",
        val_ann_file="/w/data/val.json",
        image_root="/media",
        work_dir="/w/mm",
        load_from=load_from,
    )


def test_overrides_golden():
    o = overrides(epochs=10, batch_size=4, learning_rate=0.001, frozen_stages=1, image_size=320, seed=3)
    assert o["model"] == {
        "backbone": {"depth": 18, "init_cfg": None, "norm_eval": False, "frozen_stages": 1},
        "neck": {
            "in_channels": [64, 128, 256, 512],
            "out_channels": 64,
            "norm_cfg": {"type": "GN", "num_groups": 16, "requires_grad": True},
        },
        "bbox_head": {
            "in_channels": 64,
            "feat_channels": 64,
            "num_classes": 2,
            "norm_cfg": {"type": "GN", "num_groups": 16, "requires_grad": True},
        },
    }
    train_ds = o["train_dataloader"]["dataset"]
    assert train_ds == {
        "_delete_": True,
        "type": "CocoDataset",
        "data_root": "/media",
        "ann_file": "/w/data/train.json",
        "data_prefix": {"img": ""},
        "metainfo": {"classes": ["waste", "debris"]},
        "test_mode": False,
        "backend_args": None,
        "filter_cfg": {"filter_empty_gt": True, "min_size": 2},
        "pipeline": [
            {"type": "LoadImageFromFile"},
            {"type": "LoadAnnotations", "with_bbox": True},
            {"type": "Resize", "scale": [320, 320], "keep_ratio": True},
            {"type": "RandomFlip", "prob": [0.25, 0.25], "direction": ["horizontal", "vertical"]},
            {"type": "PackDetInputs"},
        ],
    }
    assert o["train_dataloader"]["batch_size"] == 4 and o["val_dataloader"]["dataset"]["test_mode"] is True
    assert o["val_evaluator"] == {
        "_delete_": True,
        "type": "CocoMetric",
        "ann_file": "/w/data/val.json",
        "metric": "bbox",
        "format_only": False,
        "backend_args": None,
        "collect_device": "gpu",  # through the process group: no folder shared between hosts
    }
    assert o["optim_wrapper"]["optimizer"] == {
        "type": "AdamW",
        "lr": 0.001,
        "betas": [0.9, 0.999],
        "weight_decay": 0.05,
    }
    assert o["param_scheduler"] == [
        {"type": "LinearLR", "start_factor": 0.1, "by_epoch": False, "begin": 0, "end": 20},
        {"type": "MultiStepLR", "by_epoch": True, "begin": 0, "end": 10, "milestones": [8], "gamma": 0.1},
    ]
    assert o["train_cfg"] == {"_delete_": True, "type": "EpochBasedTrainLoop", "max_epochs": 10, "val_interval": 1}
    assert o["default_hooks"]["checkpoint"]["save_best"] == "coco/bbox_mAP"
    assert o["default_hooks"]["checkpoint"]["max_keep_ckpts"] == 1
    assert o["randomness"]["seed"] == 3 and o["load_from"] is None and o["work_dir"] == "/w/mm"


def test_overrides_survive_json_unchanged():
    o = overrides(classes=EVIL)
    assert json.loads(json.dumps(o)) == o


def test_building_overrides_leaves_the_preset_as_it_is():
    before = json.dumps(PRESETS["retinanet_r18_tiny"].model_overrides, sort_keys=True)
    o = overrides(frozen_stages=2)
    assert o["model"]["backbone"]["frozen_stages"] == 2
    assert json.dumps(PRESETS["retinanet_r18_tiny"].model_overrides, sort_keys=True) == before


def test_restore_tuples_only_touches_resize_scales():
    node = {
        "pipeline": [
            {"type": "Resize", "scale": [256, 256]},
            {"type": "Other", "scale": [1, 2]},
            {"type": "RandomResize", "scale": [[1, 2], [3, 4]]},
        ]
    }
    restore_tuples(node)
    assert node["pipeline"][0]["scale"] == (256, 256) and node["pipeline"][1]["scale"] == [1, 2]
    assert node["pipeline"][2]["scale"] == [(1, 2), (3, 4)]


def test_base_configs_resolve_inside_mmdet_only():
    for preset in PRESETS.values():
        assert resolve_base_config(preset.base_config).endswith(".py")
    with pytest.raises((FileNotFoundError, ValueError)):
        resolve_base_config("mmdet::../../../etc/passwd")
    with pytest.raises(ValueError):
        resolve_base_config("/etc/passwd")


def test_merged_config_keeps_class_names_as_data(tmp_path):
    sentinels = tmp_path / "sentinels"
    sentinels.mkdir()
    names = evil(sentinels)
    job = TrainingJob(
        base_config=PRESETS["retinanet_r18_tiny"].base_config,
        overrides=overrides(classes=names),
        classes=names,
        work_dir=str(tmp_path),
        events_file="e",
        result_file="r",
        output_dir="o",
    )
    cfg = build_config(job)
    assert list(cfg.train_dataloader.dataset.metainfo.classes) == names
    assert cfg.model.bbox_head.num_classes == len(names)
    assert cfg.model.backbone.init_cfg is None  # nothing to download
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and "momentum" not in cfg.optim_wrapper.optimizer
    assert cfg.train_dataloader.dataset.pipeline[2]["scale"] == (256, 256)
    cfg.dump(str(tmp_path / "config.json"))
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["train_dataloader"]["dataset"]["metainfo"]["classes"] == names
    assert not any(p.suffix == ".py" for p in tmp_path.iterdir())
    assert not list(sentinels.iterdir())  # nothing ran


def test_standard_preset_sets_the_roi_head_class_count():
    o = build_overrides(
        preset=PRESETS["faster_rcnn_r50_fpn"],
        params=validate_params("faster_rcnn_r50_fpn", None),
        classes=["a", "b", "c"],
        train_ann_file="t",
        val_ann_file="v",
        image_root="/m",
        work_dir="/w",
    )
    assert o["model"]["roi_head"]["bbox_head"]["num_classes"] == 3
    assert o["optim_wrapper"]["optimizer"]["type"] == "SGD"


TEMPLATES = ["{{$DUMPSITE_TEST_SECRET:fallback}}", "{{ fileDirname }}", "{{ _base_.model }}", "{{'$HOME'}}"]


def test_the_child_reads_its_config_without_template_substitution(tmp_path, monkeypatch):
    """mmengine's Config.fromfile would put an environment variable's value, a path or a base value in place of
    these names; the child parses its JSON as data, and the names stay what they are."""
    from engine.loading import load_json_config

    monkeypatch.setenv("DUMPSITE_TEST_SECRET", "the-secret-value")
    job = TrainingJob(
        base_config=PRESETS["retinanet_r18_tiny"].base_config,
        overrides=overrides(classes=TEMPLATES),
        classes=TEMPLATES,
        work_dir=str(tmp_path),
        events_file="e",
        result_file="r",
        output_dir="o",
    )
    build_config(job).dump(str(tmp_path / "config.json"))
    cfg = load_json_config(str(tmp_path / "config.json"))
    assert list(cfg.train_dataloader.dataset.metainfo.classes) == TEMPLATES
    assert "the-secret-value" not in json.dumps(cfg.to_dict())
    assert cfg.filename.endswith("config.json")  # the Runner dumps its copy as JSON, not Python
    assert cfg.train_dataloader.dataset.pipeline[2]["scale"] == (256, 256)


def test_a_published_config_names_no_server_paths_and_reads_back_literally(tmp_path, monkeypatch):
    from mmengine.config import Config

    from engine.config import dumps_config_json, publishable_config

    monkeypatch.setenv("DUMPSITE_TEST_SECRET", "the-secret-value")
    cfg = json.loads(json.dumps(overrides(classes=TEMPLATES, load_from="/srv/media/models/k/model.pth")))
    public = publishable_config(cfg)
    text = dumps_config_json(public)
    assert "/w/" not in text and "/media" not in text and "/srv" not in text and "{{" not in text
    assert public["load_from"] is None and public["work_dir"] == "work_dirs/model"
    assert public["val_dataloader"]["dataset"]["ann_file"] == "annotations/val.json"
    assert public["val_evaluator"]["ann_file"] == "data/annotations/val.json"
    assert cfg["load_from"] == "/srv/media/models/k/model.pth"  # the input is left as it was
    (tmp_path / "model_config.json").write_text(text)
    stock = Config.fromfile(str(tmp_path / "model_config.json"))  # what a user's plain MMDetection does
    assert list(stock.train_dataloader.dataset.metainfo.classes) == TEMPLATES
    assert json.loads(text)["train_dataloader"]["dataset"]["metainfo"]["classes"] == TEMPLATES


def test_amp_accumulation_early_stopping_and_loader_workers_reach_the_config():
    plain = overrides()
    assert plain["optim_wrapper"]["type"] == "OptimWrapper" and "accumulative_counts" not in plain["optim_wrapper"]
    assert plain["custom_hooks"] == [] and plain["train_dataloader"]["num_workers"] == 0
    o = overrides(amp=True, accumulate=4, patience=3, data_workers=2)
    assert o["optim_wrapper"]["type"] == "AmpOptimWrapper" and o["optim_wrapper"]["loss_scale"] == "dynamic"
    assert o["optim_wrapper"]["accumulative_counts"] == 4
    assert o["custom_hooks"] == [
        {"type": "EarlyStoppingHook", "monitor": "coco/bbox_mAP", "rule": "greater", "min_delta": 0.0005, "patience": 3}
    ]
    assert o["train_dataloader"]["num_workers"] == 2 and o["train_dataloader"]["persistent_workers"] is True
    assert o["val_dataloader"]["num_workers"] == 2


def test_device_selection():
    from engine.device import DeviceError, select_device

    assert select_device(cuda_available=False, amp=False) == "cpu"
    assert select_device(cuda_available=True, amp=False) == "cuda"
    assert select_device(cuda_available=True, amp=True) == "cuda"
    with pytest.raises(DeviceError, match="Mixed precision \\(amp\\) needs a GPU, and this worker has none"):
        select_device(cuda_available=False, amp=True)
