"""Resume after a kill, determinism, non-finite losses, bad files, and property-based checks."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from helpers import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfrobustprune
from configs import quickstart
from tfrobustprune import config_check, models, strip, train_lib
from tfrobustprune.guards import TerminateOnNonFinite
from tfrobustprune.model_io import (
    ModelFileError,
    load_keras_model,
    read_tflite,
    save_keras_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_npz_atomic,
)

TINY = [
    "--config.data.train_size=384",
    "--config.data.eval_size=64",
    "--config.train.batch_size=64",
    "--config.guard.probe_size=32",
    "--config.eval.pgd_steps=2",
    "--config.model.width=4",
    "--config.train.freeze_epoch=2",
    "--config.deterministic=True",
]


def _train_command(workdir, epochs=3):
    return [
        sys.executable,
        "-m",
        "tfrobustprune.train",
        f"--config=configs/quickstart.py:epochs={epochs}",
        f"--workdir={workdir}",
        *TINY,
    ]


def _epochs_done(workdir):
    path = os.path.join(workdir, "backup", "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return json.load(f)["epoch"]


def test_killed_run_resumes_to_the_same_final_metrics(tmp_path):
    reference = tmp_path / "reference"
    result = subprocess.run(_train_command(reference), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(_train_command(resumed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while _epochs_done(resumed) < 1 and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # into the second epoch
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _epochs_done(resumed)
    assert 1 <= killed_at < 3
    assert not (resumed / "report.json").exists()

    result = subprocess.run(_train_command(resumed), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = json.loads((reference / "report.json").read_text())
    actual = json.loads((resumed / "report.json").read_text())
    assert actual["epochs"]["run"] == 3 - killed_at  # the resumed run did only the missing epochs
    assert actual["epochs"]["timed"] == 3  # epochs of both processes count toward the wall time
    assert actual["wall_time_seconds"]["train"] > 0
    for key in ("natural_accuracy", "pgd_accuracy"):
        assert actual["validation"][key] == pytest.approx(expected["validation"][key], abs=1e-6)
    assert actual["cost"]["achieved_ratio"] == expected["cost"]["achieved_ratio"]
    assert actual["widths"] == expected["widths"]
    assert actual["history"]["val_loss"][-1] == pytest.approx(expected["history"]["val_loss"][-1], abs=1e-5)

    # Its checkpoint stays: resuming it under another config is refused before any work, naming the field.
    changed = _train_command(resumed) + ["--config.train.gate_learning_rate=0.5"]
    result = subprocess.run(changed, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "train.gate_learning_rate: 0.05 -> 0.5" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((resumed / "report.json").read_text()) == actual


def test_resumed_config_check(tmp_path, caplog):
    workdir = str(tmp_path)
    config = quickstart.get_config()
    config.train.target_ratio = 0.3
    train_lib.check_resumed_config(config, workdir)  # nothing checkpointed: nothing to compare
    write_json_atomic(tmp_path / "backup" / "training_metadata.json", {"epoch": 1})
    train_lib.check_resumed_config(config, workdir)  # a checkpoint from before config.json: accepted, with a warning
    assert "no recorded config" in caplog.text
    write_json_atomic(tmp_path / "report.json", {"config": quickstart.get_config().to_dict()})
    with pytest.raises(config_check.ConfigError, match=r"recorded in report.json.*Received: train.target_ratio"):
        train_lib.check_resumed_config(config, workdir)  # the config of a finished old run is its report's
    train_lib.record_config(config, workdir)
    assert json.loads((tmp_path / "config.json").read_text())["train"]["target_ratio"] == 0.3
    train_lib.check_resumed_config(config, workdir)  # config.json comes before report.json

    other = quickstart.get_config()
    other.train.target_ratio = 0.3
    other.data.path, other.train.verbose = "/elsewhere", 0  # where the data is and how much to print may change
    other.eval.pgd_steps, other.export.tflite = 3, True  # so may what is measured and exported afterwards
    train_lib.check_resumed_config(other, workdir)
    assert "jit_compile" not in caplog.text
    other.train.jit_compile = True  # and whether XLA compiles the step, said in a warning
    train_lib.check_resumed_config(other, workdir)
    assert "with train.jit_compile=True; its earlier epochs ran with 'auto'" in caplog.text
    other.train.target_ratio, other.attack.name = 0.2, "n_fgsm"
    with pytest.raises(config_check.ConfigError, match=r"Received: attack.name: 'fgsm_rs' -> 'n_fgsm'; train.target"):
        train_lib.check_resumed_config(other, workdir)


def test_config_changes_compares_json_forms_and_fills_absent_optional_fields():
    config = quickstart.get_config()
    assert train_lib.config_changes(config, config.to_dict()) == []  # a ConfigDict and its dict are the same
    with_tuple = config.to_dict()
    with_tuple["data"]["path"] = ("a", "b")
    assert (
        train_lib.config_changes(with_tuple, {**with_tuple, "data": {**with_tuple["data"], "path": ["a", "b"]}}) == []
    )
    older = config.to_dict()
    assert "cost_sensitivity" not in older["train"]  # as in a config written before the field: absent means 1.0
    assert train_lib.config_changes(older, config) == []
    config.train.cost_sensitivity = 0.0
    assert train_lib.config_changes(older, config) == ["train.cost_sensitivity: 1.0 -> 0.0"]
    config.init_model = None
    assert train_lib.config_changes(older, config) == ["train.cost_sensitivity: 1.0 -> 0.0"]  # None means ""
    config.train.jit_compile = True  # how the step is computed, not which experiment: resumable either way
    assert train_lib.config_changes(older, config) == ["train.cost_sensitivity: 1.0 -> 0.0"]


def test_nan_loss_stops_on_the_last_good_weights(sample):
    keras.utils.set_random_seed(0)
    model = tfrobustprune.RobustPruneModel(tfrobustprune.gate(models.cifar_resnet(depth=8, width=4)))
    model.compile(optimizer=keras.optimizers.SGD(1e12))  # diverges within an epoch
    guard = TerminateOnNonFinite()
    x = sample.x_train[:256].astype("float32") / 255
    model.fit(x, sample.y_train[:256], batch_size=32, epochs=1, verbose=0, callbacks=[guard])
    assert guard.stopped_at is not None
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_target_below_the_floors_is_refused_before_training(tmp_path):
    command = _train_command(tmp_path) + ["--config.train.target_ratio=0.001"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "floors allow" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "override,field",
    [
        ("--config.train.epochs=0", "train.epochs"),
        ("--config.attack.name=cw", "attack.name"),
        ("--config.attack.epsilon=0.9", "attack.epsilon"),
        ("--config.attack.epsilon=-0.1", "attack.epsilon"),
        ("--config.train.cost=flops", "train.cost"),
        ("--config.model_name=vgg", "model_name"),
        ("--config.data.source=hub", "data.source"),
        ("--config.gates.min_channels=99", "gates.min_channels"),
        ("--config.train.jit_compile=yes", "train.jit_compile"),
    ],
)
def test_bad_config_values_exit_2_with_one_line(tmp_path, override, field):
    result = subprocess.run(
        _train_command(tmp_path) + [override], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    # TensorFlow's own start-up lines may precede it; ours is one line, the last, and no traceback.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: config.{field}: expected")
    assert result.stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in result.stderr


def test_missing_data_directory_exits_2(tmp_path):
    command = _train_command(tmp_path) + ["--config.data.source=npz", f"--config.data.path={tmp_path / 'none'}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_truncated_keras_file_names_the_file(tmp_path, tiny_gated_model):
    path = tmp_path / "model.keras"
    tiny_gated_model.save(path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(ModelFileError, match=r"model\.keras: not a valid \.keras archive"):
        load_keras_model(path)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_keras_model(tmp_path / "missing.keras")
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match="garbage.keras"):
        load_keras_model(garbage)


def test_corrupted_tflite_file_names_the_file(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match=r"model\.tflite: not a TFLite flatbuffer"):
        read_tflite(path)


def test_same_seed_gives_the_same_training(sample):
    def train_once():
        keras.utils.set_random_seed(0)
        model = tfrobustprune.RobustPruneModel(tfrobustprune.gate(models.cifar_resnet(depth=8, width=4)), seed=3)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        ds = tfrobustprune.data.train_dataset(sample.x_train[:128], sample.y_train[:128], 32, seed=1)
        model.fit(ds, epochs=1, verbose=0)
        return model.get_weights()

    for first, second in zip(train_once(), train_once()):
        np.testing.assert_allclose(first, second, atol=1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), floor=st.integers(1, 3), depth=st.sampled_from([8, 14]))
def test_stripping_is_exact_for_random_masks(images, seed, floor, depth):
    from helpers import randomize

    gated = randomize(tfrobustprune.gate(models.cifar_resnet(depth=depth, width=4), min_channels=floor), seed)
    slim = strip(gated)
    np.testing.assert_allclose(slim(images[:4]), gated(images[:4]), atol=1e-4)
    cost = tfrobustprune.CostModel(gated)
    assert cost.params(cost.hard_widths()) == slim.count_params()


@settings(max_examples=60, deadline=None)
@given(
    target=st.one_of(st.floats(-10, 10), st.just(0.0), st.just(1.0)),
    epsilon=st.one_of(st.floats(-1, 2), st.just(8 / 255)),
    epochs=st.integers(-3, 5),
    attack=st.sampled_from(["fgsm_rs", "n_fgsm", "pgd", "none", "fgsm", "cw", ""]),
)
def test_config_validation_accepts_exactly_the_valid_configs(target, epsilon, epochs, attack):
    config = quickstart.get_config()
    config.train.target_ratio, config.attack.epsilon, config.train.epochs = target, epsilon, epochs
    config.attack.name = attack
    valid = 0 < target <= 1 and 0 <= epsilon <= 64 / 255 and epochs >= 1 and attack in tfrobustprune.attacks.ATTACKS
    if valid:
        config_check.validate(config)
    else:
        with pytest.raises(config_check.ConfigError, match=r"config\.\w+\.\w+: expected .* Received: "):
            config_check.validate(config)


def test_write_json_atomic_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "new_dir" / "state.json")
    write_json_atomic(path, {"epoch": 1})
    write_json_atomic(path, {"epoch": 2, "best": [0.5]}, indent=2)
    with open(path) as f:
        assert json.load(f) == {"epoch": 2, "best": [0.5]}
    assert os.listdir(tmp_path / "new_dir") == ["state.json"]
    with pytest.raises(TypeError):
        write_json_atomic(path, {"epoch": object()})
    with open(path) as f:  # a failed write leaves the previous file intact
        assert json.load(f) == {"epoch": 2, "best": [0.5]}
    assert os.listdir(tmp_path / "new_dir") == ["state.json"]


@pytest.mark.parametrize("name", ["model_int8.tflite", "no_extension"])
def test_write_bytes_atomic_replaces_the_file_whole_and_leaves_no_temporary(tmp_path, name):
    path = tmp_path / "out" / name  # path-like, in a directory that does not exist yet
    write_bytes_atomic(path, b"first")
    write_bytes_atomic(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    with pytest.raises(TypeError):
        write_bytes_atomic(path, "text, not bytes")
    assert path.read_bytes() == b"\x00second"  # a failed write leaves the previous file intact
    assert os.listdir(tmp_path / "out") == [name]


def test_write_npz_atomic_keeps_names_and_order_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "weights" / "best.npz"  # path-like, in a directory that does not exist yet
    assert write_npz_atomic(path, np.zeros(2), np.ones(3)) == str(path)
    write_npz_atomic(path, np.arange(4), np.full(3, 5), x=np.full(2, 7))
    with np.load(path) as arrays:
        assert sorted(arrays.files) == ["arr_0", "arr_1", "x"]
        np.testing.assert_array_equal(arrays["arr_0"], np.arange(4))
        np.testing.assert_array_equal(arrays["arr_1"], [5, 5, 5])
        np.testing.assert_array_equal(arrays["x"], [7, 7])

    class Unwritable:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_npz_atomic(path, np.zeros(1), Unwritable())
    with np.load(path) as arrays:  # the previous file is intact
        np.testing.assert_array_equal(arrays["arr_1"], [5, 5, 5])
    assert os.listdir(tmp_path / "weights") == ["best.npz"]
    assert write_npz_atomic(tmp_path / "weights" / "plain", np.zeros(1)).endswith("plain.npz")  # as np.savez


def test_save_keras_atomic_round_trips_and_cleans_up_a_failed_save(tmp_path):
    model = models.cifar_resnet(depth=8, width=4)
    path = tmp_path / "models" / "m.keras"
    save_keras_atomic(model, path)
    loaded = load_keras_model(str(path))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)

    class Unsavable:
        def save(self, filepath):
            with open(filepath, "wb") as f:
                f.write(b"half a zip")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_keras_atomic(Unsavable(), path)
    assert os.listdir(tmp_path / "models") == ["m.keras"]  # the finished file stays, no temporary
    load_keras_model(str(path))
    with pytest.raises(ValueError, match=r"Received: path='m.h5'"):
        save_keras_atomic(model, "m.h5")
