"""Tests of the paper-table benchmark's pieces that run in their own processes."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfrobustprune import data, model_io, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None or importlib.util.find_spec("tf_keras") is None,
    reason="the TFMOT peer needs benchmarks/requirements-tfmot.txt",
)
@pytest.mark.parametrize("attack", ["n_fgsm", "pgd2"])
def test_tfmot_peer_prunes_to_the_target_and_its_weights_load_into_keras3(tmp_path, attack):
    sample = data.load_sample()
    np.savez(tmp_path / "train.npz", x=sample.x_train[:256], y=sample.y_train[:256])
    dense = models.resnet20()
    model_io.save_layer_weights(dense, tmp_path / "dense.npz")
    target = 40_010
    command = [
        sys.executable,
        "benchmarks/tfmot_peer.py",
        f"--weights={tmp_path / 'dense.npz'}",
        f"--data={tmp_path / 'train.npz'}",
        f"--target_nonzero={target}",
        "--epochs=2",
        f"--attack={attack}",
        f"--out={tmp_path / 'out'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "result.json").read_text())
    assert abs(report["nonzero"] - target) <= 0.001 * target
    assert report["attack"] == attack
    assert report["params"] == dense.count_params()
    pruned = models.resnet20()
    model_io.load_layer_weights(pruned, tmp_path / "out" / "weights.npz")
    assert sum(np.count_nonzero(w) for w in pruned.get_weights()) == report["nonzero"]
    for layer in pruned.layers:  # the pruned model is the trained one, not the dense start
        if layer.name == "logits":
            assert not np.allclose(layer.get_weights()[0], dense.get_layer("logits").get_weights()[0])


def test_paper_table_rejects_an_unknown_row_before_any_work(tmp_path):
    sample = data.load_sample()
    os.makedirs(tmp_path / "data")
    np.savez(tmp_path / "data" / "part0.npz", x=sample.x_train, y=sample.y_train)
    command = [
        sys.executable,
        "benchmarks/paper_table.py",
        "--rows=ours_0.16M,bogus",
        f"--data_dir={tmp_path / 'data'}",
        f"--workdir={tmp_path / 'runs'}",
        f"--out={tmp_path / 'table.json'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "unknown ['bogus']" in result.stderr
    assert "l1widths_0.16M" in result.stderr  # the diagnostic rows are known, though not run by default
    assert not (tmp_path / "runs").exists() and not (tmp_path / "table.json").exists()


def test_paper_table_with_relative_paths_gets_to_the_data_check(tmp_path):
    command = [
        sys.executable,
        os.path.join(ROOT, "benchmarks", "paper_table.py"),
        "--rows=ours_0.16M",
        "--data_dir=no_such_dir",
        "--workdir=runs",
        "--out=table.json",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "no_such_dir" in result.stderr and "AttributeError" not in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "table.json").exists()


def test_layer_weights_round_trip_and_name_mismatch(tmp_path):
    source, target = models.resnet20(width=8), models.resnet20(width=8)
    model_io.save_layer_weights(source, tmp_path / "w.npz")
    model_io.load_layer_weights(target, tmp_path / "w.npz")
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(model_io.ModelFileError, match=r"w.npz: layers \['stage1_block2_1_bn'"):
        model_io.load_layer_weights(models.cifar_resnet(depth=8, width=8), tmp_path / "w.npz")
