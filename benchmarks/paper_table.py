"""The paper table: ResNet20 on CIFAR-10, ours against the dense model and two peers, beside the published figures.

    python benchmarks/paper_table.py --data_dir=../shared/data/cifar10
    nohup python benchmarks/paper_table.py --data_dir=../shared/data/cifar10 > runs/paper_table.log 2>&1 &
    python benchmarks/paper_table.py --rows=ours_0.16M,dense --data_dir=../shared/data/cifar10

Trains on the 45,000-image training split of the directory (the last 5,000
images are the validation split every figure is measured on). Rows (`--rows`
picks some; a row needing another runs it first; the table lists them in
`ROWS` order: ours_0.16M, dense, l1_0.16M, tfmot_0.16M, ours_0.04M, l1_0.04M,
tfmot_0.04M):

- `ours_0.16M`, `ours_0.04M`: one run of `tfrobustprune.train` each (in-train
  gates + hardware loss, `--attack`, `--ours_args`), parameter targets 0.584 and 0.146 of the
  dense 274,042 (0.16M and 0.04M, Vemparala et al. 2021), `--epochs` epochs.
- `dense`: fast adversarial training without pruning, `--epochs -
  --finetune_epochs` epochs: the starting point of both peers, so that every
  pruned row has the same total epoch budget.
- `l1_0.16M`, `l1_0.04M` (peer 1): the dense model, L1-norm filter pruning to
  the same parameter count (`tfrobustprune.magnitude`), then
  `--finetune_epochs` of fast adversarial fine-tuning with the same trainer.
- `tfmot_0.16M`, `tfmot_0.04M` (peer 2): the dense model, TFMOT
  `prune_low_magnitude` (unstructured, PolynomialDecay) to the same number of
  non-zero parameters with `--finetune_epochs` of fast adversarial fine-tuning,
  in its own process under tf_keras (`benchmarks/tfmot_peer.py`, run by
  `--tfmot_python`).

Diagnostic rows, only when `--rows` names them:

- `l1widths_0.16M`, `l1widths_0.04M`: the dense model, L1-norm filter pruning
  to the per-group widths our row of that size settled on
  (`magnitude.l1_prune_to_widths`), fine-tuned like peer 1. Against `l1_*` it
  judges our channel allocation apart from our training; against `ours_*`,
  our training apart from the allocation.
- `scratch_0.16M`, `scratch_0.04M`: a uniformly narrow ResNet20 (the widest
  base width whose parameters stay within the size: 12 and 6 of 16) trained
  from scratch for `--epochs`, dense: the pruned rows' budget spent on the small
  architecture from the start (Liu et al. 2019). Against `ours_*` and `l1_*`
  it asks whether pruning a wide network beats training the narrow one.
- `ourswidths_0.16M`, `ourswidths_0.04M`: the architecture our row of that size
  ended with (its per-group widths), re-initialized and trained from scratch for
  `--epochs`, dense (Liu et al. 2019's "scratch" test). Against `scratch_*` it
  judges our allocation apart from our training; against `ours_*`, training
  once with gates against training the found architecture again.
- `densefull`: fast adversarial training without pruning for the whole
  `--epochs` (the `dense` row trains `--epochs - --finetune_epochs`): what the
  pruned rows' full budget gives the unpruned ResNet20, the ceiling of the
  training recipe at this budget. Against `ours_*` it measures what pruning
  costs; against `dense`, what the last `--finetune_epochs` epochs add.

`--jit_compile` sets whether the trainer rows compile their training step
with XLA (unset: the config's setting, "auto": no XLA on a CPU). Every figure
in BENCHMARKS.md was trained without it; `--jit_compile=false` repeats their
random stream on any machine.

`--pgd_warmup=N` trains the first N epochs of every row trained from scratch
(ours, dense, densefull, scratch, ourswidths) with PGD-2, then `--attack`
(config arg `pgd_warmup=`, `guard.pgd_warmup_epochs`): every catastrophic
overfitting on record came in a run's first 4 epochs. The peers' fine-tuning
starts from the robust dense model and does not warm up again. A warm-up is
another table, with files suffixed `_pgdwarmup<N>`; so is another `--attack`
(`_fgsmrs`, `_pgd2`), and so are `--ours_args` (`noise_eps=1`: `_noiseeps1`).

`--decay` sets the weight decay rule of every row (dense, ours, both peers'
fine-tuning; config arg `decay=`): `coupled` (default) L2 on the gradients as
torch.optim.SGD, or `decoupled`, Keras' SGD `weight_decay`, the rule of the
table measured before the default changed (`benchmarks/results/paper_table.json`).
Each rule is its own table, and by default its own files: `--decay=coupled`
writes `runs/paper_table_coupled`, `benchmarks/results/paper_table_coupled.json`
and `models/resnet20_<row>_coupled.keras`; `--decay=decoupled` the same names
without `_coupled`. An `--out` that holds a table made with other settings
(epochs, attack, decay, data, ...) is refused before any work, naming them.

Per row: parameters, non-zero parameters, MACs, natural and PGD-10 accuracy on
all validation images, PGD-50 with 10 restarts and APGD-CE on the first
`--strong_eval_size`, epochs and training wall time, full-int8 TFLite size,
accuracy, and LiteRT int8 latency (one thread, median): after the last row,
every finished row's int8 model is timed again, all of them in turn over
`--latency_rounds` interleaved rounds in one process, so that a busy machine
slows all rows alike (figures timed at different hours of a shared machine are
not comparable). Everything is resumable:
trainer rows resume from their workdir, finished steps are cached as JSON in
`--workdir/<row>/`, and `--out` is rewritten after every row. A cached row is
keyed by its config argument string (`settings.json`); a finished trainer row
is reused only while configs/resnet20_cifar10.py still resolves that string to
the config in its report (else the row stops with the differing fields named:
pass a new `--workdir`). Cached measurements and L1 pruning steps are not
re-checked. Final models
(plain Keras layers) are copied to `--models_dir`.
"""

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

