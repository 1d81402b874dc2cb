"""Validation of training configs: one clear line per mistake, before any work starts."""

from tfrobustprune import attacks, data, models
from tfrobustprune.cost import COST_METRICS
from tfrobustprune.robust_model import HW_LOSSES

# How `train.weight_decay` is applied: added to the gradients (torch.optim.SGD) or by Keras' SGD beside the update.
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
# `train.jit_compile`, passed to `Model.compile`: "auto" (Keras: XLA off on a CPU-only machine), or XLA on / off.
JIT_COMPILE_MODES = (True, False, "auto")

# Fields added after the first configs were written, and what a config without one means: the behaviour before the
# field existed. The trainer reads them through `optional`; `train_lib.config_changes` compares with them.
OPTIONAL_FIELDS = {
    "deterministic": False,
    "init_model": "",
    "model.width": 16,
    "attack.noise": 0.0,
    "train.weight_decay_mode": "decoupled",
    "train.cost_sensitivity": 1.0,
    "train.importance_pressure": 0.0,
    "train.center_task_gradient": False,
    "train.target_glide_epochs": 0,
    "train.strip_at_freeze": False,
    "train.jit_compile": "auto",
    "guard.max_relative_drop": 0.5,
    "guard.fallback_steps": 0,
    "guard.max_attack_gap": 1.0,
    "guard.pgd_warmup_epochs": 0,
    "export.tflite": False,
}


def optional(config, field):
    """The value of an optional config field, or the value its absence means.

    Args:
        config: A training `ConfigDict` (or nested dict).
        field: Str, a key of `OPTIONAL_FIELDS`, e.g. `"train.cost_sensitivity"`.

    Returns:
        The config's value, or `OPTIONAL_FIELDS[field]` when the config (written before the field existed) lacks it.
    """
    if field not in OPTIONAL_FIELDS:
        raise KeyError(f"field: expected one of {sorted(OPTIONAL_FIELDS)}. Received: {field!r}")
    section, _, key = field.rpartition(".")
    node = _get(config, section) if section else config
    return node.get(key, OPTIONAL_FIELDS[field])


def weight_decay_mode(config):
    """How the config applies its weight decay.

    Args:
        config: A training `ConfigDict` (or dict) with a `train` section.

    Returns:
        Str, `config.train.weight_decay_mode`, or `"decoupled"` for configs that predate it.
    """
    return optional(config, "train.weight_decay_mode")


class ConfigError(ValueError):
    """A config field holds a value the trainer cannot use; the message names the field."""


def _require(condition, field, allowed, value):
    if not condition:
        raise ConfigError(f"config.{field}: expected {allowed}. Received: {value!r}")


def _get(config, path):
    node = config
    for key in path.split("."):
        try:
            node = node[key]
        except (KeyError, TypeError) as error:
            raise ConfigError(f"config.{path}: missing field.") from error
    return node


def _number(config, path):
    value = _get(config, path)
    _require(isinstance(value, int | float) and not isinstance(value, bool), path, "a number", value)
    return value


def _optional_number(config, path):
    """`_number` for a field older configs may lack (`OPTIONAL_FIELDS`)."""
    value = optional(config, path)
    _require(isinstance(value, int | float) and not isinstance(value, bool), path, "a number", value)
    return value


