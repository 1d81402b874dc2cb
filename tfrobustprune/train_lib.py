"""The trainer behind `python -m tfrobustprune.train`: config -> trained, stripped, reported model."""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfrobustprune import attacks, budget, config_check, data, gating, model_io, models
from tfrobustprune.callback import RobustPruneCallback
from tfrobustprune.cost import count_macs
from tfrobustprune.guards import SafeBackupAndRestore, TerminateOnNonFinite
from tfrobustprune.robust_model import RobustPruneModel
from tfrobustprune.strip import strip

GATED_FILE, STRIPPED_FILE, REPORT_FILE = "gated.keras", "stripped.keras", "report.json"
EPOCH_SECONDS_FILE = "epoch_seconds.json"
CONFIG_FILE = "config.json"  # the config of the run whose checkpoint is in `workdir/backup`
# `train.strip_at_freeze`: the model stripped at the gate freeze, the checkpoint of its epochs, and what the
# pruning phase ended with (written last: its presence means the pruning phase is done).
SLIM_FILE, SLIM_BACKUP, FREEZE_FILE = "stripped_at_freeze.keras", "backup_stripped", "freeze.json"
GATED_AT_FREEZE_FILE = "gated_at_freeze.keras"
# History series measured against the model being trained: after a strip at the freeze, against the stripped one.
COST_RATIO_SERIES = ("cost_ratio", "val_cost_ratio", "hard_cost_ratio", "hw_target")
# Fields a resumed run may change: where the data is, how much to print, what to evaluate and export after training,
# and `train.jit_compile`, how the same step is computed (XLA also draws other numbers for the same stateless
# seed), not which experiment; a run may resume with XLA switched (warned).
RESUME_FREE_FIELDS = ("data.path", "train.verbose", "train.jit_compile")
RESUME_FREE_PREFIXES = ("eval.", "export.")


class TrainingError(RuntimeError):
    """Training stopped on a problem the user must fix (for example a non-finite loss)."""


def load_data(config):
    """Loads the config's `Split` (subsets applied)."""
    cfg = config.data
    return data.load(
        source=cfg.source,
        path=cfg.path or None,
        name=cfg.name,
        val_size=cfg.val_size,
        train_size=cfg.train_size or None,
        eval_size=cfg.eval_size or None,
    )


def base_model(config, num_classes):
    """The ungated network the run starts from: `config.init_model` if set, else a new `config.model_name`.

    `init_model` is a `.keras` classifier of images in [0, 1] (e.g. a stripped model to fine-tune
    adversarially); its architecture replaces `model_name` and `model`.

    Raises:
        ModelFileError: for a missing or unreadable `init_model`.
        ConfigError: when `init_model` does not output `num_classes` logits.
    """
    path = config_check.optional(config, "init_model") or ""
    if not path:
        return models.get_model(config.model_name, num_classes=num_classes, **config.model)
    model = model_io.load_keras_model(path)
    if model.outputs[0].shape[-1] != num_classes:
        raise config_check.ConfigError(
            f"config.init_model: the model outputs {model.outputs[0].shape[-1]} classes but the data has "
            f"{num_classes}. Received: {path!r}"
        )
    return model