from absl import app, flags, logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/cifar10", "Directory of CIFAR-10 .npz files.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Runs and caches (default: runs/paper_table_coupled, or runs/paper_table for --decay=decoupled)."
)
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Epoch budget of every pruned row.")
_FINETUNE_EPOCHS = flags.DEFINE_integer("finetune_epochs", 10, "Fine-tuning epochs of the peers.")
_ATTACK = flags.DEFINE_enum(
    "attack", "n_fgsm", ["n_fgsm", "fgsm_rs", "pgd2"], "Training attack of every row (pgd2: PGD-2, step eps/2)."
)
_OURS_ARGS = flags.DEFINE_list(
    "ours_args",
    [],
    "Extra config args of the ours_* rows, e.g. gate_start=0,sensitivity=1.0,importance=0.0,center=0 "
    "(the earlier gate method; none: the config defaults).",
)
_DECAY = flags.DEFINE_enum(
    "decay",
    "coupled",
    ["decoupled", "coupled"],
    "Weight decay rule of every row (5e-4): Keras' decoupled SGD weight_decay, or `coupled` L2 on the gradients as "
    "torch.optim.SGD applies it (about 10x stronger under momentum 0.9).",
)
_JIT_COMPILE = flags.DEFINE_enum(
    "jit_compile",
    None,
    ["auto", "true", "false"],
    "XLA for the trainer rows' training step (`--config.train.jit_compile`); unset: the config's ('auto', no XLA "
    "on a CPU; True in the twelfth to seventeenth sessions). The table's figures were trained without XLA (`false`); "
    "a switch only changes the random stream and the hours, so a run may resume or be reused under either.",
)
_PGD_WARMUP = flags.DEFINE_integer(
    "pgd_warmup",
    0,
    "PGD-2 for the first N epochs of every row trained from scratch (ours, dense, densefull, scratch, ourswidths; "
    "config arg `pgd_warmup=`), then `--attack`; not for the peers' fine-tuning. 0: off. A warm-up is another table, "
    "with its own default files (suffix `_pgdwarmup<N>`).",
)
_FINETUNE_LR = flags.DEFINE_float("finetune_lr", 0.05, "Peak learning rate of the peers' fine-tuning.")
_ROWS = flags.DEFINE_list("rows", None, "Rows to run (default: the seven of ROWS; DIAGNOSTIC_ROWS only by name).")
_STRONG_EVAL_SIZE = flags.DEFINE_integer("strong_eval_size", 1000, "Images for PGD-50x10 and APGD-CE.")
_CALIBRATION_SIZE = flags.DEFINE_integer("calibration_size", 500, "int8 calibration images (training split).")
_LATENCY_RUNS = flags.DEFINE_integer("latency_runs", 300, "LiteRT invocations per latency figure.")
_LATENCY_ROUNDS = flags.DEFINE_integer(
    "latency_rounds", 10, "Interleaved rounds in which every row's int8 model is timed in turn (latency_runs in all)."
)
_TFMOT_PYTHON = flags.DEFINE_string("tfmot_python", sys.executable, "Python with tf_keras and TFMOT installed.")
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Result JSON (default: benchmarks/results/paper_table_coupled.json, or paper_table.json for --decay=decoupled). "
    "One made with other table settings is refused, not overwritten.",
)
_MODELS_DIR = flags.DEFINE_string("models_dir", os.path.join(RESULTS, "models"), "Where final models are copied.")

