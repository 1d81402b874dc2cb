"""Shared by the training-cost benchmarks: `fit` throughput, the trainer-step set-up and the machine."""

import os
import platform
import sys
import time

import keras
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS_MODELS = [
    os.path.join(REPO, "benchmarks", "results", "models", name)
    for name in ("resnet20_ours_0.16M_coupled.keras", "resnet20_ours_0.04M.keras")
]


class _StepClock(keras.callbacks.Callback):
    """Records `(batch index, time)` at the end of every call of the training step."""

    def __init__(self, clock):
        super().__init__()
        self.clock, self.ends = clock, []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append((batch, self.clock()))


def images_per_second(model, dataset, steps, batch_size, clock=time.perf_counter):
    """Training images per second of `model.fit` on a repeated `dataset`, after its first step.

    The clock runs from the end of the first step to the end of the last one, so
    it leaves out what `fit` spends outside its steps: starting the epoch and, on
    this machine, up to several seconds after the last step (0.2 s after 2 steps,
    3.5 s after 6 on a frozen gated ResNet20), which would otherwise weigh on a
    short measurement and not on a real epoch. Steps are counted by batch index,
    so a model compiled with `steps_per_execution` > 1 is timed right.

    Args:
        model: A compiled `keras.Model` (already traced: time a warm-up call first).
        dataset: A repeated `tf.data.Dataset` of `(images, labels)` batches.
        steps: Int >= 2, training steps to run.
        batch_size: Int, images per step.
        clock: Zero-argument function returning seconds (tests pass a fake one).

    Returns:
        Float.

    Raises:
        ValueError: If `steps` is below 2, or if `fit` ended before a second timed step (e.g. `dataset` ran out).
    """
    if steps < 2:
        raise ValueError(f"`steps` must be at least 2 (the first step starts the clock). Received: steps={steps}")
    step_clock = _StepClock(clock)
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[step_clock])
    if len(step_clock.ends) < 2:
        raise ValueError(
            f"`fit` ran {len(step_clock.ends)} timed step call(s) of `steps={steps}`: is `dataset` repeated? "
            f"Received: dataset={dataset}"
        )
    (first_batch, first_time), (last_batch, last_time) = step_clock.ends[0], step_clock.ends[-1]
    return (last_batch - first_batch) * batch_size / (last_time - first_time)


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (e.g. "AMD EPYC"), or `platform.processor()` where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine():
    """Dict: CPU count and model, load average at the call (a busy machine slows every figure), platform, versions."""
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),  # XLA's effect differs by CPU: x1.10-1.19 on one machine here, x0.65-0.74 on another
        "load_average_1_5_15min_at_end": list(os.getloadavg()),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def define_trainer_step_flags(name, models_help, config_arg_help):
    """Defines the flags of a benchmark that times the trainer's step on stripped models.

    The flags are absl's global ones: call it once per process, at import (a second call raises
    `absl.flags.DuplicateFlagError`).

    Args:
        name: Str, the benchmark's name (default `--out` is `benchmarks/results/<name>.json`).
        models_help: Str, help of `--models` (default: the table's ours models).
        config_arg_help: Str, help of `--config_arg` (a configs/resnet20_cifar10.py argument).

    Returns:
        Dict of flag holders: `models`, `config_arg`, `rounds`, `steps`, `out`.
    """
    return {
        "models": flags.DEFINE_list("models", OURS_MODELS, models_help),
        "config_arg": flags.DEFINE_string("config_arg", "cost=params,target=0.584", config_arg_help),
        "rounds": flags.DEFINE_integer("rounds", 3, "Alternating measurement rounds.", lower_bound=1),
        "steps": flags.DEFINE_integer("steps", 10, "Training steps per round and model.", lower_bound=2),
        "out": flags.DEFINE_string(
            "out", os.path.join(REPO, "benchmarks", "results", f"{name}.json"), "Result JSON path."
        ),
    }


def trainer_step_setup(model_paths, config_arg):
    """Checks `--models`, resolves the config and makes the shipped sample's repeated training dataset.

    Args:
        model_paths: List of `.keras` paths (`--models`).
        config_arg: Str, the configs/resnet20_cifar10.py argument.

    Returns:
        `(config, dataset)`: the `ConfigDict` and a repeated `tf.data.Dataset` of training batches of
        `config.train.batch_size` real CIFAR-10 images (seed 0).

    Raises:
        app.UsageError: If a model file does not exist.
    """
    for path in model_paths:
        if not os.path.exists(path):
            raise app.UsageError(f"--models: no such file. Received: {path}")
    if REPO not in sys.path:
        sys.path.insert(0, REPO)  # configs/
    from configs import resnet20_cifar10
    from tfrobustprune import data

    config = resnet20_cifar10.get_config(config_arg)
    keras.utils.set_random_seed(0)
    sample = data.load_sample()
    dataset = data.train_dataset(sample.x_train, sample.y_train, config.train.batch_size, seed=0).repeat()
    return config, dataset


def post_freeze_model(config, base=None):
    """The trainer's model as it trains after the gate freeze, compiled as `config` says.

    Args:
        config: A configs/resnet20_cifar10.py `ConfigDict`.
        base: Optional stripped `keras.Model`; None for the gated ResNet20 (at the config's target).

    Returns:
        A compiled `RobustPruneModel` with frozen gates.
    """
    from tfrobustprune import train_lib

    model = train_lib.build_model(config, 10, 100, base=base, target_ratio=None if base is None else 1.0)
    model.freeze_gates()
    return model
