"""Catastrophic-overfitting diagnosis of a trainer checkpoint: natural, training-attack, FGSM and PGD-10 accuracy.

Loads the last checkpoint a `tfrobustprune.train` run left in `WORKDIR/backup` (the end of its last completed
epoch; also after a crash or a stop) with the run's config, and measures on the first `--size` training and
validation images:

- natural accuracy;
- accuracy on the images of the run's training attack at that checkpoint (e.g. N-FGSM with the config's noise;
  PGD-K inside the PGD warm-up and after the guard's fallback, whose checkpoint holds the restored weights),
  crafted with BN in inference mode;
- FGSM accuracy (no random start) and PGD-10 accuracy (step 2/255, random start), eps from the config.

Catastrophic overfitting (Wong et al., 2020) shows as a model that single-step attacks (FGSM, the training
attack) barely hurt while PGD-10 drives it to near zero: the single-step gradient no longer points to the loss
maximum. The verdict `catastrophic_overfitting` is true when PGD-10 accuracy is below 5% while FGSM or the
training attack keeps at least half of the natural accuracy.

    python benchmarks/co_diagnosis.py --config=configs/resnet20_cifar10.py:cost=params,target=0.584 \\
        --config.data.path=../shared/data/cifar10 --workdir=runs/r20_0.16M --out=/tmp/co.json
"""

import json
import os
import sys
from typing import NamedTuple

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # config files import `configs.common`

_CONFIG = _WORKDIR = _SIZE = _OUT = None  # flag holders, defined by `define_flags`


def define_flags():
    """Defines the script's flags; only when run as a script, so tests can import its functions in a process
    whose global absl flags (e.g. tflite_export's `--out`) would otherwise clash with these."""
    global _CONFIG, _WORKDIR, _SIZE, _OUT
    _CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config (the one it trained with).")
    _WORKDIR = flags.DEFINE_string("workdir", None, "The trainer's --workdir (reads backup/latest.weights.h5).")
    _SIZE = flags.DEFINE_integer("size", 512, "Images from each split.")
    _OUT = flags.DEFINE_string("out", None, "Result JSON (default: print only).")


CHECKPOINT = os.path.join("backup", "latest.weights.h5")


def co_verdict(natural, training_attack, fgsm, pgd10, pgd_floor=0.05, single_step_share=0.5, min_natural=0.2):
    """Bool: the catastrophic-overfitting signature (single-step attacks fail, PGD succeeds).

    Args:
        natural: Float, natural accuracy.
        training_attack: Float, accuracy on the training attack's images.
        fgsm: Float, FGSM accuracy.
        pgd10: Float, PGD-10 accuracy.
        pgd_floor: Float, PGD accuracy under which the model counts as not robust.
        single_step_share: Float, share of the natural accuracy a single-step attack leaves for it to count as failed.
        min_natural: Float, natural accuracy below which the network counts as untrained (twice chance on
            CIFAR-10), not as overfitted.

    Returns:
        True when `natural >= min_natural`, `pgd10 < pgd_floor` and
        `max(fgsm, training_attack) >= single_step_share * natural`.

    Example:

    >>> co_verdict(natural=0.38, training_attack=0.35, fgsm=0.35, pgd10=0.002)
    True
    >>> co_verdict(natural=0.65, training_attack=0.45, fgsm=0.42, pgd10=0.38)
    False
    >>> co_verdict(natural=0.10, training_attack=0.07, fgsm=0.06, pgd10=0.01)  # at chance: untrained
    False
    """
    return bool(
        natural >= min_natural and pgd10 < pgd_floor and max(fgsm, training_attack) >= single_step_share * natural
    )