DENSE_PARAMS = 274_042
SIZES = {"0.16M": 0.584, "0.04M": 0.146}  # parameter ratios of the dense ResNet20
ROWS = ("ours_0.16M", "dense", "l1_0.16M", "tfmot_0.16M", "ours_0.04M", "l1_0.04M", "tfmot_0.04M")
OWNED_CONFIG_ARGS = ("cost", "target", "epochs", "attack", "dense", "quick", "init_model", "decay", "pgd_warmup")
DIAGNOSTIC_ROWS = (
    "l1widths_0.16M",
    "l1widths_0.04M",
    "scratch_0.16M",
    "scratch_0.04M",
    "ourswidths_0.16M",
    "ourswidths_0.04M",
    "densefull",
)  # only when `--rows` names them
PUBLISHED = [  # natural / PGD accuracy on the CIFAR-10 test set, eps 8/255, as printed in the papers
    {"row": "Vemparala et al. 2021, dense FAT ResNet20", "params": 0.27e6, "natural": 0.8152, "pgd": 0.4065},
    {"row": "Vemparala et al. 2021, ResNet20 at 0.16M", "params": 0.16e6, "natural": 0.7967, "pgd": 0.4322},
    {"row": "Vemparala et al. 2021, ResNet20 at 0.04M", "params": 0.04e6, "natural": 0.7073, "pgd": 0.3931},
    {"row": "Robust ADMM (Ye et al. 2019), ResNet18 at 0.17M", "params": 0.17e6, "natural": 0.7336, "pgd": 0.4317},
    {"row": "Robust ADMM (Ye et al. 2019), ResNet18 at 0.04M", "params": 0.04e6, "natural": 0.6452, "pgd": 0.3801},
]


class RowError(RuntimeError):
    """A row's training or evaluation failed; the message names the log to read."""


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _run_logged(command, log_path):
    """Runs a subprocess from the repository root, appending its output to `log_path`."""
    logging.info("Running %s (log: %s)", " ".join(command), log_path)
    with open(log_path, "a") as log:
        returncode = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if returncode:
        program = command[2] if command[1] == "-m" else os.path.basename(command[1])
        raise RowError(f"{program} exited with {returncode}; see {log_path}")


def check_settings(row_dir, settings):
    """Records a row's settings in `row_dir/settings.json`; refuses to resume or reuse a row made with others."""
    from tfrobustprune import model_io

    path = os.path.join(row_dir, "settings.json")
    if os.path.exists(path):
        recorded = _read_json(path)
        if recorded != settings:
            raise RowError(f"{row_dir} was made with {recorded}, not {settings}: pass another --workdir (or delete it)")
    else:
        model_io.write_json_atomic(path, settings, indent=2)


def resolved_config(config_arg):
    """The config dict `tfrobustprune.train` would run for `configs/resnet20_cifar10.py:<config_arg>`."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from configs import resnet20_cifar10
    from tfrobustprune import train_lib

    config = resnet20_cifar10.get_config(config_arg)
    config.data.path = os.path.abspath(_DATA_DIR.value)
    return train_lib.json_form(config)


def train(row_dir, config_arg):
    """Runs (or resumes, or reuses) one `tfrobustprune.train` run; returns its report."""
    check_settings(row_dir, {"config": config_arg, "data_dir": os.path.abspath(_DATA_DIR.value)})
    report_path = os.path.join(row_dir, "report.json")
    if not os.path.exists(report_path):
        command = [
            sys.executable,
            "-m",
            "tfrobustprune.train",
            f"--config=configs/resnet20_cifar10.py:{config_arg}",
            f"--config.data.path={os.path.abspath(_DATA_DIR.value)}",
            f"--workdir={row_dir}",
        ]
        if _JIT_COMPILE.value is not None:
            command.append(f"--config.train.jit_compile={_JIT_COMPILE.value}")
        _run_logged(command, row_dir + ".log")
        return _read_json(report_path)
    from tfrobustprune import train_lib

    report = _read_json(report_path)
    # The string may name the same config as before while the config file's defaults have changed since.
    changes = train_lib.config_changes(report["config"], resolved_config(config_arg))
    if changes:
        raise RowError(
            f"{report_path} was trained with another config than configs/resnet20_cifar10.py:{config_arg} gives "
            f"now ({'; '.join(changes)}): pass another --workdir (or delete {row_dir})"
        )
    return report


def trained_summary(report):
    """Epochs, training seconds (all timed epochs, across resumes) and overfitting epoch of a trainer report."""
    from tfrobustprune import config_check

    epochs = report["epochs"]
    stopped = epochs["catastrophic_overfitting_at"]
    return {
        "epochs": stopped if stopped else epochs["configured"],
        "train_seconds": report["wall_time_seconds"]["train"],
        "timed_epochs": epochs.get("timed", epochs["run"]),  # fewer than `epochs`: wall time is a lower bound
        "catastrophic_overfitting_at": stopped,
        "fallback_at": epochs.get("fallback_at"),
        "final_attack": epochs.get("final_attack"),
        # how the step was compiled (XLA or not): it changes `train_seconds`, not the experiment
        "jit_compile": config_check.optional(report["config"], "train.jit_compile"),
    }


def recipe_args(from_scratch=False):
    """Config args every trainer row adds for `--decay` (and `--pgd_warmup`), e.g. `,decay=coupled`.

    Args:
        from_scratch: Whether the run trains from fresh weights (then `--pgd_warmup` applies); the peers'
            fine-tuning of a pruned robust model does not warm up again.

    Returns:
        The args, always naming the decay rule, so that a row's config string names it whatever the config
        file's default; `,pgd_warmup=N` only when set, so that rows cached before the flag keep their string.
    """
    warmup = f",pgd_warmup={_PGD_WARMUP.value}" if from_scratch and _PGD_WARMUP.value else ""
    return f",decay={_DECAY.value}{warmup}"


def _warmup_text():
    return f", PGD-2 for epochs 1-{_PGD_WARMUP.value}" if _PGD_WARMUP.value else ""


def _recipe_text(from_scratch=False):
    return (", coupled weight decay" if _DECAY.value == "coupled" else "") + (_warmup_text() if from_scratch else "")


def _attack_text(summary):
    """The training attack of a trainer row, with the guard's switch to PGD when it happened."""
    if summary.get("fallback_at"):
        return f"{_ATTACK.value}, {summary['final_attack']} after epoch {summary['fallback_at']}"
    return _ATTACK.value


