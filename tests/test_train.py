import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import ROOT

from configs import quickstart
from tfrobustprune import config_check, train_lib
from tfrobustprune.callback import RobustPruneCallback
from tfrobustprune.config_check import ConfigError
from tfrobustprune.robust_model import RobustPruneModel


def _shrink(config, train_size=256, eval_size=64, probe_size=32, pgd_steps=2):
    """A config cut down to a few seconds of work: small subsets, width 8, batch 64."""
    config.data.train_size, config.data.eval_size = train_size, eval_size
    config.train.batch_size = 64
    config.guard.probe_size = probe_size
    config.eval.pgd_steps = pgd_steps
    config.model.width = 8
    return config


def _tiny_config():
    config = _shrink(quickstart.get_config("epochs=2"))
    config.train.freeze_epoch = 1
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

    # The overfitting diagnosis reads the run's last checkpoint back with the same config.
    out = tmp_path / "co.json"
    overrides = [c for c in command[4:] if c.startswith("--config.")]
    diagnosis = [sys.executable, "benchmarks/co_diagnosis.py", command[3], f"--workdir={workdir}", "--size=64"]
    result = subprocess.run(
        diagnosis + overrides + [f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(out.read_text())
    assert found["checkpoint_epoch"] == 2 and found["attack"] == "fgsm_rs" and found["attack_reason"] == "config"
    assert found["val"]["natural"] == pytest.approx(report["validation"]["natural_accuracy"], abs=1.5 / 64)
    for split in ("train", "val"):
        assert found[split]["images"] == 64
        assert 0.0 <= found[split]["pgd10"] <= found[split]["fgsm"] + 0.1
        assert isinstance(found[split]["catastrophic_overfitting"], bool)
    # A config that does not match the run (another width) is refused, not diagnosed half-loaded.
    wrong = [c for c in overrides if not c.startswith("--config.model.width")] + ["--config.model.width=16"]
    result = subprocess.run(diagnosis + wrong, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "--config does not match the run in --workdir" in result.stderr, result.stderr[-2000:]


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


def _resnet20_tiny_config(arg):
    from configs import resnet20_cifar10

    config = resnet20_cifar10.get_config(arg)
    config.data.source, config.data.path = "sample", ""
    return _shrink(config, train_size=128, eval_size=32, probe_size=0, pgd_steps=1)


def test_dense_config_trains_without_pruning(tmp_path):
    config = _resnet20_tiny_config("dense,epochs=1")
    assert (config.train.target_ratio, config.train.lambda_max, config.train.freeze_epoch) == (1.0, 0.0, 0)
    report = train_lib.run(config, str(tmp_path))
    assert report["params"]["stripped"] == report["params"]["dense"]
    assert report["cost"]["achieved_ratio"] == 1.0


def test_init_model_fine_tunes_a_given_pruned_model(tmp_path):
    from tfrobustprune import magnitude, models

    pruned, _ = magnitude.l1_prune(models.resnet20(width=8), "params", 0.5)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    before = pruned.get_layer("logits").get_weights()[0]
    report = train_lib.run(_resnet20_tiny_config(f"dense,epochs=1,init_model={path}"), str(tmp_path / "run"))
    tuned = keras.models.load_model(tmp_path / "run" / "stripped.keras")
    assert tuned.count_params() == pruned.count_params() == report["params"]["dense"]
    assert not np.allclose(tuned.get_layer("logits").get_weights()[0], before)  # it trained


def test_init_model_errors_name_the_field(tmp_path):
    from tfrobustprune.model_io import ModelFileError

    with pytest.raises(ConfigError, match=r"config.init_model.*Received: 'model.h5'"):
        train_lib.run(_resnet20_tiny_config("dense,init_model=model.h5"), str(tmp_path))
    with pytest.raises(ModelFileError, match=r"missing.keras: no such model file"):
        train_lib.run(_resnet20_tiny_config(f"dense,init_model={tmp_path}/missing.keras"), str(tmp_path))


def test_cost_sensitivity_reaches_the_model_and_is_checked():
    model = train_lib.build_model(_resnet20_tiny_config("sensitivity=1.0"), 10, steps_per_epoch=4)
    assert model.cost_sensitivity == 1.0
    assert train_lib.build_model(_resnet20_tiny_config(""), 10, steps_per_epoch=4).cost_sensitivity == 0.0
    with pytest.raises(
        ConfigError, match=r"config.train.cost_sensitivity: expected a number in \[0, 1\]. Received: 2.0"
    ):
        train_lib.run(_resnet20_tiny_config("sensitivity=2.0"), "/nonexistent/never/created")


def test_importance_and_center_reach_the_model_and_are_checked():
    model = train_lib.build_model(_resnet20_tiny_config("importance=0.5,center=0"), 10, steps_per_epoch=4)
    assert (model.importance_pressure, model.center_task_gradient) == (0.5, False)
    default = train_lib.build_model(_resnet20_tiny_config(""), 10, steps_per_epoch=4)
    assert (default.importance_pressure, default.center_task_gradient) == (1.0, True)
    dense = train_lib.build_model(_resnet20_tiny_config("dense"), 10, steps_per_epoch=4)  # no gate moves
    assert (dense.cost_sensitivity, dense.importance_pressure, dense.center_task_gradient) == (1.0, 0.0, False)
    with pytest.raises(ValueError, match=r"\['center', 'importance'\] set the gates' method; 'dense' moves no gate"):
        _resnet20_tiny_config("dense,importance=0.5,center=0")
    with pytest.raises(ConfigError, match=r"config.train.importance_pressure: expected a number >= 0. Received: -1.0"):
        train_lib.run(_resnet20_tiny_config("importance=-1.0"), "/nonexistent/never/created")
    config = _resnet20_tiny_config("")
    config.train = dict(config.train.to_dict(), center_task_gradient="yes")  # a config file, not the arg parser
    with pytest.raises(ConfigError, match=r"config.train.center_task_gradient: expected a bool. Received: 'yes'"):
        train_lib.run(config, "/nonexistent/never/created")


def test_gate_start_delays_the_pruning_schedule():
    from configs import resnet20_cifar10

    default = resnet20_cifar10.get_config("epochs=30").train  # a third of the epochs dense
    assert (default.lambda_warmup_epochs, default.target_glide_epochs, default.freeze_epoch) == (10, 8, 22)
    early = resnet20_cifar10.get_config("epochs=30,gate_start=0").train  # one warm-up epoch
    assert (early.lambda_warmup_epochs, early.target_glide_epochs, early.freeze_epoch) == (1, 12, 18)
    short = resnet20_cifar10.get_config("epochs=6").train  # 2 dense epochs, the gates' schedule over 4
    assert (short.lambda_warmup_epochs, short.target_glide_epochs, short.freeze_epoch) == (2, 1, 4)
    with pytest.raises(ValueError, match=r"gate_start.*Received: gate_start=30"):
        resnet20_cifar10.get_config("epochs=30,gate_start=30")


def test_gates_hold_through_the_dense_epochs_of_gate_start_then_meet_the_target(tmp_path):
    config = _resnet20_tiny_config("cost=params,target=0.7,epochs=4,gate_start=2,sensitivity=0.0")
    report = train_lib.run(config, str(tmp_path))
    history = report["history"]
    assert history["hw_lambda"][:2] == [0.0, 0.0] and history["hw_lambda"][2] > 0.0
    assert history["hard_cost_ratio"][:2] == [1.0, 1.0]  # no gate moved before the hardware loss
    assert report["cost"]["achieved_ratio"] <= 0.7 and report["params"]["stripped"] < report["params"]["dense"]


def test_weight_decay_mode_picks_where_the_decay_is_applied():
    coupled = train_lib.build_model(_resnet20_tiny_config("decay=coupled"), 10, steps_per_epoch=4)
    assert coupled.weight_decay == 5e-4 and coupled.optimizer.weight_decay is None
    decoupled = train_lib.build_model(_resnet20_tiny_config("decay=decoupled"), 10, steps_per_epoch=4)
    assert decoupled.weight_decay == 0.0 and decoupled.optimizer.weight_decay == 5e-4
    config = _resnet20_tiny_config("decay=l2")
    with pytest.raises(ConfigError, match=r"config.train.weight_decay_mode: .*Received: 'l2'"):
        train_lib.run(config, "/nonexistent/never/created")
    older = _resnet20_tiny_config("decay=coupled")  # a config written before the option existed
    del older.train["weight_decay_mode"]
    from tfrobustprune import config_check

    config_check.validate(older)
    assert config_check.weight_decay_mode(older) == "decoupled"
    legacy = train_lib.build_model(older, 10, steps_per_epoch=4)
    assert legacy.weight_decay == 0.0 and legacy.optimizer.weight_decay == 5e-4


def test_resnet20_config_pgd_k_attack():
    from configs import resnet20_cifar10
    from tfrobustprune import config_check

    config = resnet20_cifar10.get_config("attack=pgd2")
    assert (config.attack.name, config.attack.pgd_steps) == ("pgd", 2)
    assert config.attack.step == pytest.approx(config.attack.epsilon / 2)
    config_check.validate(config)
    with pytest.raises(ValueError, match=r"Received: attack='pgd0'"):
        resnet20_cifar10.get_config("attack=pgd0")
    assert resnet20_cifar10.get_config("attack=n_fgsm").attack.pgd_steps == 10


def test_n_fgsm_noise_config_arg_reaches_the_model_and_older_configs_keep_the_default():
    from configs import resnet20_cifar10
    from tfrobustprune import config_check

    config = resnet20_cifar10.get_config("noise_eps=1")
    assert config.attack.noise == pytest.approx(config.attack.epsilon)
    config_check.validate(config)
    assert train_lib.build_model(config, 10, steps_per_epoch=4).noise == pytest.approx(8 / 255)
    default = resnet20_cifar10.get_config("")
    assert default.attack.noise == 0.0 and train_lib.build_model(default, 10, steps_per_epoch=4).noise is None
    del default.attack["noise"]  # a config written before the field: N-FGSM's 2 eps
    config_check.validate(default)
    assert train_lib.config_changes(default, resnet20_cifar10.get_config("")) == []
    with pytest.raises(ValueError, match=r"'noise_eps' must be >= 0, and 0 unless attack=n_fgsm.*attack=fgsm_rs"):
        resnet20_cifar10.get_config("attack=fgsm_rs,noise_eps=1")
    fgsm_rs = resnet20_cifar10.get_config("attack=fgsm_rs")
    fgsm_rs.attack.noise = 0.01
    with pytest.raises(ConfigError, match=r"config.attack.noise: expected 0 unless attack.name is 'n_fgsm'"):
        config_check.validate(fgsm_rs)
    fgsm_rs.attack.name, fgsm_rs.attack.noise = "n_fgsm", 2.0
    with pytest.raises(ConfigError, match=r"config.attack.noise: expected a half-width in \[0, 1\].*Received: 2.0"):
        config_check.validate(fgsm_rs)


def test_step_eps_config_arg_sets_the_single_step_attacks_step_and_survives_the_pgd_warmup():
    from configs import resnet20_cifar10
    from tfrobustprune import config_check
    from tfrobustprune.callback import RobustPruneCallback

    config = resnet20_cifar10.get_config("attack=fgsm_rs,step_eps=1,pgd_warmup=1")
    assert config.attack.step == pytest.approx(config.attack.epsilon)
    config_check.validate(config)
    model = train_lib.build_model(config, 10, steps_per_epoch=4)
    assert (model.attack, model.step) == ("fgsm_rs", pytest.approx(8 / 255))
    callback = RobustPruneCallback(fallback_steps=2, pgd_warmup_epochs=1, verbose=0)
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    assert model.attack == "pgd"
    callback.on_epoch_begin(1)  # after the warm-up: FGSM-RS again, with the configured step, not its 1.25 eps
    assert (model.attack, model.step) == ("fgsm_rs", pytest.approx(8 / 255))
    assert resnet20_cifar10.get_config("attack=fgsm_rs").attack.step == 0.0  # 0: the attack's default
    for bad in ("attack=pgd2,step_eps=1", "attack=fgsm_rs,step_eps=-1"):
        with pytest.raises(ValueError, match=r"'step_eps' must be >= 0, and 0 unless attack=n_fgsm or fgsm_rs"):
            resnet20_cifar10.get_config(bad)


def _strip_at_freeze_config():
    config = _shrink(quickstart.get_config("epochs=3"), probe_size=0)  # no guard: a tiny run may "collapse"
    config.train.freeze_epoch, config.train.strip_at_freeze = 2, True
    return config


def test_strip_at_freeze_trains_the_stripped_model_after_the_freeze(tmp_path):
    config = _strip_at_freeze_config()
    report = train_lib.run(config, str(tmp_path))
    assert report["epochs"]["run"] == 3 and report["epochs"]["stripped_at"] == 2
    assert len(report["history"]["loss"]) == 3
    assert abs(report["cost"]["relative_error"]) <= 0.05
    at_freeze = keras.models.load_model(tmp_path / train_lib.SLIM_FILE)
    final = keras.models.load_model(tmp_path / "stripped.keras")
    assert final.count_params() == at_freeze.count_params() == report["params"]["stripped"]
    assert report["params"]["stripped"] < report["params"]["dense"]
    # The epoch after the freeze trained the stripped model, on the schedule of the whole run.
    assert any(not np.array_equal(a, b) for a, b in zip(final.get_weights(), at_freeze.get_weights()))
    freeze = json.loads((tmp_path / train_lib.FREEZE_FILE).read_text())
    steps = 256 // 64
    assert freeze["optimizer_steps"] == 2 * steps and report["epochs"]["optimizer_steps"] == 3 * steps
    assert freeze["attack_counter"] > 0
    assert freeze["widths"] == report["widths"]
    # The strip at the freeze is checked on the gated model of the pruning phase, with its closed channels.
    gated_at_freeze = keras.models.load_model(tmp_path / train_lib.GATED_AT_FREEZE_FILE)
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(at_freeze.predict(x, verbose=0), gated_at_freeze.predict(x, verbose=0), atol=1e-4)
    assert report["gated_vs_stripped_max_abs_logit_diff"] == freeze["gated_vs_stripped_max_abs_logit_diff"] <= 1e-4
    # gated.keras is the final model, gated: it strips to stripped.keras.
    gated = keras.models.load_model(tmp_path / "gated.keras")
    np.testing.assert_allclose(gated.predict(x, verbose=0), final.predict(x, verbose=0), atol=1e-4)
    # Cost ratios in the history stay relative to the dense model after the switch.
    assert report["history"]["hard_cost_ratio"][-1] == pytest.approx(report["cost"]["achieved_ratio"])


def test_strip_at_freeze_resumes_after_the_pruning_phase_without_redoing_it(tmp_path):
    config = _strip_at_freeze_config()
    first = train_lib.run(config, str(tmp_path))
    # A run stopped during the stripped epochs: the pruning phase is kept, only the stripped epoch runs again.
    for name in ("stripped.keras", "report.json"):
        os.remove(tmp_path / name)
    shutil.rmtree(tmp_path / train_lib.SLIM_BACKUP)
    gated_mtime = os.path.getmtime(tmp_path / train_lib.GATED_AT_FREEZE_FILE)
    again = train_lib.run(config, str(tmp_path))
    assert again["epochs"]["run"] == 1
    assert os.path.getmtime(tmp_path / train_lib.GATED_AT_FREEZE_FILE) == gated_mtime
    assert again["widths"] == first["widths"] and again["params"] == first["params"]
    # A finished run resumes to its checkpoint: no epoch runs and the final weights are those saved.
    final = keras.models.load_model(tmp_path / "stripped.keras").get_weights()
    done = train_lib.run(config, str(tmp_path))
    assert done["epochs"]["run"] == 0
    for a, b in zip(final, keras.models.load_model(tmp_path / "stripped.keras").get_weights()):
        np.testing.assert_array_equal(a, b)
    # The stripped phase's checkpoint alone is also only resumed under the same config.
    shutil.rmtree(tmp_path / "backup")
    changed = _strip_at_freeze_config()
    changed.train.learning_rate = 0.5
    with pytest.raises(ConfigError, match="learning_rate"):
        train_lib.run(changed, str(tmp_path))


def test_strip_at_freeze_carries_a_switch_to_pgd_into_the_stripped_phase(tmp_path, monkeypatch):
    config = _shrink(quickstart.get_config("epochs=3"))
    config.train.freeze_epoch, config.train.strip_at_freeze = 2, True
    config.train.jit_compile = True  # also: XLA recompiles the step on the switch, and around the strip
    config.guard.fallback_steps = 2
    # Probed PGD accuracy: a relative collapse at epoch 2 (0.05 < half of 0.3), then steady.
    probed = iter([0.3, 0.05, 0.3, 0.3, 0.3, 0.3])
    monkeypatch.setattr(RobustPruneCallback, "_probe_pgd_accuracy", lambda self: next(probed))
    report = train_lib.run(config, str(tmp_path))
    freeze = json.loads((tmp_path / train_lib.FREEZE_FILE).read_text())
    assert freeze["fallback_at"] == 2 and freeze["final_attack"] == "pgd2"
    # The stripped model trained its epoch with PGD-2 too, and its guard knows the switch.
    epochs = report["epochs"]
    assert epochs["run"] == 3 and epochs["final_attack"] == "pgd2"
    assert epochs["fallback_at"] == 2 and epochs["catastrophic_overfitting_at"] is None
    assert report["jit_compile"] == [True, True]  # both fits compiled with XLA, as configured
    guard_path = tmp_path / train_lib.SLIM_BACKUP / "guard.json"
    guard = json.loads(guard_path.read_text())
    assert guard["fallback_at"] == 1 and guard["best_epoch"] is not None
    # Resumed with the stripped phase's state on disk: that state is kept, not re-seeded from the freeze.
    os.remove(tmp_path / "report.json")
    again = train_lib.run(config, str(tmp_path))
    assert again["epochs"]["run"] == 0 and again["epochs"]["final_attack"] == "pgd2"
    assert json.loads(guard_path.read_text()) == guard


def test_strip_at_freeze_needs_a_freeze_epoch_before_the_end():
    config = _strip_at_freeze_config()
    config.train.freeze_epoch = 3
    with pytest.raises(ConfigError, match=r"config.train.freeze_epoch: .*strip_at_freeze.*Received: 3"):
        train_lib.run(config, "/nonexistent/never/created")
    fields = config.to_dict()
    fields["train"].update(freeze_epoch=2, strip_at_freeze="yes")  # a ConfigDict would refuse the str itself
    with pytest.raises(ConfigError, match=r"config.train.strip_at_freeze: expected a bool. Received: 'yes'"):
        config_check.validate(fields)


def test_resnet20_config_strip_arg():
    from configs import resnet20_cifar10

    assert resnet20_cifar10.get_config("strip,target=0.146").train.strip_at_freeze is True
    assert resnet20_cifar10.get_config().train.strip_at_freeze is False


def test_jit_compile_reaches_the_model(monkeypatch):
    passed = []
    compile_model = RobustPruneModel.compile
    monkeypatch.setattr(
        RobustPruneModel, "compile", lambda self, **kwargs: passed.append(kwargs) or compile_model(self, **kwargs)
    )
    config = _strip_at_freeze_config()
    del config.train["jit_compile"]  # a config written before the field: Keras' "auto"
    train_lib.build_model(config, 10, 4)
    config.train.jit_compile = True
    assert train_lib.build_model(config, 10, 4).jit_compile is True
    assert [kwargs["jit_compile"] for kwargs in passed] == ["auto", True]


@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_jit_compile_takes_a_bool_or_auto(value):
    fields = _strip_at_freeze_config().to_dict()
    fields["train"]["jit_compile"] = value
    expected = f"config.train.jit_compile: expected one of [True, False, 'auto']. Received: {value!r}"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        config_check.validate(fields)
    for valid in (True, False, "auto"):
        fields["train"]["jit_compile"] = valid
        config_check.validate(fields)
    # Keras drops XLA under op determinism, with only a warning: the combination is refused instead.
    fields["deterministic"] = True
    config_check.validate({**fields, "train": {**fields["train"], "jit_compile": "auto"}})
    with pytest.raises(ConfigError, match=r"config.train.jit_compile: expected False or 'auto' with determ"):
        config_check.validate({**fields, "train": {**fields["train"], "jit_compile": True}})


def test_guard_pgd_warmup_config_field_is_checked_and_older_configs_keep_it_off():
    from configs import resnet20_cifar10
    from tfrobustprune import config_check

    config = resnet20_cifar10.get_config()
    assert config_check.optional(config, "guard.pgd_warmup_epochs") == 0
    config.guard.pgd_warmup_epochs = -2
    with pytest.raises(ConfigError, match=r"config.guard.pgd_warmup_epochs: expected an integer >= 0. Received: -2"):
        config_check.validate(config)
    config.guard.pgd_warmup_epochs, config.guard.fallback_steps = 6, 0
    with pytest.raises(ConfigError, match=r"config.guard.pgd_warmup_epochs: expected 0 while .*Received: 6"):
        config_check.validate(config)
    del config.guard["pgd_warmup_epochs"]  # a config written before the field: no warm-up
    config_check.validate(config)
    assert config_check.optional(config, "guard.pgd_warmup_epochs") == 0
    warm = resnet20_cifar10.get_config("dense,epochs=30,pgd_warmup=6")  # the config arg sets the field
    config_check.validate(warm)
    assert (warm.guard.pgd_warmup_epochs, warm.guard.fallback_steps) == (6, 2)
    with pytest.raises(ConfigError, match=r"config.guard.pgd_warmup_epochs: .*Received: -1"):
        config_check.validate(resnet20_cifar10.get_config("pgd_warmup=-1"))


def test_guard_attack_gap_config_field_is_checked_and_older_configs_keep_it_off():
    from configs import resnet20_cifar10
    from tfrobustprune import config_check

    config = resnet20_cifar10.get_config()
    assert config_check.optional(config, "guard.max_attack_gap") == 0.2
    for bad in (0.0, 1.5):  # ConfigDict itself refuses other types
        config.guard.max_attack_gap = bad
        with pytest.raises(ConfigError, match=rf"config.guard.max_attack_gap: .*Received: {bad!r}"):
            config_check.validate(config)
    del config.guard["max_attack_gap"]  # a config written before the test existed: the guard ran without it
    config_check.validate(config)
    assert config_check.optional(config, "guard.max_attack_gap") == 1.0