def validate(config):
    """Checks every field the trainer reads; raises `ConfigError` naming the first bad one.

    Args:
        config: An `ml_collections.ConfigDict` (see configs/resnet20_cifar10.py).

    Raises:
        ConfigError: with the field, the allowed values and what was received.
    """
    model_name = _get(config, "model_name")
    _require(model_name in models.MODELS, "model_name", f"one of {sorted(models.MODELS)}", model_name)
    init_model = optional(config, "init_model") or ""
    _require(
        isinstance(init_model, str) and (not init_model or init_model.endswith(".keras")),
        "init_model",
        "empty or the path of a .keras file",
        init_model,
    )
    source = _get(config, "data.source")
    _require(source in data.SOURCES, "data.source", f"one of {list(data.SOURCES)}", source)
    if source == "npz":
        path = _get(config, "data.path")
        _require(isinstance(path, str) and path, "data.path", "a directory of .npz files", path)
    if source == "tfds":
        name = _get(config, "data.name")
        _require(
            name in ("cifar10", "cifar100", "svhn_cropped"),
            "data.name",
            "one of ['cifar10', 'cifar100', 'svhn_cropped']",
            name,
        )
    for key in ("train_size", "eval_size"):
        value = _get(config, f"data.{key}")
        _require(isinstance(value, int) and value >= 0, f"data.{key}", "an integer >= 0 (0: all)", value)
    val_size = _get(config, "data.val_size")
    _require(isinstance(val_size, int) and val_size >= 1, "data.val_size", "an integer >= 1", val_size)

    attack = _get(config, "attack.name")
    _require(attack in attacks.ATTACKS, "attack.name", f"one of {list(attacks.ATTACKS)}", attack)
    epsilon = _number(config, "attack.epsilon")
    _require(0.0 <= epsilon <= 64 / 255, "attack.epsilon", "a budget in [0, 64/255] pixels (e.g. 8/255)", epsilon)
    step = _number(config, "attack.step")
    _require(0.0 <= step <= 1.0, "attack.step", "a step in [0, 1] pixels (0: the attack's default)", step)
    noise = _optional_number(config, "attack.noise")
    _require(0.0 <= noise <= 1.0, "attack.noise", "a half-width in [0, 1] pixels (0: the attack's default)", noise)
    _require(noise == 0.0 or attack == "n_fgsm", "attack.noise", "0 unless attack.name is 'n_fgsm'", noise)
    pgd_steps = _get(config, "attack.pgd_steps")
    _require(
        isinstance(pgd_steps, int) and 1 <= pgd_steps <= 1000, "attack.pgd_steps", "an integer in [1, 1000]", pgd_steps
    )

    epochs = _get(config, "train.epochs")
    _require(isinstance(epochs, int) and epochs >= 1, "train.epochs", "an integer >= 1", epochs)
    batch = _get(config, "train.batch_size")
    _require(isinstance(batch, int) and 1 <= batch <= 65536, "train.batch_size", "an integer in [1, 65536]", batch)
    lr = _number(config, "train.learning_rate")
    _require(0.0 < lr <= 10.0, "train.learning_rate", "a float in (0, 10]", lr)
    cost = _get(config, "train.cost")
    _require(cost in COST_METRICS, "train.cost", f"one of {list(COST_METRICS)}", cost)
    target = _number(config, "train.target_ratio")
    _require(0.0 < target <= 1.0, "train.target_ratio", "a ratio in (0, 1]", target)
    hw_loss = _get(config, "train.hw_loss")
    _require(hw_loss in HW_LOSSES, "train.hw_loss", f"one of {list(HW_LOSSES)}", hw_loss)
    for key in ("lambda_max", "weight_decay", "momentum"):
        value = _number(config, f"train.{key}")
        _require(value >= 0.0, f"train.{key}", "a number >= 0", value)
    decay_mode = weight_decay_mode(config)
    _require(
        decay_mode in WEIGHT_DECAY_MODES, "train.weight_decay_mode", f"one of {list(WEIGHT_DECAY_MODES)}", decay_mode
    )
    sensitivity = _optional_number(config, "train.cost_sensitivity")
    _require(0.0 <= sensitivity <= 1.0, "train.cost_sensitivity", "a number in [0, 1]", sensitivity)
    importance = _optional_number(config, "train.importance_pressure")
    _require(importance >= 0.0, "train.importance_pressure", "a number >= 0", importance)
    center = optional(config, "train.center_task_gradient")
    _require(isinstance(center, bool), "train.center_task_gradient", "a bool", center)
    gate_lr = _number(config, "train.gate_learning_rate")
    _require(gate_lr > 0.0, "train.gate_learning_rate", "a number > 0", gate_lr)
    glide = optional(config, "train.target_glide_epochs")
    _require(isinstance(glide, int) and glide >= 0, "train.target_glide_epochs", "an integer >= 0", glide)
    for key in ("lambda_warmup_epochs", "lambda_ramp_epochs", "lr_warmup_epochs"):
        value = _get(config, f"train.{key}")
        _require(isinstance(value, int) and value >= 0, f"train.{key}", "an integer >= 0", value)
    freeze = _get(config, "train.freeze_epoch")
    _require(
        freeze is None or (isinstance(freeze, int) and freeze >= 0),
        "train.freeze_epoch",
        "an integer >= 0 or None",
        freeze,
    )
    strip_at_freeze = optional(config, "train.strip_at_freeze")
    _require(isinstance(strip_at_freeze, bool), "train.strip_at_freeze", "a bool", strip_at_freeze)
    jit_compile = optional(config, "train.jit_compile")
    _require(
        any(jit_compile is mode if isinstance(mode, bool) else jit_compile == mode for mode in JIT_COMPILE_MODES),
        "train.jit_compile",  # compared by identity for the bools: 1 == True
        f"one of {list(JIT_COMPILE_MODES)}",
        jit_compile,
    )
    deterministic = optional(config, "deterministic")
    _require(isinstance(deterministic, bool), "deterministic", "a bool", deterministic)
    _require(
        not (deterministic and jit_compile is True),
        "train.jit_compile",
        "False or 'auto' with deterministic=True (Keras compiles without XLA under op determinism)",
        jit_compile,
    )
    if strip_at_freeze:
        _require(
            freeze is not None and freeze < epochs,
            "train.freeze_epoch",
            f"an epoch in [0, train.epochs={epochs}) with train.strip_at_freeze (the epoch to strip at)",
            freeze,
        )

    min_channels = _get(config, "gates.min_channels")
    _require(isinstance(min_channels, int) and min_channels >= 1, "gates.min_channels", "an integer >= 1", min_channels)
    min_fraction = _number(config, "gates.min_fraction")
    _require(0.0 <= min_fraction < 1.0, "gates.min_fraction", "a fraction in [0, 1)", min_fraction)
    width = optional(config, "model.width")
    _require(
        min_channels <= width, "gates.min_channels", f"at most the narrowest layer ({width} channels)", min_channels
    )

    probe = _get(config, "guard.probe_size")
    _require(isinstance(probe, int) and probe >= 0, "guard.probe_size", "an integer >= 0 (0: no guard)", probe)
    drop = _number(config, "guard.max_drop")
    _require(0.0 < drop <= 1.0, "guard.max_drop", "a fraction in (0, 1]", drop)
    for field in ("guard.max_relative_drop", "guard.max_attack_gap"):
        fraction = _optional_number(config, field)
        _require(0.0 < fraction <= 1.0, field, "a fraction in (0, 1] (1: that test off)", fraction)
    fallback = optional(config, "guard.fallback_steps")
    _require(isinstance(fallback, int) and fallback >= 0, "guard.fallback_steps", "an integer >= 0", fallback)
    warmup = optional(config, "guard.pgd_warmup_epochs")
    _require(isinstance(warmup, int) and warmup >= 0, "guard.pgd_warmup_epochs", "an integer >= 0", warmup)
    _require(
        not warmup or fallback > 0,
        "guard.pgd_warmup_epochs",
        f"0 while guard.fallback_steps is 0 (the warm-up trains with PGD-fallback_steps; got {fallback})",
        warmup,
    )
    eval_steps = _get(config, "eval.pgd_steps")
    _require(isinstance(eval_steps, int) and eval_steps >= 1, "eval.pgd_steps", "an integer >= 1", eval_steps)