def needed_row(name, context):
    """Row `name` that another row builds on: run (or resumed, or reused) once, then kept in `context`."""
    if name not in context:
        context[name] = run_row(name, context)
    return context[name]


def run_row(name, context):
    """Trains one row (and what it needs); returns `{model, epochs, train_seconds, ...}`."""
    root = _WORKDIR.value
    row_dir = os.path.join(root, name)
    kind, _, size = name.partition("_")
    dense_epochs = _EPOCHS.value - _FINETUNE_EPOCHS.value
    if kind in ("ours", "dense", "densefull", "scratch"):
        if kind == "ours":
            arg = f"cost=params,target={SIZES[size]},epochs={_EPOCHS.value},attack={_ATTACK.value}"
            method = f"in-train gates + hardware loss, {_ATTACK.value} (tfrobustprune)"
            if _OURS_ARGS.value:  # without them the config string stays that of the rows cached before the flag
                arg += "," + ",".join(_OURS_ARGS.value)
                method += f", {' '.join(_OURS_ARGS.value)}"
            arg += recipe_args(from_scratch=True)
        elif kind == "scratch":
            width = scratch_width(SIZES[size])
            arg = f"dense,width={width},epochs={_EPOCHS.value},attack={_ATTACK.value}"
            arg += recipe_args(from_scratch=True)
            method = (
                f"ResNet20 of base width {width} (dense: 16) from scratch, fast adversarial training ({_ATTACK.value})"
            )
        else:
            epochs = _EPOCHS.value if kind == "densefull" else dense_epochs
            arg = f"dense,epochs={epochs},attack={_ATTACK.value}{recipe_args(from_scratch=True)}"
            method = f"fast adversarial training ({_ATTACK.value}), no pruning"
        method += _recipe_text(from_scratch=True)
        summary = trained_summary(train(row_dir, arg))
        method = method.replace(_ATTACK.value, _attack_text(summary), 1)
        return {"model": os.path.join(row_dir, "stripped.keras"), **summary, "method": method}
    if kind == "ourswidths":
        return run_ourswidths_row(row_dir, size, context)
    dense = needed_row("dense", context)
    if kind in ("l1", "l1widths"):
        import keras

        from tfrobustprune import magnitude, model_io

        os.makedirs(row_dir, exist_ok=True)
        pruned_path = os.path.join(row_dir, "l1_pruned.keras")
        allocation, widths = "", None
        if kind == "l1widths":
            ours = needed_row(f"ours_{size}", context)
            widths = magnitude.group_widths(model_io.load_keras_model(ours["model"]))
            check_settings(row_dir, {"dense": dense["model"], "widths": widths})  # a retrained ours_* is refused
            allocation = f" to the widths of ours_{size}"
        if not os.path.exists(pruned_path):
            dense_model = model_io.load_keras_model(dense["model"])
            if widths is None:
                # The same floors as our gates (configs/resnet20_cifar10.py: min_fraction 0.1).
                pruned, result = magnitude.l1_prune(dense_model, "params", SIZES[size], min_fraction=0.1)
                logging.info("L1 pruning to %s: params ratio %.4f", size, result["ratio"])
            else:
                pruned = magnitude.l1_prune_to_widths(dense_model, widths)
                logging.info("L1 pruning to the widths of ours_%s: %s", size, widths)
            model_io.save_keras_atomic(pruned, pruned_path)
            keras.backend.clear_session()
        report = train(
            os.path.join(row_dir, "finetune"),
            f"dense,epochs={_FINETUNE_EPOCHS.value},lr={_FINETUNE_LR.value},attack={_ATTACK.value},"
            f"init_model={pruned_path}{recipe_args()}",
        )
        tuned = trained_summary(report)
        # Epochs and time count the dense run and the fine-tuning; for l1widths not the ours_* run behind the widths.
        return {
            "model": os.path.join(row_dir, "finetune", "stripped.keras"),
            "epochs": dense["epochs"] + tuned["epochs"],
            "train_seconds": dense["train_seconds"] + tuned["train_seconds"],
            "timed_epochs": dense["timed_epochs"] + tuned["timed_epochs"],
            "catastrophic_overfitting_at": tuned["catastrophic_overfitting_at"],
            "fallback_at": tuned["fallback_at"],
            "final_attack": tuned["final_attack"],
            "jit_compile": {"dense": dense["jit_compile"], "finetune": tuned["jit_compile"]},
            "method": f"dense {dense['epochs']} ep ({_attack_text(dense)}{_warmup_text()}) + L1-norm filter pruning"
            f"{allocation} + {tuned['epochs']} ep {_attack_text(tuned)}{_recipe_text()}",
        }
    if kind == "tfmot":
        return run_tfmot_row(row_dir, size, dense)
    raise app.UsageError(f"--rows: unknown row {name!r}; known: {', '.join(ROWS + DIAGNOSTIC_ROWS)}")