def build_model(config, num_classes, steps_per_epoch, base=None, target_ratio=None):
    """Builds and compiles the gated `RobustPruneModel` the config describes.

    Args:
        config: Validated `ConfigDict`.
        num_classes: Int.
        steps_per_epoch: Int, for the learning-rate schedule.
        base: Optional ungated `keras.Model` to gate instead of `base_model(config, num_classes)`, e.g. the
            model stripped at the freeze (`train.strip_at_freeze`).
        target_ratio: Optional float overriding `config.train.target_ratio`.

    Returns:
        A compiled `RobustPruneModel`.
    """
    network = gating.gate(base if base is not None else base_model(config, num_classes), **config.gates)
    train = config.train
    target_ratio = train.target_ratio if target_ratio is None else target_ratio
    # "coupled": L2 added to the gradients (torch.optim.SGD semantics); "decoupled": Keras' SGD weight_decay.
    coupled_decay = config_check.weight_decay_mode(config) == "coupled"
    model = RobustPruneModel(
        network,
        attack=config.attack.name,
        epsilon=config.attack.epsilon,
        step=config.attack.step or None,
        pgd_steps=config.attack.pgd_steps,
        noise=config_check.optional(config, "attack.noise") or None,
        cost_metric=train.cost,
        target_ratio=target_ratio,
        gate_learning_rate=train.gate_learning_rate,
        hw_loss=train.hw_loss,
        cost_sensitivity=config_check.optional(config, "train.cost_sensitivity"),
        importance_pressure=config_check.optional(config, "train.importance_pressure"),
        center_task_gradient=config_check.optional(config, "train.center_task_gradient"),
        weight_decay=train.weight_decay if coupled_decay else 0.0,
        seed=config.seed,
        name=f"robust_{network.name}",
    )
    floor = budget.min_ratio(network, train.cost, model.cost_model)
    if target_ratio < floor:
        raise config_check.ConfigError(
            f"config.train.target_ratio: {target_ratio} is below the smallest {train.cost} ratio the "
            f"floors allow ({floor:.4f}); raise it or lower gates.min_fraction / gates.min_channels. "
            f"Received: {target_ratio!r}"
        )
    total_steps = max(1, train.epochs * steps_per_epoch)
    warmup_steps = min(total_steps - 1, train.lr_warmup_epochs * steps_per_epoch)
    # Warm up linearly, then cosine to zero: close to the one-cycle schedule of fast AT.
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=train.learning_rate * 0.01,
        decay_steps=total_steps - warmup_steps,
        warmup_target=train.learning_rate,
        warmup_steps=warmup_steps,
    )
    optimizer = keras.optimizers.SGD(
        schedule,
        momentum=train.momentum,
        nesterov=True,
        weight_decay=None if coupled_decay else (train.weight_decay or None),
    )
    model.compile(optimizer=optimizer, jit_compile=config_check.optional(config, "train.jit_compile"))
    return model


