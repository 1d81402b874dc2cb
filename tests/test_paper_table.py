"""Tests of the paper-table benchmark's pieces that run in their own processes."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

from tfrobustprune import data, model_io, models


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_model_optimization") is None or importlib.util.find_spec("tf_keras") is None,
    reason="the TFMOT peer needs benchmarks/requirements-tfmot.txt",
)
@pytest.mark.parametrize("attack,decay", [("n_fgsm", "decoupled"), ("pgd2", "coupled")])
def test_tfmot_peer_prunes_to_the_target_and_its_weights_load_into_keras3(tmp_path, attack, decay):
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
        f"--weight_decay_mode={decay}",
        f"--out={tmp_path / 'out'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "result.json").read_text())
    assert abs(report["nonzero"] - target) <= 0.001 * target
    assert report["attack"] == attack and report["weight_decay_mode"] == decay
    assert report["params"] == dense.count_params()
    pruned = models.resnet20()
    model_io.load_layer_weights(pruned, tmp_path / "out" / "weights.npz")
    assert sum(np.count_nonzero(w) for w in pruned.get_weights()) == report["nonzero"]
    for layer in pruned.layers:  # the pruned model is the trained one, not the dense start
        if layer.name == "logits":
            assert not np.allclose(layer.get_weights()[0], dense.get_layer("logits").get_weights()[0])


def _run_table_on_sample(tmp_path, rows, copies=1):
    """Runs paper_table.py on `copies` copies of the shipped training sample, writing under `tmp_path`."""
    sample = data.load_sample()
    os.makedirs(tmp_path / "data")
    x, y = np.concatenate([sample.x_train] * copies), np.concatenate([sample.y_train] * copies)
    np.savez(tmp_path / "data" / "part0.npz", x=x, y=y)
    command = [
        sys.executable,
        "benchmarks/paper_table.py",
        f"--rows={rows}",
        f"--data_dir={tmp_path / 'data'}",
        f"--workdir={tmp_path / 'runs'}",
        f"--out={tmp_path / 'table.json'}",
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_paper_table_rejects_an_unknown_row_before_any_work(tmp_path):
    result = _run_table_on_sample(tmp_path, "ours_0.16M,bogus")
    assert result.returncode != 0
    assert "unknown ['bogus']" in result.stderr
    assert "l1widths_0.16M" in result.stderr  # the diagnostic rows are known, though not run by default
    assert not (tmp_path / "runs").exists() and not (tmp_path / "table.json").exists()


_PATHS_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "benchmarks"))
from absl import flags
import paper_table

flags.FLAGS([sys.argv[0], *sys.argv[3:]])
paper_table.resolve_paths()
print(json.dumps({"workdir": paper_table._WORKDIR.value, "out": paper_table._OUT.value,
                  "model": paper_table.model_file("ours_0.16M")}))
"""


@pytest.mark.parametrize(
    "flags,suffix",
    [
        ([], "_coupled"),
        (["--decay=coupled"], "_coupled"),
        (["--decay=decoupled"], ""),
        (["--pgd_warmup=6"], "_coupled_pgdwarmup6"),  # a warm-up is another table
        (["--attack=fgsm_rs", "--pgd_warmup=6"], "_coupled_fgsmrs_pgdwarmup6"),  # so is another attack
        (["--attack=pgd2", "--decay=decoupled"], "_pgd2"),
        # a method variant too: its model must not overwrite the table's own
        (["--pgd_warmup=6", "--ours_args=noise_eps=1"], "_coupled_pgdwarmup6_noiseeps1"),
        (["--ours_args=sensitivity=0.0,gate_start=10"], "_coupled_sensitivity0.0_gatestart10"),
    ],
)
def test_each_recipe_has_its_own_default_files(tmp_path, flags, suffix):
    out = _run_table_script(tmp_path, _PATHS_SCRIPT, *flags)
    assert out["workdir"] == os.path.join(ROOT, "runs", f"paper_table{suffix}")
    assert out["out"] == os.path.join(ROOT, "benchmarks", "results", f"paper_table{suffix}.json")
    assert out["model"] == f"resnet20_ours_0.16M{suffix}.keras"