def run_ourswidths_row(row_dir, size, context):
    """Trains the architecture of `ours_<size>` again from fresh weights; returns the row like `run_row`.

    Epochs and time count this training only, not the `ours_*` run that found the widths.
    """
    import keras

    from tfrobustprune import magnitude, model_io

    ours = needed_row(f"ours_{size}", context)
    os.makedirs(row_dir, exist_ok=True)
    init_path = os.path.join(row_dir, "reinitialized.keras")
    ours_model = model_io.load_keras_model(ours["model"])
    check_settings(row_dir, {"widths": magnitude.group_widths(ours_model)})  # a retrained ours_* is refused
    if not os.path.exists(init_path):
        model_io.save_keras_atomic(reinitialized(ours_model), init_path)
    keras.backend.clear_session()
    summary = trained_summary(
        train(
            os.path.join(row_dir, "train"),
            f"dense,epochs={_EPOCHS.value},attack={_ATTACK.value},init_model={init_path}"
            f"{recipe_args(from_scratch=True)}",
        )
    )
    method = (
        f"the widths of ours_{size}, re-initialized and trained from scratch, "
        f"fast adversarial training ({_attack_text(summary)}){_recipe_text(from_scratch=True)}"
    )
    return {"model": os.path.join(row_dir, "train", "stripped.keras"), **summary, "method": method}


def reinitialized(model, seed=0):
    """A model of the same architecture as `model` with fresh weights from its layers' initializers.

    Args:
        model: A built Keras model (e.g. a stripped one).
        seed: Int seed of the new weights.

    Returns:
        A new `keras.Model`; batch-norm statistics start again at 0 mean, unit variance.
    """
    import keras

    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)  # rebuilds every layer from its config: new weights, none copied


def scratch_width(ratio):
    """The widest uniform ResNet20 base width whose parameters are at most `ratio` of the dense `DENSE_PARAMS`.

    Args:
        ratio: Float in (0, 1], e.g. `SIZES["0.04M"]`.

    Returns:
        Int base width >= 1 (6 for 0.146, 12 for 0.584).
    """
    import keras

    from tfrobustprune import models

    limit = ratio * DENSE_PARAMS
    width = 1
    while width < 16 and models.resnet20(width=width + 1).count_params() <= limit:
        width += 1
    keras.backend.clear_session()
    return width


