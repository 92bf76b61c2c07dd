"""The Python config served with a model: stock mmengine reads it back as the same data, and no class name, however
hostile, becomes code or a template."""

import ast
import json

import pytest
from mmengine.config import Config

from engine.config import dumps_config_py, restore_tuples

TEMPLATES = ["{{$DUMPSITE_PROBE_SECRET:x}}", "{{ fileDirname }}", "{{ _base_.model }}", "${HOME}", "{{"]


def hostile(sentinel) -> list[str]:
    return [
        "quote \" and ' and \"\"\" and '''",
        "new\nline\r\nand\ttab and \\ backslash \\n",
        f"__import__('os').system('touch {sentinel}')",
        f"'); import os; os.system('touch {sentinel}') #",
        f"\nimport os\nos.system('touch {sentinel}')\n",
        "déchets ♻ 🚮 \u2028 \x00 \ud800",
        *TEMPLATES,
    ]


def test_hostile_class_names_stay_literal_through_stock_config_loading(tmp_path, monkeypatch):
    sentinel = tmp_path / "pwned"
    names = hostile(sentinel)
    data = {
        "model": {"type": "RetinaNet", "bbox_head": {"num_classes": len(names)}},
        "test_dataloader": {
            "dataset": {
                "metainfo": {"classes": names},
                "pipeline": [{"type": "Resize", "scale": [256, 256], "keep_ratio": True}],
            }
        },
        "odd": {"not an identifier": 1, "class": 2, "x": [1.5, -0.0, 1e-7, True, None, []], "empty": {}},
        "inf": float("inf"),
    }
    text = dumps_config_py(data, header="a comment")
    assert "{{" not in text and "$" not in text
    # The file is assignments of literals: the only names it calls are dict() and float().
    tree = ast.parse(text)
    assert all(isinstance(node, ast.Assign) for node in tree.body)
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert called <= {"dict", "float"} and named - {"dict", "float"} == set(data)
    path = tmp_path / "config.py"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("DUMPSITE_PROBE_SECRET", "s3cr3t")
    cfg = Config.fromfile(str(path))  # what mmdet.apis.init_detector and DetInferencer do with a path
    assert list(cfg.test_dataloader.dataset.metainfo.classes) == names
    assert cfg.test_dataloader.dataset.pipeline[0].scale == (256, 256)  # a tuple, as mmcv's Resize needs
    assert cfg.odd.to_dict() == {
        "not an identifier": 1,
        "class": 2,
        "x": [1.5, -0.0, 1e-7, True, None, []],
        "empty": {},
    }
    assert cfg.inf == float("inf")
    assert not sentinel.exists() and "s3cr3t" not in json.dumps(cfg.to_dict())


def test_round_trip_of_a_real_preset_config(tmp_path):
    from engine.inspect import preset_config

    data = preset_config("faster_rcnn_r50_fpn", 3)
    path = tmp_path / "c.py"
    path.write_text(dumps_config_py(data), encoding="utf-8")
    loaded = Config.fromfile(str(path)).to_dict()
    assert json.loads(json.dumps(loaded)) == json.loads(json.dumps(restore_tuples(data)))
    assert loaded["model"]["roi_head"]["bbox_head"]["num_classes"] == 3


@pytest.mark.parametrize("key", ["not a name", "__builtins__", "import", 3])
def test_top_level_keys_must_be_plain_names(key):
    with pytest.raises(ValueError, match="plain name"):
        dumps_config_py({key: 1})


def test_only_plain_data(tmp_path):
    with pytest.raises(TypeError, match="plain data"):
        dumps_config_py({"model": {"x": object()}})
