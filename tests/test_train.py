import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from configs import quickstart
from tfrobustprune import train_lib
from tfrobustprune.config_check import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
    config = quickstart.get_config("epochs=2")
    config.data.train_size, config.data.eval_size = 256, 64
    config.train.batch_size = 64
    config.train.freeze_epoch = 1
    config.guard.probe_size = 32
    config.eval.pgd_steps = 2
    config.model.width = 8
    return config


def test_binary_end_to_end_on_a_tiny_subset(tmp_path):
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "tfrobustprune.train",
        "--config=configs/quickstart.py:epochs=2",
        f"--workdir={workdir}",
        "--config.data.train_size=256",
        "--config.data.eval_size=64",
        "--config.train.batch_size=64",
        "--config.guard.probe_size=32",
        "--config.eval.pgd_steps=2",
        "--config.train.freeze_epoch=1",
        "--config.model.width=8",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((workdir / "report.json").read_text())
    assert report["cost"]["target_ratio"] == 0.5
    assert abs(report["cost"]["relative_error"]) <= 0.05
    assert report["params"]["stripped"] < report["params"]["dense"]
    assert report["macs"]["stripped"] / report["macs"]["dense"] == pytest.approx(report["cost"]["achieved_ratio"])
    assert 0.0 <= report["validation"]["pgd_accuracy"] <= report["validation"]["natural_accuracy"] + 0.05
    assert report["gated_vs_stripped_max_abs_logit_diff"] <= 1e-4
    stripped = keras.models.load_model(workdir / "stripped.keras")
    assert stripped.count_params() == report["params"]["stripped"]
    assert (workdir / "gated.keras").exists() and (workdir / "tensorboard").is_dir()


def test_run_in_process_writes_consistent_report(tmp_path):
    report = train_lib.run(_tiny_config(), str(tmp_path))
    slim = keras.models.load_model(tmp_path / "stripped.keras")
    gated = keras.models.load_model(tmp_path / "gated.keras")
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(slim.predict(x, verbose=0), gated.predict(x, verbose=0), atol=1e-4)
    assert report["epochs"]["run"] == 2
    assert set(report["widths"]) and all(w["kept"] <= w["of"] for w in report["widths"].values())


def test_bad_config_exits_2_with_one_line(tmp_path):
    command = [
        sys.executable,
        "-m",
        "tfrobustprune.train",
        "--config=configs/quickstart.py",
        f"--workdir={tmp_path}",
        "--config.train.target_ratio=1.5",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "config.train.target_ratio" in result.stderr and "Traceback" not in result.stderr


def test_validate_rejects_unknown_model():
    config = _tiny_config()
    config.model_name = "vgg99"
    with pytest.raises(ConfigError, match=r"config.model_name: expected one of .*Received: 'vgg99'"):
        train_lib.run(config, "/nonexistent/never/created")