def run_tfmot_row(row_dir, size, dense):
    """Peer 2: TFMOT magnitude pruning in its own process; the result is loaded back into a Keras 3 ResNet20."""
    from tfrobustprune import data, model_io, models

    model_path = os.path.join(row_dir, "model.keras")
    result_path = os.path.join(row_dir, "peer", "result.json")
    os.makedirs(row_dir, exist_ok=True)
    check_settings(
        row_dir,
        {
            "dense": dense["model"],
            "epochs": _FINETUNE_EPOCHS.value,
            "lr": _FINETUNE_LR.value,
            "attack": _ATTACK.value,
            "decay": _DECAY.value,
        },
    )
    if not os.path.exists(result_path):
        os.makedirs(row_dir, exist_ok=True)
        split_path = os.path.join(_WORKDIR.value, "train_split.npz")
        if not os.path.exists(split_path):
            split = data.load("npz", path=_DATA_DIR.value)
            model_io.write_npz_atomic(split_path, x=split.x_train, y=split.y_train)
        dense_weights = os.path.join(row_dir, "dense_weights.npz")
        model_io.save_layer_weights(model_io.load_keras_model(dense["model"]), dense_weights)
        command = [
            _TFMOT_PYTHON.value,
            os.path.join(REPO, "benchmarks", "tfmot_peer.py"),
            f"--weights={dense_weights}",
            f"--data={split_path}",
            f"--target_nonzero={round(SIZES[size] * DENSE_PARAMS)}",
            f"--epochs={_FINETUNE_EPOCHS.value}",
            f"--learning_rate={_FINETUNE_LR.value}",
            f"--attack={_ATTACK.value}",
            f"--weight_decay_mode={_DECAY.value}",
            f"--out={os.path.join(row_dir, 'peer')}",
        ]
        _run_logged(command, row_dir + ".log")
    peer = _read_json(result_path)
    if not os.path.exists(model_path):
        model = models.resnet20()
        model_io.load_layer_weights(model, os.path.join(row_dir, "peer", "weights.npz"))
        model_io.save_keras_atomic(model, model_path)
    return {
        "model": model_path,
        "epochs": dense["epochs"] + peer["epochs"],
        "train_seconds": dense["train_seconds"] + peer["train_seconds"],
        "timed_epochs": dense["timed_epochs"] + peer.get("timed_epochs", peer["epochs"]),
        "catastrophic_overfitting_at": None,
        "jit_compile": {"dense": dense["jit_compile"], "finetune": False},  # tf_keras' step, never XLA-compiled
        "method": f"dense {dense['epochs']} ep{_warmup_text()} + TFMOT prune_low_magnitude during {peer['epochs']} "
        f"ep {peer['attack']}{_recipe_text()}",
    }


def measure(name, trained, split):
    """Accuracy under attack, sizes, int8 TFLite size/accuracy/latency of a row's model (cached)."""
    cache = os.path.join(_WORKDIR.value, name, "measured.json")
    if os.path.exists(cache):
        return _read_json(cache)
    import keras
    import numpy as np

    from tflite_export import conversion, litert
    from tfrobustprune import count_macs, evaluate, model_io

    model = model_io.load_keras_model(trained["model"])
    started = time.time()
    full, _ = evaluate.run(model, split.x_val, split.y_val, attacks="pgd10", checks=False)
    n = min(_STRONG_EVAL_SIZE.value, len(split.y_val))
    strong, _ = evaluate.run(model, split.x_val[:n], split.y_val[:n], attacks="pgd50x10,apgd_ce", checks=False)
    int8 = conversion.convert(
        model, ["int8"], conversion.representative_images(split.x_train, _CALIBRATION_SIZE.value)
    )["int8"]
    model_io.write_bytes_atomic(_int8_path(name), int8)  # time_rows_together times these very bytes
    runner = litert.LiteRTModel(int8, num_threads=1)
    int8_accuracy = float(np.mean(runner.predict(split.x_val).argmax(-1) == split.y_val))
    measured = {
        "params": int(model.count_params()),
        "nonzero_params": int(sum(np.count_nonzero(np.asarray(w)) for w in model.weights)),
        "macs": count_macs(model),
        "natural": full["natural_accuracy"],
        "pgd10": full["robust_accuracy"]["pgd10"],
        "val_images": int(len(split.y_val)),
        "strong_eval_images": n,
        "natural_on_strong_subset": strong["natural_accuracy"],
        "pgd50x10": strong["robust_accuracy"]["pgd50x10"],
        "apgd_ce": strong["robust_accuracy"]["apgd_ce"],
        "int8_kib": len(int8) / 1024,
        "int8_natural": int8_accuracy,
        "eval_seconds": time.time() - started,
    }
    model_io.write_json_atomic(cache, measured, indent=2)
    keras.backend.clear_session()
    return measured


def _int8_path(name):
    """Where measure() keeps a row's int8 TFLite model."""
    return os.path.join(_WORKDIR.value, name, "int8.tflite")