def test_an_out_made_with_other_settings_is_refused_not_overwritten(tmp_path):
    recorded = {  # a decoupled table (no "decay" key) of 30 epochs on this directory
        "data": {"dir": str(tmp_path / "data"), "train": 1000, "val": 5000},
        "epochs": 30,
        "finetune_epochs": 10,
        "finetune_lr": 0.05,
        "attack": "n_fgsm",
        "strong_eval_size": 1000,
        "rows": [{"row": "ours_0.16M", "natural": 0.6}],
    }
    table = tmp_path / "table.json"
    table.write_text(json.dumps(recorded))
    result = _run_table_on_sample(tmp_path, "ours_0.16M", copies=3)  # 6,000 images: room for the 5,000 validation
    assert result.returncode != 0
    assert "decay: None there, 'coupled' here" in result.stderr and f"Received: --out={table}" in result.stderr
    assert json.loads(table.read_text()) == recorded  # untouched
    assert not (tmp_path / "runs").exists()  # refused before any work


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


_L1WIDTHS_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "benchmarks"))
from absl import flags
import paper_table
from tfrobustprune import magnitude, model_io, models

flags.FLAGS([sys.argv[0], f"--workdir={sys.argv[2]}", "--data_dir=unused", *sys.argv[3:]])
calls = []

def fake_train(row_dir, config_arg):
    calls.append(os.path.basename(row_dir))
    os.makedirs(row_dir, exist_ok=True)
    stripped = os.path.join(row_dir, "stripped.keras")
    dense = models.cifar_resnet(depth=8, width=8)
    if os.path.basename(row_dir) == "dense":
        dense.save(stripped)
    elif os.path.basename(row_dir).startswith("ours"):
        magnitude.l1_prune(dense, "params", 0.5)[0].save(stripped)
    calls.append(config_arg)
    return {"epochs": {"configured": 3, "catastrophic_overfitting_at": None, "run": 3,
                       "fallback_at": 1 if "init_model" in config_arg else None,
                       "final_attack": "pgd2" if "init_model" in config_arg else None},
            # the dense run predates train.jit_compile; the fine-tuning compiled with XLA
            "config": {"train": {"jit_compile": True}} if "init_model" in config_arg else {"train": {}},
            "wall_time_seconds": {"train": 2.0}}

paper_table.train = fake_train
context = {}
row = paper_table.run_row("l1widths_0.16M", context)
pruned = model_io.load_keras_model(os.path.join(sys.argv[2], "l1widths_0.16M", "l1_pruned.keras"))
ours = model_io.load_keras_model(context["ours_0.16M"]["model"])
print(json.dumps({"calls": calls, "method": row["method"], "epochs": row["epochs"],
                  "fallback_at": row["fallback_at"], "jit_compile": row["jit_compile"], "same_widths":
                  magnitude.group_widths(pruned) == magnitude.group_widths(ours),
                  "default_rows": list(paper_table.ROWS)}))
"""


def _run_table_script(tmp_path, text, *flags):
    """Runs a script driving paper_table with a fake trainer; returns the JSON it prints last."""
    # Its own process: the benchmark's absl flags would clash with tflite_export's in this one.
    script = tmp_path / "run_row.py"
    script.write_text(text)
    result = subprocess.run(
        [sys.executable, str(script), ROOT, str(tmp_path / "runs"), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_l1widths_row_prunes_the_dense_model_to_the_widths_of_ours(tmp_path):
    out = _run_table_script(tmp_path, _L1WIDTHS_SCRIPT)
    trained = out["calls"][::2]
    assert trained == ["dense", "ours_0.16M", "finetune"]  # each needed run once, ours before the pruning
    assert "init_model=" in out["calls"][-1] and "l1widths_0.16M/l1_pruned.keras" in out["calls"][-1]
    assert out["same_widths"]
    assert "to the widths of ours_0.16M" in out["method"] and "pgd2 after epoch 1" in out["method"]
    assert out["epochs"] == 6 and out["fallback_at"] == 1
    assert out["jit_compile"] == {"dense": "auto", "finetune": True}  # a report without the field: "auto"
    assert "l1widths_0.16M" not in out["default_rows"]  # diagnostic: only when --rows names it
    configs = out["calls"][1::2]
    assert [c.endswith(",decay=coupled") for c in configs] == [True, True, True]  # the default rule, named
    assert out["method"].endswith("coupled weight decay")


_OURSWIDTHS_SCRIPT = _L1WIDTHS_SCRIPT.replace(
    """row = paper_table.run_row("l1widths_0.16M", context)
