"""The config files' argument parsing and the ResNet20 config's gate-method defaults."""

import sys

import pytest

from configs import common, resnet20_cifar10
from tfrobustprune import config_check


def test_parse_arg_converts_to_the_default_types_and_names_bad_items():
    parsed = common.parse_arg("dense,epochs=5,lr=0.1,center=0", dense=False, epochs=30, lr=0.2, center=True)
    assert (parsed.dense, parsed.epochs, parsed.lr, parsed.center) == (True, 5, 0.1, False)
    with pytest.raises(ValueError, match=r"Unhandled config arg 'epoch'.*Received: arg='epoch=5'"):
        common.parse_arg("epoch=5", epochs=30)
    with pytest.raises(ValueError, match=r"'epochs' must be a int. Received: epochs='five'"):
        common.parse_arg("epochs=five", epochs=30)
    with pytest.raises(ValueError, match=r"'epochs' needs a value"):
        common.parse_arg("epochs", epochs=30)


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("YES", True), ("0", False), ("no", False)])
def test_parse_arg_reads_booleans(value, expected):
    assert common.parse_arg(f"center={value}", center=not expected).center is expected


@pytest.mark.parametrize("value", ["on", "2", "ture"])
def test_parse_arg_refuses_a_boolean_it_cannot_read(value):
    # Read as False before, which silently turned off a default-on option.
    with pytest.raises(ValueError, match=rf"'center' must be one of .*Received: center='{value}'"):
        common.parse_arg(f"center={value}", center=True)


def test_dense_runs_record_what_a_config_without_the_gate_fields_means():
    # Dense rows trained before the gate fields existed stay reusable only while these agree.
    train = resnet20_cifar10.get_config("dense").train
    for field in ("cost_sensitivity", "importance_pressure", "center_task_gradient"):
        assert train[field] == config_check.OPTIONAL_FIELDS[f"train.{field}"]
    pruning = resnet20_cifar10.get_config("").train
    assert (pruning.cost_sensitivity, pruning.importance_pressure, pruning.center_task_gradient) == (0.0, 1.0, True)


def test_width_sets_the_resnet20_base_width_and_refuses_less_than_one():
    assert resnet20_cifar10.get_config("").model.width == 16  # configs trained before the arg resolve the same
    assert resnet20_cifar10.get_config("dense,width=6").model.width == 6
    with pytest.raises(ValueError, match=r"'width' must be >= 1\. Received: width=0"):
        resnet20_cifar10.get_config("dense,width=0")


@pytest.mark.parametrize("config_file", ["configs/resnet20_cifar10.py", "configs/quickstart.py"])
@pytest.mark.parametrize("flag,expected", [("auto", "auto"), ("true", True), ("false", False), ("yes", "yes")])
def test_jit_compile_override_arrives_as_the_trainer_reads_it(monkeypatch, config_file, flag, expected):
    from absl import flags
    from ml_collections import config_flags

    argv = ["train", f"--config={config_file}", f"--config.train.jit_compile={flag}"]
    monkeypatch.setattr(sys, "argv", argv)  # config_flags reads its overrides from sys.argv
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values)
    flag_values(argv)
    value = flag_values.config.train.jit_compile
    assert value == expected and type(value) is type(expected)  # "yes" is then refused by config_check.validate
