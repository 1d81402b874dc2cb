"""`RobustPruneCallback`: lambda schedule, gate freeze, catastrophic-overfitting guard, width logs."""

import json
import numbers
import os

import keras
import numpy as np
from absl import logging

from tfrobustprune import attacks as attacks_lib
from tfrobustprune import budget, magnitude, model_io


def lambda_schedule(epoch, lambda_max, warmup_epochs=0, ramp_epochs=0):
    """Hardware-loss weight at an epoch: 0 during warm-up, a linear ramp, then `lambda_max`.

    Args:
        epoch: Int, 0-based epoch.
        lambda_max: Float >= 0.
        warmup_epochs: Int >= 0, epochs with no hardware loss.
        ramp_epochs: Int >= 0, epochs of the linear ramp after warm-up.

    Returns:
        Float.
    """
    if epoch < warmup_epochs:
        return 0.0
    if ramp_epochs <= 0:
        return float(lambda_max)
    return float(lambda_max) * min(1.0, (epoch - warmup_epochs + 1) / ramp_epochs)


def target_schedule(epoch, target_ratio, start_epoch=0, glide_epochs=0):
    """Cost ratio the hardware loss aims at in an epoch: from 1 down to `target_ratio` on a cubic.

    Gradual pruning (Zhu & Gupta, 2018): the target falls fast while the
    network is wide and slowly near the end, `r = target + (1 - target) *
    (1 - t)^3` with `t` the fraction of the glide done. Without a glide the
    gates, whose steps do not grow with the loss weight, close every channel
    they will close within the first epoch of the hardware loss, a shock the
    network's robustness takes epochs to recover from.

    Args:
        epoch: Int, 0-based epoch.
        target_ratio: Float in (0, 1], the final target.
        start_epoch: Int >= 0, first epoch of the glide (the hardware loss's first epoch).
        glide_epochs: Int >= 0, epochs to reach `target_ratio`; 0 aims at it from the start.

    Returns:
        Float.
    """
    if glide_epochs <= 0:
        return float(target_ratio)
    done = min(1.0, max(0, epoch - start_epoch + 1) / glide_epochs)
    return float(target_ratio + (1.0 - target_ratio) * (1.0 - done) ** 3)


def pgd_warmup_replaces(attack, pgd_warmup_epochs):
    """Whether `RobustPruneCallback`'s PGD warm-up trains in place of `attack` in the first epochs.

    Only single-step attacks are warmed up: "pgd" is multi-step already and "none" trains on clean images.

    Args:
        attack: Str, the model's training attack (`attacks.ATTACKS`).
        pgd_warmup_epochs: Int, the callback's `pgd_warmup_epochs` (0: no warm-up).

    Returns:
        Bool.

    Example:
    >>> pgd_warmup_replaces("n_fgsm", 6), pgd_warmup_replaces("pgd", 6), pgd_warmup_replaces("n_fgsm", 0)
    (True, False, False)
    """
    return bool(pgd_warmup_epochs) and attack not in ("pgd", "none")