pruned = model_io.load_keras_model(os.path.join(sys.argv[2], "l1widths_0.16M", "l1_pruned.keras"))""",
    """row = paper_table.run_row("ourswidths_0.16M", context)
pruned = model_io.load_keras_model(os.path.join(sys.argv[2], "ourswidths_0.16M", "reinitialized.keras"))
import numpy as np
ours_model = model_io.load_keras_model(context["ours_0.16M"]["model"])
kernels = [(w, v) for w, v in zip(ours_model.weights, pruned.weights) if "kernel" in w.path]
assert kernels and all(w.shape == v.shape for w, v in kernels)
assert not any(np.allclose(np.asarray(w), np.asarray(v)) for w, v in kernels), "weights were copied"
assert row["model"].endswith(os.path.join("ourswidths_0.16M", "train", "stripped.keras"))""",
)


def test_ourswidths_row_trains_the_architecture_of_ours_from_fresh_weights(tmp_path):
    out = _run_table_script(tmp_path, _OURSWIDTHS_SCRIPT)
    assert out["calls"][::2] == ["ours_0.16M", "train"]  # no dense run: nothing is pruned from it
    assert out["calls"][-1].startswith("dense,epochs=30,attack=n_fgsm,init_model=")
    assert out["calls"][-1].endswith("ourswidths_0.16M/reinitialized.keras,decay=coupled")
    assert out["same_widths"]
    assert out["method"].startswith("the widths of ours_0.16M, re-initialized and trained from scratch")
    assert "pgd2 after epoch 1" in out["method"] and out["epochs"] == 3  # this run only, not ours_0.16M's
    assert "ourswidths_0.16M" not in out["default_rows"]


def test_decoupled_decay_reaches_every_trainer_run_of_a_row(tmp_path):
    out = _run_table_script(tmp_path, _L1WIDTHS_SCRIPT, "--decay=decoupled")
    configs = out["calls"][1::2]
    assert [c.endswith(",decay=decoupled") for c in configs] == [True, True, True]  # dense, ours, fine-tuning
    assert "weight decay" not in out["method"]


def test_pgd_warmup_reaches_the_runs_from_scratch_not_the_fine_tuning(tmp_path):
    out = _run_table_script(tmp_path, _L1WIDTHS_SCRIPT, "--pgd_warmup=6")
    configs = dict(zip(out["calls"][::2], out["calls"][1::2]))
    assert configs["dense"].endswith(",decay=coupled,pgd_warmup=6")
    assert configs["ours_0.16M"].endswith(",decay=coupled,pgd_warmup=6")
    assert configs["finetune"].endswith(",decay=coupled")  # starts from the robust dense model
    assert out["method"].startswith("dense 3 ep (n_fgsm, PGD-2 for epochs 1-6) + L1-norm filter pruning")


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--pgd_warmup=20", "--pgd_warmup must be in [0, --epochs - --finetune_epochs) = [0, 20). Received: 20"),
        ("--ours_args=pgd_warmup=6", "['pgd_warmup=6'] set what the table sets itself"),
    ],
)
def test_a_warmup_the_dense_row_cannot_finish_or_given_twice_is_refused_before_any_work(tmp_path, flag, message):
    command = [sys.executable, "benchmarks/paper_table.py", flag, "--data_dir=unused", f"--workdir={tmp_path / 'r'}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "r").exists()


_OURS_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "benchmarks"))
from absl import flags
import paper_table

flags.FLAGS([sys.argv[0], f"--workdir={sys.argv[2]}", "--data_dir=unused", *sys.argv[3:]])
calls = []

def fake_train(row_dir, config_arg):
    calls.append(config_arg)
    return {"epochs": {"configured": 30, "catastrophic_overfitting_at": None, "run": 30},
            "config": {"train": {"jit_compile": True}}, "wall_time_seconds": {"train": 2.0}}

paper_table.train = fake_train
row = paper_table.run_row("ours_0.16M", {})
print(json.dumps({"calls": calls, "method": row["method"]}))
"""


