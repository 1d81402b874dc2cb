"""`RobustPruneCallback`: lambda schedule, gate freeze, catastrophic-overfitting guard, width logs."""

import json
import os

import keras
import numpy as np
from absl import logging

from tfrobustprune import attacks as attacks_lib
from tfrobustprune import budget


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


class RobustPruneCallback(keras.callbacks.Callback):
    """Drives a `RobustPruneModel` through `fit`: schedule, freeze, overfitting guard, logs.

    Each epoch it sets `hw_lambda` from `lambda_schedule`; at `freeze_epoch` it
    closes the least important channels until the cost target holds exactly
    (`budget.close_to_target`) and freezes the gates, so the remaining epochs
    train weights only. After each epoch it measures PGD accuracy on a fixed
    held-out probe batch (Wong et al., 2020); if it falls more than `max_drop`
    below the best so far (catastrophic overfitting), training stops and the
    best weights come back. Per-group widths, the hard cost ratio, `hw_lambda`
    and the probe accuracy go into `logs`, so `History` and `TensorBoard`
    (placed after this callback) record them.

    Args:
        lambda_max: Float >= 0, final hardware-loss weight.
        warmup_epochs: Int >= 0, epochs with `hw_lambda = 0`.
        ramp_epochs: Int >= 0, epochs of linear ramp to `lambda_max`.
        freeze_epoch: Int or None, 0-based epoch at whose start the gates freeze.
        enforce_target: Bool, close channels at the freeze until the target holds.
        probe_data: `(x, y)` numpy arrays (uint8 or float in [0, 1]) for the
            guard, or None to disable it.
        probe_steps: Int, PGD iterations on the probe batch.
        max_drop: Float, robust-accuracy drop that counts as a collapse.
        state_dir: Optional directory where the guard keeps its best accuracy
            and weights, so a resumed run (see `BackupAndRestore`) continues
            the guard where the interrupted one left it.
        verbose: Int, 1 prints a line per epoch through absl logging.

    Example:

    >>> callback = RobustPruneCallback(lambda_max=2.0, warmup_epochs=1, ramp_epochs=3,
    ...                                freeze_epoch=20, probe_data=(x_val[:256], y_val[:256]))
    >>> model.fit(train_ds, epochs=30, callbacks=[callback])
    """

    def __init__(
        self,
        lambda_max=1.0,
        warmup_epochs=0,
        ramp_epochs=0,
        freeze_epoch=None,
        enforce_target=True,
        probe_data=None,
        probe_steps=5,
        max_drop=0.2,
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
        if freeze_epoch is not None and freeze_epoch < 0:
            raise ValueError(f"`freeze_epoch` must be >= 0 or None. Received: freeze_epoch={freeze_epoch}")
        if not 0.0 < max_drop <= 1.0:
            raise ValueError(f"`max_drop` must be in (0, 1]. Received: max_drop={max_drop}")
        self.lambda_max, self.warmup_epochs, self.ramp_epochs = float(lambda_max), int(warmup_epochs), int(ramp_epochs)
        self.freeze_epoch, self.enforce_target = freeze_epoch, bool(enforce_target)
        self.probe_data, self.probe_steps, self.max_drop = probe_data, int(probe_steps), float(max_drop)
        self.verbose = verbose
        self.state_dir = state_dir
        self.collapsed_at = None
        self.freeze_result = None

    def on_train_begin(self, logs=None):
        # Allow instances to be re-used across `model.fit()` calls.
        self._best_acc, self._best_weights, self._best_epoch = -1.0, None, None
        self.collapsed_at = None
        self._probe_fn = None
        if not hasattr(self.model, "hw_lambda") or not hasattr(self.model, "cost_model"):
            raise TypeError(
                "RobustPruneCallback needs a RobustPruneModel (with `hw_lambda` and `cost_model`). "
                f"Received: model={type(self.model).__name__}"
            )
        self._load_state()

    def _state_paths(self):
        return os.path.join(self.state_dir, "guard.json"), os.path.join(self.state_dir, "guard_best_weights.npz")

    def _save_state(self):
        if not self.state_dir:
            return
        os.makedirs(self.state_dir, exist_ok=True)
        meta_path, weights_path = self._state_paths()
        if self._best_weights is not None:
            np.savez(weights_path + ".tmp.npz", *self._best_weights)
            os.replace(weights_path + ".tmp.npz", weights_path)
        with open(meta_path + ".tmp", "w") as f:
            json.dump({"best_acc": self._best_acc, "best_epoch": self._best_epoch}, f)
        os.replace(meta_path + ".tmp", meta_path)

    def _load_state(self):
        if not self.state_dir or not os.path.exists(self._state_paths()[0]):
            return
        meta_path, weights_path = self._state_paths()
        with open(meta_path) as f:
            state = json.load(f)
        self._best_acc, self._best_epoch = state["best_acc"], state["best_epoch"]
        if os.path.exists(weights_path):
            with np.load(weights_path) as arrays:
                self._best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

    def freeze(self):
        """Meets the cost target (if `enforce_target`) and freezes the gates."""
        model = self.model
        if self.enforce_target:
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

    def on_epoch_begin(self, epoch, logs=None):
        if self.model.gates_frozen():
            self.model.freeze_gates()  # resumed after the freeze (restored optimizer state): mark the gates
        elif self.freeze_epoch is not None and epoch >= self.freeze_epoch:
            self.freeze()
        self.model.hw_lambda.assign(lambda_schedule(epoch, self.lambda_max, self.warmup_epochs, self.ramp_epochs))

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
        logs["hard_cost_ratio"] = model.cost_model.ratio(model.cost_metric)
        logs["gates_frozen"] = float(model.gates_frozen())
        for name, width in model.cost_model.named_widths().items():
            logs[f"width/{name}"] = float(width)
        if self.probe_data is None or model.epsilon == 0.0:
            return
        acc = logs["probe_pgd_acc"] = self._probe_pgd_accuracy()
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
        if acc > self._best_acc:
            self._best_acc, self._best_epoch = acc, epoch
            self._best_weights = [np.array(w) for w in model.get_weights()]
            self._save_state()
        elif acc < self._best_acc - self.max_drop:
            self.collapsed_at = epoch
            logs["catastrophic_overfitting"] = 1.0
            model.stop_training = True
            logging.warning(
                "Catastrophic overfitting at epoch %d: probe PGD accuracy %.3f fell from %.3f (epoch %d); "
                "stopping and restoring the weights of epoch %d.",
                epoch + 1,
                acc,
                self._best_acc,
                self._best_epoch + 1,
                self._best_epoch + 1,
            )

    def on_train_end(self, logs=None):
        if self.collapsed_at is not None and self._best_weights is not None:
            self.model.set_weights(self._best_weights)
            logging.warning(
                "Restored the weights of epoch %d (probe PGD accuracy %.3f).", self._best_epoch + 1, self._best_acc
            )
        if self.freeze_epoch is not None and not self.model.gates_frozen():
            # Training ended (or stopped) before the freeze: the model still leaves meeting its target.
            self.freeze()