class EpochClock(keras.callbacks.Callback):
    """Keeps the wall time of every completed epoch in a JSON file, so a resumed run reports all of it.

    Args:
        path: Str, the JSON file (`{"epoch": seconds}`), read and rewritten each epoch.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._start = None

    def seconds(self):
        """Dict epoch (int) -> seconds of every epoch completed so far, this process or earlier ones."""
        if not os.path.exists(self.path):
            return {}
        with open(self.path) as f:
            return {int(k): float(v) for k, v in json.load(f).items()}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        times = self.seconds()
        times[epoch] = time.time() - self._start
        model_io.write_json_atomic(self.path, {str(k): v for k, v in sorted(times.items())})


def make_callbacks(config, workdir, split, epoch_variable, stripped=False):
    """The fit callbacks, in order: the data epoch, RobustPruneCallback (it adds to the logs), the
    non-finite-loss guard, the resumable backup, CSV and TensorBoard logs.

    `stripped=True`: for the epochs after the freeze of a `train.strip_at_freeze` run (no hardware loss, gates
    frozen open, the checkpoint in `SLIM_BACKUP`).
    """
    train = config.train
    backup = os.path.join(workdir, SLIM_BACKUP if stripped else "backup")
    probe = None
    if config.guard.probe_size:
        # A fixed batch of training images (as Wong et al. 2020 do): the validation split, on which the report's
        # figures are measured, then plays no part in choosing weights.
        probe = (split.x_train[-config.guard.probe_size :], split.y_train[-config.guard.probe_size :])
    nan_guard = TerminateOnNonFinite()
    return [
        epoch_variable,
        RobustPruneCallback(
            lambda_max=0.0 if stripped else train.lambda_max,
            warmup_epochs=train.lambda_warmup_epochs,
            ramp_epochs=train.lambda_ramp_epochs,
            freeze_epoch=None if stripped else train.freeze_epoch,
            target_glide_epochs=0 if stripped else config_check.optional(config, "train.target_glide_epochs"),
            probe_data=probe,
            probe_steps=config.guard.probe_steps,
            max_drop=config.guard.max_drop,
            max_relative_drop=config_check.optional(config, "guard.max_relative_drop"),
            max_attack_gap=config_check.optional(config, "guard.max_attack_gap"),
            fallback_steps=config_check.optional(config, "guard.fallback_steps"),
            pgd_warmup_epochs=config_check.optional(config, "guard.pgd_warmup_epochs"),
            state_dir=backup,
        ),
        nan_guard,
        # The clock writes before the backup: an epoch killed in between is redone and overwrites its time.
        EpochClock(os.path.join(workdir, EPOCH_SECONDS_FILE)),
        SafeBackupAndRestore(backup, nan_guard),
        keras.callbacks.CSVLogger(os.path.join(workdir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"), write_graph=False),
    ]


def evaluate(model, x, y, epsilon, pgd_step, pgd_steps, batch_size=256):
    """Natural and PGD accuracy of a logits model on uint8 images.

    Returns:
        Dict with `natural_accuracy`, `pgd_accuracy`, `pgd_steps`, `examples`.
    """
    images = x.astype("float32") / 255.0
    predictions = model.predict(images, batch_size=batch_size, verbose=0).argmax(-1)
    natural = float(np.mean(predictions == y))
    robust = attacks.pgd_accuracy(
        model, images, y, epsilon=epsilon, step=pgd_step, steps=pgd_steps, batch_size=batch_size
    )
    return {
        "natural_accuracy": natural,
        "pgd_accuracy": robust,
        "pgd_steps": pgd_steps,
        "pgd_step": pgd_step,
        "epsilon": epsilon,
        "examples": int(len(y)),
    }


def _flat(tree, prefix=""):
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def json_form(config):
    """A config (`ConfigDict` or dict) as it reads back from JSON: tuples become lists."""
    return json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config))


def _resume_free(field):
    return field in RESUME_FREE_FIELDS or field.startswith(RESUME_FREE_PREFIXES)


def config_changes(recorded, current):
    """The fields in which two configs differ, outside those a resumed run may change.

    A field in `config_check.OPTIONAL_FIELDS` that one side lacks counts as the value its absence means; `None`
    and `""` mean the same for `init_model`. Fields in `RESUME_FREE_FIELDS` or under `RESUME_FREE_PREFIXES` (where
    the data is, how much to print, whether XLA compiles the step, what to evaluate and export afterwards) are not
    compared.

    Args:
        recorded: `ConfigDict` or dict, e.g. a report's or `config.json`'s `config`.
        current: `ConfigDict` or dict, e.g. the config of the run about to start.

    Returns:
        Sorted list of `"field: recorded -> current"` strings; empty when the runs are the same experiment.
    """
    recorded = {**config_check.OPTIONAL_FIELDS, **_flat(json_form(recorded))}
    current = {**config_check.OPTIONAL_FIELDS, **_flat(json_form(current))}
    for flat in (recorded, current):
        flat["init_model"] = flat["init_model"] or ""
    return [
        f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}"
        for k in sorted(set(recorded) | set(current))
        if not _resume_free(k) and recorded.get(k) != current.get(k)
    ]


def recorded_config(workdir):
    """The config a run in `workdir` trained with: `config.json` (`record_config`), else `report.json`'s.

    Returns:
        `(config dict, file name)`, or `(None, None)` for a workdir with neither (runs from before `config.json`
        that never finished).
    """
    for name in (CONFIG_FILE, REPORT_FILE):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            with open(path) as f:
                recorded = json.load(f)
            return (recorded["config"] if name == REPORT_FILE else recorded), name
    return None, None


def check_resumed_config(config, workdir):
    """Refuses to resume a checkpoint in `workdir` that was trained with another config.

    A run resumes from `workdir/backup` or, after a strip at the freeze, `workdir/backup_stripped` (both kept
    after the run ends). Resuming it under a changed config (another
    target, attack, schedule, or a config file whose defaults changed since) would mix two experiments in one
    report. The checkpoint's config is `recorded_config(workdir)`; a checkpoint without one is accepted with a
    warning.

    Args:
        config: The `ml_collections.ConfigDict` of this run.
        workdir: The run's directory.

    Raises:
        ConfigError: naming each differing field with its recorded and its current value.
    """
    if not any(os.path.exists(os.path.join(workdir, d, "training_metadata.json")) for d in ("backup", SLIM_BACKUP)):
        return
    recorded, name = recorded_config(workdir)
    if recorded is None:
        logging.warning("%s holds a checkpoint with no recorded config; resuming it under this one.", workdir)
        return
    changes = config_changes(recorded, config)
    recorded_jit, current_jit = (config_check.optional(c, "train.jit_compile") for c in (recorded, config))
    if not changes and recorded_jit != current_jit:
        logging.warning(
            "Resuming %s with train.jit_compile=%r; its earlier epochs ran with %r (XLA changes the speed and "
            "the attack's random starts, not the experiment).",
            workdir,
            current_jit,
            recorded_jit,
        )
    if changes:
        raise config_check.ConfigError(
            f"--workdir={workdir} holds a checkpoint trained with another config (recorded in {name}); pass the "
            f"recorded config to resume it, or another --workdir to start a new run. Received: {'; '.join(changes)}"
        )


def record_config(config, workdir):
    """Writes the config of the run about to train to `workdir/config.json` (`check_resumed_config` reads it)."""
    model_io.write_json_atomic(os.path.join(workdir, CONFIG_FILE), json_form(config), indent=2)


def _fit(model, train_ds, val_ds, callbacks, initial_epoch, epochs, verbose):
    """`model.fit` from `initial_epoch` to `epochs` with `make_callbacks`' callbacks.

    Returns:
        `(model, RobustPruneCallback, History)`.

    Raises:
        TrainingError: when the loss became non-finite.
    """
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        initial_epoch=initial_epoch,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    nan_guard, backup = callbacks[2], callbacks[4]
    if nan_guard.stopped_at is not None:
        epoch, batch, loss = nan_guard.stopped_at
        raise TrainingError(
            f"loss became {loss} at epoch {epoch + 1}, batch {batch}; stopped on the weights of epoch {epoch}, "
            f"checkpointed in {backup.backup_dir}. Lower train.learning_rate or "
            "train.gate_learning_rate and run again with the same --workdir to resume."
        )
    return model, callbacks[1], history


def fit_summary(model, guard):
    """What a fit left: cost ratio and widths of the gated model, the guard's events, the attack, the step.

    Args:
        model: The `RobustPruneModel` after `fit`.
        guard: Its `RobustPruneCallback`.

    Returns:
        JSON-ready dict: `achieved_ratio` (of `model.cost_metric`), `widths` (`{group: {"kept", "of"}}`),
        `catastrophic_overfitting_at` and `fallback_at` (1-based epochs or None), `final_attack`,
        `optimizer_steps`, `attack_counter` (the training attack's random-start count), `jit_compile` (whether
        the step was compiled with XLA: the config's value as Keras resolved it).
    """
    cost = model.cost_model
    widths = cost.hard_widths()
    return {
        "achieved_ratio": cost.ratio(model.cost_metric),
        "widths": {g.name: {"kept": widths[g.gid], "of": g.width} for g in cost.graph.groups if g.gate},
        "catastrophic_overfitting_at": None if guard.collapsed_at is None else guard.collapsed_at + 1,
        "fallback_at": None if guard.fallback_at is None else guard.fallback_at + 1,
        "final_attack": model.attack if model.attack != "pgd" else f"pgd{model.pgd_steps}",
        "optimizer_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "attack_counter": int(keras.ops.convert_to_numpy(model.attack_counter)),
        "jit_compile": bool(model.jit_compile),
    }


def _logit_diff(gated, slim, images):
    """Max abs logit difference of a gated model and its stripped copy on `images` (warns above 1e-4)."""
    diff = float(np.max(np.abs(gated.predict(images, verbose=0) - slim.predict(images, verbose=0))))
    if diff > 1e-4:
        logging.warning("Stripped model differs from the gated one by %.3g (max abs logit).", diff)
    return diff


def run(config, workdir):
    """Trains, strips, evaluates and writes the gated and stripped models and `report.json`.

    Args:
        config: An `ml_collections.ConfigDict` (see configs/).
        workdir: Output directory (created). Re-running with the same workdir
            resumes an interrupted run from its last completed epoch.

    Returns:
        The report dict (also written to `workdir/report.json`).

    Raises:
        ConfigError: for an invalid config, or one that differs from the config of the checkpoint in `workdir`
            (`check_resumed_config`), before any work.
        DataError: for missing or malformed data.
    """
    config_check.validate(config)
    os.makedirs(workdir, exist_ok=True)
    check_resumed_config(config, workdir)
    keras.utils.set_random_seed(config.seed)
    if config_check.optional(config, "deterministic"):
        # Same seed, same machine -> same figures, also across a resume (slower on some ops).
        tf.config.experimental.enable_op_determinism()
    started = time.time()
    split = load_data(config)
    logging.info("Data %s: %d train, %d validation images.", split.source, len(split.x_train), len(split.x_val))
    train = config.train
    steps_per_epoch = max(1, len(split.x_train) // train.batch_size)
    model = build_model(config, split.num_classes, steps_per_epoch)
    dense_model = base_model(config, split.num_classes)
    epoch_variable = data.EpochVariable()
    train_ds = data.train_dataset(
        split.x_train, split.y_train, train.batch_size, seed=config.seed, epoch=epoch_variable.variable
    )
    val_ds = data.eval_dataset(split.x_val, split.y_val, 256)
    record_config(config, workdir)  # only now: a start that fails on its data or its target records nothing
    strip_at_freeze = config_check.optional(config, "train.strip_at_freeze")
    freeze_path = os.path.join(workdir, FREEZE_FILE)
    check = split.x_val[:1000].astype("float32") / 255.0  # images on which stripping must not change the logits
    fits = []  # (model, guard, history) of each fit this process ran
    if not (strip_at_freeze and os.path.exists(freeze_path)):
        callbacks = make_callbacks(config, workdir, split, epoch_variable)
        epochs = train.freeze_epoch if strip_at_freeze else train.epochs
        fits.append(_fit(model, train_ds, val_ds, callbacks, 0, epochs, train.verbose))
        pruning = fit_summary(model, callbacks[1])
        if strip_at_freeze:
            model_io.save_keras_atomic(model.network, os.path.join(workdir, GATED_AT_FREEZE_FILE))
            slim = strip(model.network)
            pruning["gated_vs_stripped_max_abs_logit_diff"] = _logit_diff(model.network, slim, check)
            model_io.save_keras_atomic(slim, os.path.join(workdir, SLIM_FILE))
            model_io.write_json_atomic(freeze_path, pruning, indent=2)
    else:
        with open(freeze_path) as f:
            pruning = json.load(f)
        logging.info("The pruning phase ended before (%s); training the stripped model on.", freeze_path)
    collapsed_before_strip = strip_at_freeze and pruning["catastrophic_overfitting_at"] is not None
    if strip_at_freeze and not collapsed_before_strip:
        slim = model_io.load_keras_model(os.path.join(workdir, SLIM_FILE))
        model = build_model(config, split.num_classes, steps_per_epoch, base=slim, target_ratio=1.0)
        model.freeze_gates()
        # The schedule and the attack's random starts go on where they were; the momentum starts afresh.
        model.optimizer.iterations.assign(pruning["optimizer_steps"])
        model.attack_counter.assign(pruning["attack_counter"])
        if pruning["fallback_at"] is not None:  # switched to PGD before the freeze: so does the stripped model
            RobustPruneCallback.seed_fallback(os.path.join(workdir, SLIM_BACKUP), pruning["fallback_at"] - 1)
        callbacks = make_callbacks(config, workdir, split, epoch_variable, stripped=True)
        logging.info(
            "Stripped at the freeze: %d -> %d parameters; training the stripped model for epochs %d-%d.",
            dense_model.count_params(),
            slim.count_params(),
            train.freeze_epoch + 1,
            train.epochs,
        )
        fits.append(_fit(model, train_ds, val_ds, callbacks, train.freeze_epoch, train.epochs, train.verbose))
    train_seconds = time.time() - started

    if collapsed_before_strip:
        # Stopped on catastrophic overfitting before the freeze, on the guard's best weights: nothing trained on.
        with open(os.path.join(workdir, GATED_AT_FREEZE_FILE), "rb") as f:
            model_io.write_bytes_atomic(os.path.join(workdir, GATED_FILE), f.read())
        slim = model_io.load_keras_model(os.path.join(workdir, SLIM_FILE))
        outcome = pruning
    else:
        model_io.save_keras_atomic(model.network, os.path.join(workdir, GATED_FILE))
        slim = strip(model.network)
        outcome = fit_summary(model, fits[-1][1]) if strip_at_freeze else pruning
    model_io.save_keras_atomic(slim, os.path.join(workdir, STRIPPED_FILE))
    if strip_at_freeze:
        # The surgery that matters is the one at the freeze; after it the gates are all open (an exact strip).
        max_abs_diff = pruning["gated_vs_stripped_max_abs_logit_diff"]
    else:
        max_abs_diff = _logit_diff(model.network, slim, check)

    logging.info(
        "Evaluating natural and PGD-%d accuracy on %d validation images.", config.eval.pgd_steps, len(split.y_val)
    )
    eval_size = config.eval.size or len(split.y_val)
    metrics = evaluate(
        slim,
        split.x_val[:eval_size],
        split.y_val[:eval_size],
        config.attack.epsilon,
        config.eval.pgd_step,
        config.eval.pgd_steps,
    )
    achieved = pruning["achieved_ratio"]
    epoch_seconds = EpochClock(os.path.join(workdir, EPOCH_SECONDS_FILE)).seconds()
    history = {}
    for fit_model, _, fit_history in fits:
        # After a strip at the freeze the cost ratios are the stripped model's (1.0): rescale them to the dense one's.
        scale = achieved if fit_model.target_ratio == 1.0 and strip_at_freeze else 1.0
        for key, values in fit_history.history.items():
            if "/" not in key:  # per-group widths are in `widths`
                factor = scale if key in COST_RATIO_SERIES else 1.0
                history.setdefault(key, []).extend(float(v) * factor for v in values)
    report = {
        "config": config.to_dict(),
        "data": {
            "source": split.source,
            "train_examples": int(len(split.x_train)),
            "val_examples": int(len(split.x_val)),
        },
        "validation": metrics,
        "params": {"dense": int(dense_model.count_params()), "stripped": int(slim.count_params())},
        "macs": {"dense": count_macs(dense_model), "stripped": count_macs(slim)},
        "cost": {
            "metric": train.cost,
            "target_ratio": train.target_ratio,
            "achieved_ratio": achieved,
            "relative_error": achieved / train.target_ratio - 1.0,
        },
        "widths": pruning["widths"],
        "gated_vs_stripped_max_abs_logit_diff": max_abs_diff,
        "epochs": {
            "configured": train.epochs,
            # by this process; a resumed run completed earlier ones before
            "run": sum(len(fit_history.epoch) for _, _, fit_history in fits),
            "timed": len(epoch_seconds),
            "catastrophic_overfitting_at": outcome["catastrophic_overfitting_at"],
            # 1-based epoch after which the guard restored the best weights and trained on with PGD-K
            "fallback_at": outcome["fallback_at"],
            "final_attack": outcome["final_attack"],
            # epochs trained with gates before the model was stripped (`train.strip_at_freeze`), else None
            "stripped_at": (pruning["catastrophic_overfitting_at"] or train.freeze_epoch) if strip_at_freeze else None,
            "optimizer_steps": outcome["optimizer_steps"],
        },
        # `train`: every timed epoch, across resumes; `this_process`: since this process started training.
        # Whether each fit of this process compiled its step with XLA (pruning phase, then the stripped one).
        "jit_compile": [bool(fit_model.jit_compile) for fit_model, _, _ in fits],
        "wall_time_seconds": {
            "train": float(sum(epoch_seconds.values())),
            "this_process": train_seconds,
            "total": time.time() - started,
        },
        "history": history,
    }
    if config_check.optional(config, "export.tflite"):
        from tflite_export import export_and_verify  # optional stage; keeps the trainer import light

        report["tflite"] = export_and_verify(
            slim, split, os.path.join(workdir, "tflite"), representative_size=config.export.representative_size
        )
    model_io.write_json_atomic(os.path.join(workdir, REPORT_FILE), report, indent=2)
    logging.info(
        "Done in %.0f s: natural %.4f, PGD-%d %.4f; %s ratio %.4f (target %.4f); params %d -> %d.",
        report["wall_time_seconds"]["total"],
        metrics["natural_accuracy"],
        config.eval.pgd_steps,
        metrics["pgd_accuracy"],
        train.cost,
        achieved,
        train.target_ratio,
        report["params"]["dense"],
        report["params"]["stripped"],
    )
    return report