@pytest.mark.parametrize(
    "flags,suffix,method_text",
    [
        (["--decay=decoupled"], ",decay=decoupled", None),
        (
            ["--ours_args=sensitivity=0.0,gate_start=10", "--decay=decoupled"],
            ",sensitivity=0.0,gate_start=10,decay=decoupled",
            "sensitivity=0.0 gate_start=10",
        ),
        ([], ",decay=coupled", "coupled weight decay"),
        (["--ours_args=center=0"], ",center=0,decay=coupled", "center=0, coupled weight decay"),
    ],
)
def test_ours_rows_pass_extra_config_args_only_when_given(tmp_path, flags, suffix, method_text):
    out = _run_table_script(tmp_path, _OURS_SCRIPT, *flags)
    assert out["calls"] == [f"cost=params,target=0.584,epochs=30,attack=n_fgsm{suffix}"]
    if method_text:
        assert out["method"].endswith(method_text)
    else:
        assert out["method"] == "in-train gates + hardware loss, n_fgsm (tfrobustprune)"


def test_scratch_rows_train_the_widest_narrow_resnet20_within_the_size(tmp_path):
    out = _run_table_script(tmp_path, _OURS_SCRIPT.replace('run_row("ours_0.16M"', 'run_row("scratch_0.04M"'))
    assert out["calls"] == ["dense,width=6,epochs=30,attack=n_fgsm,decay=coupled"]  # the pruned rows' 30 epochs
    assert out["method"].startswith("ResNet20 of base width 6 (dense: 16) from scratch")
    limit = 0.146 * models.resnet20().count_params()
    assert models.resnet20(width=6).count_params() <= limit < models.resnet20(width=7).count_params()


@pytest.mark.parametrize("row,epochs", [("densefull", 30), ("dense", 20)])
def test_densefull_row_trains_the_dense_model_for_the_whole_budget(tmp_path, row, epochs):
    out = _run_table_script(tmp_path, _OURS_SCRIPT.replace('run_row("ours_0.16M"', f'run_row("{row}"'))
    assert out["calls"] == [f"dense,epochs={epochs},attack=n_fgsm,decay=coupled"]  # dense: --epochs - finetune
    assert out["method"].startswith("fast adversarial training (n_fgsm), no pruning")


def test_ours_args_may_not_set_what_the_table_sets(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "paper_table.py"),
            f"--workdir={tmp_path}",
            "--ours_args=sensitivity=0.0,epochs=5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "--ours_args: ['epochs=5']" in result.stderr and "Received: --ours_args=sensitivity=0.0,epochs=5" in (
        result.stderr
    )
    assert not os.listdir(tmp_path)  # refused before any work


_TRAIN_COMMAND_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "benchmarks"))
from absl import flags
import paper_table

flags.FLAGS([sys.argv[0], f"--workdir={sys.argv[2]}", "--data_dir=unused", *sys.argv[3:]])
arg = "cost=params,target=0.584,epochs=30,attack=n_fgsm,decay=coupled"
row_dir = os.path.join(sys.argv[2], "ours_0.16M")
commands = []

def fake_run(command, log_path):
    commands.append(command)
    config = paper_table.resolved_config(arg)
    config["train"]["jit_compile"] = not config["train"]["jit_compile"]  # trained under the other setting
    with open(os.path.join(row_dir, "report.json"), "w") as f:
        json.dump({"config": config, "marker": 7}, f)