def diagnose(network, attack_name, epsilon, step, x, y, pgd_steps=10, seed=0, noise=None):
    """Accuracies of a network on images: natural, its training attack, FGSM and PGD-10.

    Args:
        network: Keras classifier of images in [0, 1].
        attack_name: The training attack (`attacks.ATTACKS`).
        epsilon: Float, L-infinity budget in pixels.
        step: Float or None, the training attack's step (None: its default).
        x: uint8 images.
        y: Int labels.
        pgd_steps: Int, iterations of a "pgd" training attack.
        seed: Int, random starts.
        noise: Float or None (2 * epsilon), an "n_fgsm" training attack's noise half-width.

    Returns:
        Dict of accuracies and the verdict.
    """
    import tensorflow as tf

    from tfrobustprune import attacks, robustness

    # Natural, FGSM and PGD-10 (step 2/255) come from the library's evaluation; only the training attack is ours.
    report = robustness.evaluate_robustness(network, x, y, "fgsm,pgd10", epsilon, 2 / 255, seed=seed, checks=False)
    # An even batch: TF 2.21's oneDNN input gradient crashes on odd ones for some widths (attacks.pad_batch).
    padded = attacks.pad_batch(np.arange(len(y)))
    images = tf.constant(x[padded].astype("float32") / 255.0)
    loss_of = attacks.cross_entropy_of(network, tf.constant(y[padded]), training=False)
    attacked = attacks.make_training_attack(attack_name, epsilon, step, pgd_steps, noise)(
        loss_of, images, tf.constant([seed, 0], tf.int64)
    )
    predictions = np.argmax(network.predict(attacked, batch_size=256, verbose=0), -1)[: len(y)]
    result = {
        "images": int(len(y)),
        "natural": report.natural_accuracy,
        "training_attack": float(np.mean(predictions == y)),
        "fgsm": report.robust_accuracy["fgsm"],
        "pgd10": report.robust_accuracy["pgd10"],
    }
    result["catastrophic_overfitting"] = co_verdict(
        result["natural"], result["training_attack"], result["fgsm"], result["pgd10"]
    )
    return result


class AttackInForce(NamedTuple):
    """The attack a run trained with at a checkpoint.

    Attributes:
        name: Str, an `attacks.ATTACKS` name.
        step: Float or None (the attack's default step).
        pgd_steps: Int, iterations of a "pgd" attack.
        noise: Float or None (2 eps), an "n_fgsm" attack's noise half-width.
        reason: Str, why this attack: "config" (`config.attack`), "pgd_warmup" (the checkpoint lies inside
            `guard.pgd_warmup_epochs`) or "fallback" (the guard's switch to PGD, for good).
        fallback_at: Int or None, the 1-based epoch of the guard's fallback.
    """

    name: str
    step: float | None
    pgd_steps: int
    noise: float | None
    reason: str
    fallback_at: int | None


def attack_in_force(config, workdir, epoch):
    """The attack the run trained its last epoch before the checkpoint with.

    After the guard's fallback (`guard.fallback_steps`, recorded in `backup/guard.json`) that is PGD-K with
    step eps / K, not `config.attack`; so it is for a checkpoint inside the PGD warm-up
    (`guard.pgd_warmup_epochs`), whose attack is the same PGD-K.

    Args:
        config: The run's config.
        workdir: Str, the trainer's --workdir.
        epoch: Int, the epochs completed at the checkpoint (its `training_metadata.json`).

    Returns:
        An `AttackInForce`.
    """
    from tfrobustprune import attacks, callback, config_check

    attack = config.attack
    guard_path = os.path.join(workdir, "backup", "guard.json")
    fallback_at = None
    if os.path.exists(guard_path):
        with open(guard_path) as f:
            fallback_at = json.load(f).get("fallback_at")
    warmup = config_check.optional(config, "guard.pgd_warmup_epochs") or 0
    # `epoch` epochs completed: the last one, 0-based `epoch - 1`, was warm if below `warmup` (as in the callback).
    if fallback_at is not None or (callback.pgd_warmup_replaces(attack.name, warmup) and epoch - 1 < warmup):
        pgd = attacks.pgd_k(attack.epsilon, config.guard.fallback_steps)
        reason, at = ("fallback", fallback_at + 1) if fallback_at is not None else ("pgd_warmup", None)
        return AttackInForce(pgd["attack"], pgd["step"], pgd["pgd_steps"], None, reason, at)
    # As `train_lib.build_model` reads it; `config_check` keeps it 0 (None here) unless the attack is N-FGSM.
    noise = config_check.optional(config, "attack.noise") or None
    return AttackInForce(attack.name, attack.step or None, attack.pgd_steps, noise, "config", None)