def time_rows_together(results, split):
    """Sets `int8_latency_ms` (and `int8_latency_cpu_ms`) of every finished row, all timed in one interleaved pass.

    Args:
        results: Dict row name -> row dict; rows with an `error` are left alone.
        split: The data split (calibration images from its training part, the first validation image timed).

    Returns:
        Dict with the pass's `rounds`, `runs_per_round` and `rows` timed.
    """
    from tflite_export import conversion, litert
    from tfrobustprune import model_io

    runners = {}
    representative = conversion.representative_images(split.x_train, _CALIBRATION_SIZE.value)
    for name, row in results.items():
        if "error" in row:
            continue
        cached = _int8_path(name)
        path = os.path.join(_MODELS_DIR.value, model_file(name))
        if os.path.exists(cached):
            with open(cached, "rb") as f:
                int8 = f.read()
        elif os.path.exists(path):  # a row measured before measure() kept its int8 file
            int8 = conversion.convert(model_io.load_keras_model(path), ["int8"], representative)["int8"]
        else:
            logging.warning("Row %s: %s is missing; its latency is not measured.", name, path)
            row["int8_latency_ms"] = row["int8_latency_cpu_ms"] = None
            continue
        runners[name] = litert.LiteRTModel(int8, num_threads=1)
    rounds = _LATENCY_ROUNDS.value
    runs = max(1, _LATENCY_RUNS.value // rounds)
    timed = litert.interleaved_latency({n: r.invoker(split.x_val[0]) for n, r in runners.items()}, rounds, runs)
    for name, figures in timed.items():
        results[name]["int8_latency_ms"] = figures["median_ms"]
        results[name]["int8_latency_cpu_ms"] = figures["cpu_median_ms"]
    return {"rounds": rounds, "runs_per_round": runs, "rows": sorted(timed), "when": time.strftime("%Y-%m-%d %H:%M")}


def _latency_text(row):
    value = row.get("int8_latency_ms")
    return "n/a" if value is None else f"{value:.3f}"


def markdown(rows):
    """The table of measured rows, then the published figures."""
    lines = [
        "| row | params | non-zero | MACs | natural | PGD-10 | PGD-50x10 | APGD-CE | epochs | train h | int8 KiB "
        "| int8 acc. | LiteRT int8 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['error']} |" + " |" * 11)
            continue
        lines.append(
            f"| {r['row']} | {r['params']:,} | {r['nonzero_params']:,} | {r['macs'] / 1e6:.1f}M "
            f"| {r['natural']:.2%} | {r['pgd10']:.2%} | {r['pgd50x10']:.2%} | {r['apgd_ce']:.2%} | {r['epochs']} "
            f"| {r['train_seconds'] / 3600:.2f} | {r['int8_kib']:.0f} | {r['int8_natural']:.2%} "
            f"| {_latency_text(r)} |"
        )
    lines += ["", "| published (CIFAR-10 test set) | params | natural | PGD |", "|---|---:|---:|---:|"]
    lines += [f"| {p['row']} | {p['params'] / 1e6:.2f}M | {p['natural']:.2%} | {p['pgd']:.2%} |" for p in PUBLISHED]
    return "\n".join(lines)


def table_suffix():
    """`_coupled` for the coupled-decay table, "" for the decoupled one (its files were named before the flag),
    then the training attack unless it is the default N-FGSM (`_fgsmrs`, `_pgd2`), then `_pgdwarmup<N>` with
    `--pgd_warmup=N`, then each `--ours_args` entry without its `_` and `=` (`noise_eps=1`: `_noiseeps1`):
    each recipe writes its own files, so that no run resumes or overwrites another's (its model above all)."""
    suffix = "_coupled" if _DECAY.value == "coupled" else ""
    if _ATTACK.value != _ATTACK.default:
        suffix += "_" + _ATTACK.value.replace("_", "")
    suffix += f"_pgdwarmup{_PGD_WARMUP.value}" if _PGD_WARMUP.value else ""
    return suffix + "".join("_" + re.sub(r"[^0-9A-Za-z.]", "", arg) for arg in _OURS_ARGS.value)


def model_file(name):
    """File name of a row's final model in `--models_dir`, e.g. `resnet20_ours_0.16M_coupled.keras`."""
    return f"resnet20_{name}{table_suffix()}.keras"


def resolve_paths():
    """Fills unset `--workdir` and `--out` with the decay rule's defaults and makes every path absolute."""
    if _WORKDIR.value is None:
        flags.FLAGS["workdir"].value = os.path.join(REPO, "runs", f"paper_table{table_suffix()}")
    if _OUT.value is None:
        flags.FLAGS["out"].value = os.path.join(RESULTS, f"paper_table{table_suffix()}.json")
    for holder in (_WORKDIR, _OUT, _MODELS_DIR):  # subprocesses run from the repository root
        flags.FLAGS[holder.name].value = os.path.abspath(holder.value)


def previous_rows(header):
    """The rows `--out` already holds, if it was made with these settings.

    Raises:
        app.UsageError: If `--out` holds a table made with other settings (naming them), so that no run
            overwrites a recorded table by accident.
    """
    if not os.path.exists(_OUT.value):
        return {}
    previous = _read_json(_OUT.value)
    keys = sorted((set(header) | {"ours_args", "decay", "pgd_warmup"}) - {"machine", "latency"})
    differing = [
        f"{k}: {previous.get(k)!r} there, {header.get(k)!r} here" for k in keys if previous.get(k) != header.get(k)
    ]
    if differing:
        raise app.UsageError(
            f"--out holds a table made with other settings ({'; '.join(differing)}); pass another --out (or "
            f"delete it). Received: --out={_OUT.value}"
        )
    return {r["row"]: r for r in previous.get("rows", [])}


def _header(split):
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "data": {
            "dir": os.path.abspath(_DATA_DIR.value),
            "train": int(len(split.y_train)),
            "val": int(len(split.y_val)),
        },
        "epochs": _EPOCHS.value,
        "finetune_epochs": _FINETUNE_EPOCHS.value,
        "finetune_lr": _FINETUNE_LR.value,
        "attack": _ATTACK.value,
        "strong_eval_size": _STRONG_EVAL_SIZE.value,
        **({"ours_args": _OURS_ARGS.value} if _OURS_ARGS.value else {}),  # a variant is another table
        # Absent means decoupled, the rule of tables written before the flag, so their rows stay comparable.
        **({"decay": _DECAY.value} if _DECAY.value == "coupled" else {}),
        **({"pgd_warmup": _PGD_WARMUP.value} if _PGD_WARMUP.value else {}),
    }