paper_table._run_logged = fake_run
first = paper_table.train(row_dir, arg)["marker"]
reused = paper_table.train(row_dir, arg)["marker"]  # the cached report, whatever its XLA setting
print(json.dumps({"commands": commands, "first": first, "reused": reused}))
"""


@pytest.mark.parametrize("flags,override", [([], None), (["--jit_compile=false"], "--config.train.jit_compile=false")])
def test_jit_compile_flag_reaches_the_trainer_only_when_given(tmp_path, flags, override):
    out = _run_table_script(tmp_path, _TRAIN_COMMAND_SCRIPT, *flags)
    assert len(out["commands"]) == 1  # the second call reused the report
    overrides = [part for part in out["commands"][0] if part.startswith("--config.train.jit_compile")]
    assert overrides == ([override] if override else [])
    assert out["first"] == out["reused"] == 7


_CACHED_REPORT_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "benchmarks"))
from absl import flags
import paper_table

flags.FLAGS([sys.argv[0], f"--workdir={sys.argv[2]}", "--data_dir=unused"])
arg = "cost=params,target=0.584,epochs=30,attack=n_fgsm,decay=decoupled"
row_dir = os.path.join(sys.argv[2], "ours_0.16M")
config = paper_table.resolved_config(arg)
del config["train"]["weight_decay_mode"]  # a report written before the field existed: absent means "decoupled"
config["train"]["verbose"] = 1  # how much the run printed does not matter
os.makedirs(row_dir)
with open(os.path.join(row_dir, "report.json"), "w") as f:
    json.dump({"config": config, "marker": 7}, f)
reused = paper_table.train(row_dir, arg)["marker"]
config["train"]["cost_sensitivity"] = 0.25  # the config file's default changed after this run
with open(os.path.join(row_dir, "report.json"), "w") as f:
    json.dump({"config": config}, f)
try:
    paper_table.train(row_dir, arg)
    refused = ""
except paper_table.RowError as error:
    refused = str(error)
print(json.dumps({"reused": reused, "refused": refused}))
"""


def test_a_cached_trainer_row_is_reused_only_under_the_config_it_was_trained_with(tmp_path):
    out = _run_table_script(tmp_path, _CACHED_REPORT_SCRIPT)
    assert out["reused"] == 7  # same config (absent optional field, other verbosity): no training started
    assert "train.cost_sensitivity: 0.25 -> 0.0" in out["refused"] and "pass another --workdir" in out["refused"]


_LATENCY_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "benchmarks"))
from absl import flags
import paper_table
from tflite_export import conversion
from tfrobustprune import data, model_io, models

split = data.load_sample().subset(train_size=100, val_size=10)
models_dir = os.path.join(sys.argv[2], "models")
flags.FLAGS([sys.argv[0], f"--workdir={sys.argv[2]}", f"--models_dir={models_dir}", "--data_dir=unused",
             "--latency_runs=12", "--latency_rounds=3", "--calibration_size=20"])
os.makedirs(models_dir)
for name, width in (("small", 4), ("large", 16)):
    models.cifar_resnet(depth=8, width=width).save(os.path.join(models_dir, paper_table.model_file(name)))
# A row measured by measure() keeps its int8 file: that file is timed, even with no .keras beside it.
calibration = conversion.representative_images(split.x_train, 20)
int8 = conversion.convert(models.cifar_resnet(depth=8, width=8), ["int8"], calibration)["int8"]
model_io.write_bytes_atomic(paper_table._int8_path("kept"), int8)
results = {"small": {"row": "small", "int8_latency_ms": 99.0}, "large": {"row": "large"}, "kept": {"row": "kept"},
           "failed": {"row": "failed", "error": "RowError: x"}, "gone": {"row": "gone", "int8_latency_ms": 5.0}}
latency = paper_table.time_rows_together(results, split)
print(json.dumps({"results": results, "latency": latency}))
"""


def test_every_row_latency_is_timed_in_one_interleaved_pass(tmp_path):
    out = _run_table_script(tmp_path, _LATENCY_SCRIPT)
    results, latency = out["results"], out["latency"]
    assert latency["rows"] == ["kept", "large", "small"] and latency["rounds"] == 3 and latency["runs_per_round"] == 4
    assert 0 < results["small"]["int8_latency_ms"] < 99.0  # the old, separately timed figure is replaced
    assert results["large"]["int8_latency_ms"] > 0 and results["large"]["int8_latency_cpu_ms"] > 0
    assert results["kept"]["int8_latency_ms"] > 0
    assert results["failed"] == {"row": "failed", "error": "RowError: x"}
    assert results["gone"]["int8_latency_ms"] is None  # its model file is missing: no stale figure is kept