def load_checkpoint(model, checkpoint):
    """Loads a trainer checkpoint into `model`; tolerates only missing trainer scalars of older releases.

    Raises:
        app.UsageError: when any network weight could not be loaded (the config does not match the run).
    """
    # Weights (gates aside: a dense run never moves them) all change in training; one still at its initial
    # value after loading was not in the checkpoint. Taken before any attempt, which may load part of it.
    initial = [np.array(v) for v in model.weight_variables]
    try:
        model.load_weights(checkpoint)
        return
    except ValueError as error:
        logging.warning("Retrying with skip_mismatch (%s)", str(error).splitlines()[0])
    model.load_weights(checkpoint, skip_mismatch=True)
    unloaded = [v.path for v, old in zip(model.weight_variables, initial) if np.array_equal(np.array(v), old)]
    if unloaded:
        raise app.UsageError(
            f"--config does not match the run in --workdir: {len(unloaded)} network weights were not in its "
            f"checkpoint (e.g. {unloaded[0]}); pass the config the run trained with. Received: {checkpoint!r}"
        )


def main(argv):
    del argv
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required (the run's config and its --workdir).")
    if _SIZE.value < 1:
        raise app.UsageError(f"--size must be >= 1. Received: {_SIZE.value}")
    checkpoint = os.path.join(_WORKDIR.value, CHECKPOINT)
    metadata_path = os.path.join(_WORKDIR.value, "backup", "training_metadata.json")
    if not os.path.exists(checkpoint) or not os.path.exists(metadata_path):
        raise app.UsageError(
            f"--workdir: no trainer checkpoint ({CHECKPOINT} and its training_metadata.json). "
            f"Received: {_WORKDIR.value!r}"
        )
    from tfrobustprune import config_check, train_lib

    if os.path.exists(os.path.join(_WORKDIR.value, train_lib.FREEZE_FILE)):
        raise app.UsageError(
            f"--workdir: a run stripped at the gate freeze (train.strip_at_freeze); its last epochs trained the "
            f"stripped model ({train_lib.SLIM_BACKUP}/), which this script does not read: {CHECKPOINT} is the pruning "
            f"phase's. Received: {_WORKDIR.value!r}"
        )
    config = _CONFIG.value
    config_check.validate(config)
    recorded, name = train_lib.recorded_config(_WORKDIR.value)
    changes = train_lib.config_changes(recorded, config) if recorded is not None else []
    if changes:  # e.g. a config file whose defaults changed since the run; the attack fields matter most here
        logging.warning("--config differs from the run's (%s): %s", name, "; ".join(changes))
    split = train_lib.load_data(config)
    model = train_lib.build_model(config, split.num_classes, max(1, len(split.x_train) // config.train.batch_size))
    load_checkpoint(model, checkpoint)
    with open(metadata_path) as f:
        epoch = json.load(f).get("epoch")
    attack = attack_in_force(config, _WORKDIR.value, epoch or 0)
    result = {
        "command": " ".join(sys.argv),
        "workdir": os.path.abspath(_WORKDIR.value),
        "checkpoint_epoch": epoch,  # Keras' BackupAndRestore records the number of completed epochs
        "attack": attack.name,
        "attack_step": attack.step,
        "attack_noise": attack.noise,
        "attack_reason": attack.reason,
        "fallback_at": attack.fallback_at,
        "epsilon": config.attack.epsilon,
        "cost_ratio": model.cost_model.ratio(config.train.cost),
    }
    n = _SIZE.value
    for part, x, y in (("train", split.x_train[:n], split.y_train[:n]), ("val", split.x_val[:n], split.y_val[:n])):
        result[part] = diagnose(
            model.network,
            attack.name,
            config.attack.epsilon,
            attack.step,
            x,
            y,
            pgd_steps=attack.pgd_steps,
            noise=attack.noise,
        )
        logging.info("%s: %s", part, result[part])
    print(json.dumps(result, indent=2))
    if _OUT.value:
        from tfrobustprune import model_io

        model_io.write_json_atomic(_OUT.value, result, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