def main(argv):
    del argv
    names = _ROWS.value or list(ROWS)
    unknown = [n for n in names if n not in ROWS + DIAGNOSTIC_ROWS]
    if unknown:
        raise app.UsageError(f"--rows: unknown {unknown}; known: {', '.join(ROWS + DIAGNOSTIC_ROWS)}")
    if not 0 < _FINETUNE_EPOCHS.value < _EPOCHS.value:
        raise app.UsageError(
            f"--finetune_epochs must be in [1, --epochs). Received: {_FINETUNE_EPOCHS.value} (epochs {_EPOCHS.value})"
        )
    dense_epochs = _EPOCHS.value - _FINETUNE_EPOCHS.value
    if not 0 <= _PGD_WARMUP.value < dense_epochs:  # the shortest from-scratch run, dense, must reach --attack
        raise app.UsageError(
            f"--pgd_warmup must be in [0, --epochs - --finetune_epochs) = [0, {dense_epochs}). "
            f"Received: {_PGD_WARMUP.value}"
        )
    # The row's own settings come from the table's flags; --ours_args only adds method options.
    owned = [a for a in _OURS_ARGS.value if "=" not in a or a.partition("=")[0] in OWNED_CONFIG_ARGS]
    if owned:
        raise app.UsageError(
            f"--ours_args: {owned} set what the table sets itself ({', '.join(OWNED_CONFIG_ARGS)}) or lack "
            f"'=value'. Received: --ours_args={','.join(_OURS_ARGS.value)}"
        )
    resolve_paths()
    from tfrobustprune import data, magnitude, model_io

    split = data.load("npz", path=_DATA_DIR.value)  # fails early, with a DataError, on a bad directory
    header = _header(split)
    results = previous_rows(header)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    context = {}
    for name in names:
        started = time.time()
        try:
            trained = run_row(name, context)
            measured = measure(name, trained, split)
            os.makedirs(_MODELS_DIR.value, exist_ok=True)
            shutil.copyfile(trained["model"], os.path.join(_MODELS_DIR.value, model_file(name)))
            widths = magnitude.group_widths(model_io.load_keras_model(trained["model"]))
            results[name] = {
                "row": name,
                **trained,
                **measured,
                "widths": widths,  # channels per group of the final model (TFMOT's stay dense, with zeros)
                "model": f"models/{model_file(name)}",
            }
            logging.info("Row %s done in %.0f s: %s", name, time.time() - started, results[name])
        except Exception as error:  # noqa: BLE001  (one failed row must not cost the others hours of training)
            logging.exception("Row %s failed", name)
            results[name] = {"row": name, "error": f"{type(error).__name__}: {error}"}
        write_table(header, results)
    # Timed apart, each row's latency would say how busy the machine was at that hour; timed together, they compare.
    latency = time_rows_together(results, split)
    logging.info("int8 latency of %s timed together: %s", latency["rows"], latency)
    write_table({**header, "latency": latency}, results)


def write_table(header, results):
    """Writes `--out` (rows in table order) and prints the markdown table."""
    from tfrobustprune import model_io

    ordered = [results[n] for n in ROWS + DIAGNOSTIC_ROWS if n in results]
    model_io.write_json_atomic(
        _OUT.value, {"command": " ".join(sys.argv), **header, "rows": ordered, "published": PUBLISHED}, indent=2
    )
    print(markdown(ordered), flush=True)


if __name__ == "__main__":
    app.run(main)
