"""The run parameter ``anchor_scale``: the anchors MMDetection builds from a run's config are the preset's times the
scale (for each preset, with its anchor generator's own keys), the report counts matches at the run's scale and
suggests one, and a scale a preset cannot take is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mmdet.registry import TASK_UTILS
from mmdet.utils import register_all_modules
from mmengine.config import Config

from engine.anchors import box_report, summary_lines
from engine.loading import resolve_base_config
from engine.params import ParamError, validate_params
from engine.presets import PRESETS
from tests.engine.configs import generated_overrides


def built_shapes(preset_key: str, scale: float) -> list[tuple[float, float]]:
    """The (width, height) of every base anchor MMDetection's generator builds from a run's generated config."""
    preset = PRESETS[preset_key]
    params = validate_params(preset_key, {"anchor_scale": scale})
    overrides = generated_overrides(params, preset=preset_key)
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(resolve_base_config(preset.base_config))
    cfg.merge_from_dict({"model": overrides["model"]})
    assert preset.anchors is not None
    generator = TASK_UTILS.build(cfg.model[preset.anchors.head].anchor_generator)
    return sorted(
        (round(float(x2 - x1), 2), round(float(y2 - y1), 2))
        for base in generator.gen_base_anchors()
        for x1, y1, x2, y2 in base.tolist()
    )


@pytest.mark.parametrize("preset_key", list(PRESETS))
@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5])
def test_the_built_anchors_are_the_presets_times_the_scale(preset_key, scale):
    spec = PRESETS[preset_key].anchors
    assert spec is not None
    expected = sorted((round(w, 2), round(h, 2)) for w, h in spec.shapes(scale))
    assert built_shapes(preset_key, scale) == expected
    assert len(expected) == len(spec.shapes())  # as many anchors per place: every tensor keeps its shape
    if scale != 1.0:
        assert expected != sorted((round(w, 2), round(h, 2)) for w, h in spec.shapes())


def test_the_report_counts_matches_at_the_runs_scale_and_suggests_one():
    retinanet = PRESETS["retinanet_r18_tiny"].anchors
    assert retinanet is not None
    small = np.array([[10, 12], [14, 9], [12, 12], [40, 40]], dtype=float)
    preset_scale = box_report(small, retinanet)["anchors"]
    assert preset_scale["scale"] == 1.0 and preset_scale["matched"] == 0.25
    suggested = preset_scale["best_scale"]
    at_suggested = box_report(small, retinanet, suggested)["anchors"]
    assert at_suggested["scale"] == suggested < 1 and at_suggested["sizes_px"][0] == round(32.0 * suggested, 1)
    assert at_suggested["matched"] == preset_scale["matched_at_best_scale"] > 0.25
    words = " ".join(summary_lines(box_report(small, retinanet)))
    assert f"anchor_scale {suggested:g} would match" in words
    assert "no other anchor scale matches more" in " ".join(summary_lines(box_report(small, retinanet, suggested)))


def test_a_scale_out_of_range_or_for_a_preset_without_anchors_is_refused(monkeypatch):
    with pytest.raises(ParamError) as refused:
        validate_params("retinanet_r18_tiny", {"anchor_scale": 3.0})
    assert set(refused.value.errors) == {"anchor_scale"}
    assert validate_params("retinanet_r18_tiny", {})["anchor_scale"] == 1.0
    anchorless = dataclasses.replace(PRESETS["retinanet_r18_tiny"], anchors=None)
    monkeypatch.setitem(PRESETS, "retinanet_r18_tiny", anchorless)
    with pytest.raises(ParamError, match="has no anchors to scale"):
        validate_params("retinanet_r18_tiny", {"anchor_scale": 0.5})
    assert validate_params("retinanet_r18_tiny", {"anchor_scale": 1.0})["anchor_scale"] == 1.0