class RobustPruneCallback(keras.callbacks.Callback):
    """Drives a `RobustPruneModel` through `fit`: schedule, freeze, overfitting guard, logs.

    Each epoch it sets `hw_lambda` from `lambda_schedule` and the loss's current
    target `hw_target` from `target_schedule` (a glide from 1 to the model's
    `target_ratio` over `target_glide_epochs`, starting after the warm-up); at `freeze_epoch` it
    closes the least important channels until the cost target holds exactly
    (`budget.close_to_target`) and freezes the gates, so the remaining epochs
    train weights only. After each epoch it measures PGD accuracy on a fixed
    probe batch (Wong et al., 2020); if it falls more than `max_drop`
    below the best so far, or lies more than `max_attack_gap` below the epoch's
    accuracy against the training attack (catastrophic overfitting: the model
    fits its single-step attack and no other), the best weights come back (the
    weights at the start of the guarded stretch, the fit's first epoch or the
    freeze, if no epoch has passed yet) and training either stops or, with
    `fallback_steps`, goes on with PGD. Per-group widths, the hard cost ratio, `hw_lambda`
    and the probe accuracy go into `logs`, so `History` and `TensorBoard`
    (placed after this callback) record them.

    Args:
        lambda_max: Float >= 0, final hardware-loss weight.
        warmup_epochs: Int >= 0, epochs with `hw_lambda = 0` (the gates hold still).
        ramp_epochs: Int >= 0, epochs of linear ramp to `lambda_max`.
        freeze_epoch: Int or None, 0-based epoch at whose start the gates freeze.
        target_glide_epochs: Int >= 0, epochs over which the target falls from 1 to
            the model's `target_ratio` (0: the final target from the start).
        enforce_target: Bool, close channels at the freeze until the target holds.
        probe_data: `(x, y)` numpy arrays (uint8 or float in [0, 1]) for the
            guard, or None to disable it.
        probe_steps: Int, PGD iterations on the probe batch.
        max_drop: Float, robust-accuracy drop below the best that counts as a collapse.
        max_relative_drop: Float, fraction of the best robust accuracy (once it
            is at least 0.05) whose loss also counts as a collapse; 1.0 turns
            this test off.
        max_attack_gap: Float in (0, 1], how far the probe's PGD accuracy may
            lie below the epoch's training accuracy (`logs["accuracy"]`, the
            accuracy on the training attack's examples) before it counts as a
            collapse; needs no earlier epoch, so it also catches a collapse in
            the first epoch. On 186 epochs of full CIFAR-10 ResNet20 runs the
            7 collapses measured 0.21-0.53, healthy single-step epochs at most
            0.19 (0.12 except right before a collapse), PGD-2 epochs at most
            0.08 (`benchmarks/guard_attack_gap.py`). 1.0 turns this test off.
        fallback_steps: Int >= 0. 0: a collapse stops training and restores the
            best weights (early stopping, Wong et al. 2020). K > 0: the first
            collapse restores the best weights and training goes on with a
            K-step PGD attack (step eps / K) instead of the single-step one; a
            second collapse stops.
        pgd_warmup_epochs: Int >= 0, first epochs trained with PGD-`fallback_steps`
            (step eps / K) instead of the model's single-step attack, which comes
            back after them (unless the guard fell back to PGD meanwhile). Every
            catastrophic overfitting of this project's full CIFAR-10 ResNet20 runs
            came in epochs 1-4, during the learning-rate warm-up; PGD-2 costs 1.5x
            a single-step epoch. Needs `fallback_steps` > 0; no effect on a model
            trained with PGD or without an attack.
        state_dir: Optional directory where the guard keeps its best accuracy
            and weights, so a resumed run (see `BackupAndRestore`) continues
            the guard where the interrupted one left it.
        verbose: Int, 1 prints a line per epoch through absl logging.

    Example:

    >>> callback = RobustPruneCallback(lambda_max=2.0, warmup_epochs=1, ramp_epochs=3,
    ...                                freeze_epoch=20, probe_data=(x_val[:256], y_val[:256]))
    >>> model.fit(train_ds, epochs=30, callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(
        self,
        lambda_max=1.0,
        warmup_epochs=0,
        ramp_epochs=0,
        freeze_epoch=None,
        target_glide_epochs=0,
        enforce_target=True,
        probe_data=None,
        probe_steps=5,
        max_drop=0.2,
        max_relative_drop=0.5,
        max_attack_gap=0.2,
        fallback_steps=0,
        pgd_warmup_epochs=0,
        state_dir=None,
        verbose=1,
    ):
        super().__init__()
        if lambda_max < 0:
            raise ValueError(f"`lambda_max` must be >= 0. Received: lambda_max={lambda_max}")
        if warmup_epochs < 0 or ramp_epochs < 0:
            raise ValueError(
                f"`warmup_epochs` and `ramp_epochs` must be >= 0. Received: warmup_epochs={warmup_epochs}, "
                f"ramp_epochs={ramp_epochs}"
            )
        if target_glide_epochs < 0:
            raise ValueError(f"`target_glide_epochs` must be >= 0. Received: target_glide_epochs={target_glide_epochs}")
        if freeze_epoch is not None and freeze_epoch < 0:
            raise ValueError(f"`freeze_epoch` must be >= 0 or None. Received: freeze_epoch={freeze_epoch}")
        fractions = dict(max_drop=max_drop, max_relative_drop=max_relative_drop, max_attack_gap=max_attack_gap)
        for name, value in fractions.items():
            if not 0.0 < value <= 1.0:
                raise ValueError(f"`{name}` must be in (0, 1]. Received: {name}={value}")
        for name, value in dict(fallback_steps=fallback_steps, pgd_warmup_epochs=pgd_warmup_epochs).items():
            if int(value) != value or value < 0:
                raise ValueError(f"`{name}` must be an integer >= 0. Received: {name}={value}")
        if pgd_warmup_epochs and not fallback_steps:
            raise ValueError(
                "`pgd_warmup_epochs` trains with PGD-`fallback_steps`, which must then be > 0. Received: "
                f"pgd_warmup_epochs={pgd_warmup_epochs}, fallback_steps={fallback_steps}"
            )
        self.pgd_warmup_epochs = int(pgd_warmup_epochs)
        self.lambda_max, self.warmup_epochs, self.ramp_epochs = float(lambda_max), int(warmup_epochs), int(ramp_epochs)
        self.freeze_epoch, self.enforce_target = freeze_epoch, bool(enforce_target)
        self.target_glide_epochs = int(target_glide_epochs)
        self.probe_data, self.probe_steps, self.max_drop = probe_data, int(probe_steps), float(max_drop)
        self.max_relative_drop, self.fallback_steps = float(max_relative_drop), int(fallback_steps)
        self.max_attack_gap = float(max_attack_gap)
        self.fallback_at = None
        self.verbose = verbose
        self.state_dir = state_dir
        self.collapsed_at = None
        self.freeze_result = None

    def on_train_begin(self, logs=None):
        # Allow instances to be re-used across `model.fit()` calls.
        self._best_acc, self._best_weights, self._best_epoch = -1.0, None, None
        self._start_weights = self._start_epoch = self._stop_weights = None
        self.collapsed_at = self.fallback_at = None
        self._probe_fn = None
        if not hasattr(self.model, "hw_lambda") or not hasattr(self.model, "cost_model"):
            raise TypeError(
                "RobustPruneCallback needs a RobustPruneModel (with `hw_lambda` and `cost_model`). "
                f"Received: model={type(self.model).__name__}"
            )
        # The model's own single-step attack, which the PGD warm-up replaces for its first epochs (None: nothing to warm).
        model = self.model
        single_step = pgd_warmup_replaces(model.attack, self.pgd_warmup_epochs)
        self._own_attack = dict(attack=model.attack, step=model.step, noise=model.noise) if single_step else None
        self._load_state()

    @staticmethod
    def _state_paths_in(state_dir):
        return os.path.join(state_dir, "guard.json"), os.path.join(state_dir, "guard_best_weights.npz")

    def _state_paths(self):
        return self._state_paths_in(self.state_dir)

    @staticmethod
    def _write_meta(meta_path, best_acc, best_epoch, fallback_at):
        model_io.write_json_atomic(
            meta_path, {"best_acc": best_acc, "best_epoch": best_epoch, "fallback_at": fallback_at}
        )

    def _save_state(self):
        if not self.state_dir:
            return
        os.makedirs(self.state_dir, exist_ok=True)
        meta_path, weights_path = self._state_paths()
        if self._best_weights is not None:
            model_io.write_npz_atomic(weights_path, *self._best_weights)
        self._write_meta(meta_path, self._best_acc, self._best_epoch, self.fallback_at)

    @classmethod
    def seed_fallback(cls, state_dir, fallback_at):
        """Makes the callback that will resume from `state_dir` start in the fallback attack.

        For a fit that continues another one that had already switched to PGD
        (e.g. the stripped model trained on after the freeze): the new fit trains
        with PGD-`fallback_steps` from its first epoch, and a second collapse
        stops it. A state already in `state_dir` (a resumed run) is kept.

        Args:
            state_dir: The `state_dir` of the callback that will continue.
            fallback_at: 0-based epoch at which the earlier fit switched to PGD.

        Returns:
            True if the state was written, False if `state_dir` already held one.

        Raises:
            ValueError: If `fallback_at` is not an integer >= 0.
        """
        if isinstance(fallback_at, bool) or not isinstance(fallback_at, numbers.Integral) or fallback_at < 0:
            raise ValueError(f"`fallback_at` must be an integer >= 0. Received: fallback_at={fallback_at!r}")
        if not state_dir:
            raise ValueError(f"`state_dir` must be a directory path. Received: state_dir={state_dir!r}")
        meta_path = cls._state_paths_in(state_dir)[0]
        if os.path.exists(meta_path):
            return False
        os.makedirs(state_dir, exist_ok=True)
        cls._write_meta(meta_path, -1.0, None, int(fallback_at))
        return True

    def _load_state(self):
        if not self.state_dir or not os.path.exists(self._state_paths()[0]):
            return
        meta_path, weights_path = self._state_paths()
        with open(meta_path) as f:
            state = json.load(f)
        self._best_acc, self._best_epoch = state["best_acc"], state["best_epoch"]
        if state.get("fallback_at") is not None:  # the interrupted run had switched attacks: so does this one
            if not self.fallback_steps:
                raise ValueError(
                    f"The run in {self.state_dir} switched to PGD after catastrophic overfitting at epoch "
                    f"{state['fallback_at'] + 1}; resume it with `fallback_steps` > 0. Received: fallback_steps=0"
                )
            self._switch_to_fallback(state["fallback_at"])
        if os.path.exists(weights_path):
            with np.load(weights_path) as arrays:
                self._best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

    def freeze(self):
        """Meets the cost target (if `enforce_target`) and freezes the gates."""
        model = self.model
        if self.enforce_target:
            if magnitude.rank_untrained_gates_by_norm(model.network, model.cost_model):
                logging.warning("The gates never trained (no epoch with hw_lambda > 0): closing by relative L1 norm.")
            self.freeze_result = budget.close_to_target(
                model.network, model.cost_metric, model.target_ratio, model.cost_model
            )
            if not self.freeze_result["reachable"]:
                logging.warning(
                    "Cost target %.3f is below what the floors allow; stopped at %.3f.",
                    model.target_ratio,
                    self.freeze_result["ratio"],
                )
        model.freeze_gates()
        # Weights from before the freeze belong to other gates: the guard starts afresh.
        self._best_acc, self._best_weights, self._best_epoch = -1.0, None, None
        self._save_state()
        if self.verbose:
            logging.info(
                "Gates frozen: %s ratio %.4f (target %.4f).",
                model.cost_metric,
                model.cost_model.ratio(model.cost_metric),
                model.target_ratio,
            )

    def _in_pgd_warmup(self):
        """Whether the model trains with the warm-up's PGD now (not with its own attack, nor after a fallback)."""
        own = self._own_attack
        return own is not None and self.fallback_at is None and self.model.attack != own["attack"]

    def _pgd_warmup(self, epoch):
        """PGD-`fallback_steps` in the first `pgd_warmup_epochs`, then the model's own attack (unless it fell back)."""
        if self._own_attack is None or self.fallback_at is not None:
            return
        warm = epoch < self.pgd_warmup_epochs
        if warm == self._in_pgd_warmup():
            return
        if warm:
            self.model.set_training_attack(**attacks_lib.pgd_k(self.model.epsilon, self.fallback_steps))
        else:
            self.model.set_training_attack(**self._own_attack)
        if self.verbose:
            logging.info(
                "Epoch %d: training attack %s (PGD warm-up: epochs 1-%d).",
                epoch + 1,
                f"PGD-{self.fallback_steps}" if warm else self._own_attack["attack"],
                self.pgd_warmup_epochs,
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._pgd_warmup(epoch)
        if self.model.gates_frozen():
            self.model.freeze_gates()  # resumed after the freeze (restored optimizer state): mark the gates
        elif self.freeze_epoch is not None and epoch >= self.freeze_epoch:
            self.freeze()
        self.model.hw_lambda.assign(lambda_schedule(epoch, self.lambda_max, self.warmup_epochs, self.ramp_epochs))
        self.model.hw_target.assign(
            target_schedule(epoch, self.model.target_ratio, self.warmup_epochs, self.target_glide_epochs)
        )
        if self.probe_data is not None and self._best_weights is None:
            # No epoch of this stretch (the fit, or the frozen gates) has passed the probe: a collapse in this
            # epoch has no best weights to return to, so it returns here. Taken here, not in `on_train_begin`,
            # because `BackupAndRestore` restores a resumed run's weights after that.
            self._start_weights = [np.array(w) for w in self.model.get_weights()]
            self._start_epoch = epoch

    def _probe_pgd_accuracy(self):
        if self._probe_fn is None:
            self._probe_fn = attacks_lib.make_pgd_accuracy(
                self.model.network,
                epsilon=self.model.epsilon,
                step=max(self.model.epsilon / 4, 1e-8),
                steps=self.probe_steps,
            )
        return self._probe_fn(*self.probe_data)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        model = self.model
        logs["hw_lambda"] = float(keras.ops.convert_to_numpy(model.hw_lambda))
        logs["hw_target"] = float(keras.ops.convert_to_numpy(model.hw_target))
        logs["hard_cost_ratio"] = model.cost_model.ratio(model.cost_metric)
        logs["gates_frozen"] = float(model.gates_frozen())
        for name, width in model.cost_model.named_widths().items():
            logs[f"width/{name}"] = float(width)
        if self.probe_data is None or model.epsilon == 0.0:
            return
        acc = logs["probe_pgd_acc"] = self._probe_pgd_accuracy()
        # The epoch's accuracy on its training attack's examples; natural training has no attack to overfit.
        train_acc = None if model.attack == "none" else logs.get("accuracy")
        gap = None if train_acc is None else float(train_acc) - acc
        if gap is not None:
            logs["probe_attack_gap"] = gap
        if self.verbose:
            logging.info(
                "epoch %d: probe PGD-%d accuracy %.3f, %s ratio %.4f, lambda %.3g",
                epoch + 1,
                self.probe_steps,
                acc,
                model.cost_metric,
                logs["hard_cost_ratio"],
                logs["hw_lambda"],
            )
        reason = self._collapse_reason(acc, gap)
        # Logged every probed epoch, not only at a collapse: CSVLogger keeps the keys of a fit's first epoch.
        logs["catastrophic_overfitting"] = 0.0 if reason is None else 1.0
        if reason is None:
            if acc > self._best_acc:
                self._best_acc, self._best_epoch = acc, epoch
                self._best_weights = [np.array(w) for w in model.get_weights()]
                self._save_state()
            return
        if self._best_weights is not None:
            weights, where = self._best_weights, f"the weights of epoch {self._best_epoch + 1}"
        else:
            weights, where = self._start_weights, f"the weights from the start of epoch {self._start_epoch + 1}"
        if self.fallback_steps and self.fallback_at is None:
            logging.warning(
                "Catastrophic overfitting at epoch %d: %s; restoring %s and training on with PGD-%d.",
                epoch + 1,
                reason,
                where,
                self.fallback_steps,
            )
            model.set_weights(weights)
            self._switch_to_fallback(epoch)
            self._save_state()
            return
        self.collapsed_at, self._stop_weights = epoch, (weights, where)
        model.stop_training = True
        logging.warning(
            "Catastrophic overfitting at epoch %d: %s; stopping and restoring %s.", epoch + 1, reason, where
        )

    def _collapse_reason(self, acc, gap):
        """Why probe accuracy `acc` (with `gap`, the epoch's training accuracy minus `acc`, or None) is a
        collapse, or None if it is not: more than `max_attack_gap` below the training accuracy; `max_drop`
        below the best; or, once the best is at least 0.05, below `(1 - max_relative_drop)` of it (early in
        training the best is small)."""
        if gap is not None and gap > self.max_attack_gap:
            return f"probe PGD accuracy {acc:.3f} lies {gap:.3f} below the epoch's training accuracy {acc + gap:.3f}"
        if self._best_weights is None:
            return None
        relative = self._best_acc >= 0.05 and acc < (1.0 - self.max_relative_drop) * self._best_acc
        if acc < self._best_acc - self.max_drop or relative:
            return f"probe PGD accuracy {acc:.3f} fell from {self._best_acc:.3f} (epoch {self._best_epoch + 1})"
        return None

    def _switch_to_fallback(self, epoch):
        self.fallback_at = epoch
        model = self.model
        model.set_training_attack(**attacks_lib.pgd_k(model.epsilon, self.fallback_steps))

    def on_train_end(self, logs=None):
        if self._in_pgd_warmup():  # the fit ended inside the warm-up: the model leaves with its own attack
            self.model.set_training_attack(**self._own_attack)
        if self.collapsed_at is not None and self._stop_weights is not None:
            weights, where = self._stop_weights
            self.model.set_weights(weights)
            logging.warning("Restored %s.", where)
        if self.freeze_epoch is not None and not self.model.gates_frozen():
            # Training ended (or stopped) before the freeze: the model still leaves meeting its target.
            self.freeze()
