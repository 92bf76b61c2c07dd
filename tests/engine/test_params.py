import pytest

from engine.params import COMMON_DEFAULTS, PARAM_SPECS, ParamError, validate_params
from engine.presets import PRESETS


def test_defaults_come_from_the_preset():
    assert validate_params("retinanet_r18_tiny", None) == {**COMMON_DEFAULTS, **PRESETS["retinanet_r18_tiny"].defaults}


def test_given_values_override_and_are_coerced():
    params = validate_params("retinanet_r18_tiny", {"epochs": 3.0, "learning_rate": 1, "optimizer": "SGD"})
    assert params["epochs"] == 3 and isinstance(params["epochs"], int)
    assert params["learning_rate"] == 1.0 and params["optimizer"] == "SGD"


@pytest.mark.parametrize(
    "given, key",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 501}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": "5"}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"frozen_stages": 5}, "frozen_stages"),
        ({"image_size": 250}, "image_size"),
        ({"image_size": 32}, "image_size"),
        ({"val_fraction": 0.9}, "val_fraction"),
        ({"seed": -1}, "seed"),
        ({"optimizer": "Adam"}, "optimizer"),
        ({"optimizer": None, "bogus": 1}, "bogus"),
        ({"amp": "yes"}, "amp"),
        ({"amp": 1}, "amp"),
        ({"accumulate": 0}, "accumulate"),
        ({"accumulate": 65}, "accumulate"),
        ({"patience": -1}, "patience"),
        ({"data_workers": 33}, "data_workers"),
        ({"data_workers": 1.5}, "data_workers"),
    ],
)
def test_out_of_range_or_wrong_type_is_named(given, key):
    with pytest.raises(ParamError) as err:
        validate_params("retinanet_r18_tiny", given)
    assert key in err.value.errors


def test_all_errors_are_reported_at_once():
    with pytest.raises(ParamError) as err:
        validate_params("retinanet_r18_tiny", {"epochs": 0, "batch_size": 0, "seed": "x"})
    assert set(err.value.errors) == {"epochs", "batch_size", "seed"}


def test_every_spec_describes_its_range():
    described = {name: spec.describe() for name, spec in PARAM_SPECS.items()}
    assert described["epochs"] == "int from 1 to 500" and described["batch_size"] == "int from 1 to 128"
    assert described["optimizer"] == "one of AdamW, SGD"
    for name, spec in PARAM_SPECS.items():
        if spec.kind is bool:
            assert described[name] == "true or false"
        elif spec.choices:
            assert all(choice in described[name] for choice in spec.choices), name
        else:
            low, high = (int(spec.minimum), int(spec.maximum)) if spec.kind is int else (spec.minimum, spec.maximum)
            assert described[name].endswith(
                f"from {low:g} to {high:g}" if spec.kind is float else f"from {low} to {high}"
            ), name


def test_training_controls_default_off_and_validate():
    params = validate_params("faster_rcnn_r50_fpn", {})
    assert (params["amp"], params["accumulate"], params["patience"], params["data_workers"]) == (False, 1, 0, 0)
    params = validate_params("faster_rcnn_r50_fpn", {"amp": True, "accumulate": 4, "patience": 3, "data_workers": 2})
    assert (params["amp"], params["accumulate"], params["patience"], params["data_workers"]) == (True, 4, 3, 2)
