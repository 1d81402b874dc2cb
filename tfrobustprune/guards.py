"""Stopping safely: a non-finite loss ends the run on the last good weights, and backups never keep bad ones."""

import math

import keras
import numpy as np
from absl import logging


class TerminateOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite loss and puts back the weights of the epoch's start.

    Unlike `keras.callbacks.TerminateOnNaN`, the model is left on the last good
    weights (those of the last completed epoch, which a `SafeBackupAndRestore`
    checkpoint also holds), and `stopped_at` says where it happened.

    Attributes:
        stopped_at: None, or `(epoch, batch, loss)` of the non-finite loss.
    """

    def __init__(self):
        super().__init__()
        self.stopped_at = None
        self._epoch = 0
        self._good_weights = None

    def on_train_begin(self, logs=None):
        self.stopped_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._good_weights = [np.array(w) for w in self.model.get_weights()]

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        self.stopped_at = (self._epoch, batch, float(loss))
        self.model.stop_training = True
        self.model.set_weights(self._good_weights)
        logging.error(
            "Loss became %s at epoch %d, batch %d: stopping on the weights of epoch %d.",
            loss,
            self._epoch + 1,
            batch,
            self._epoch,
        )


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that does not checkpoint an epoch ended by a non-finite loss.

    Args:
        backup_dir: Directory of the checkpoint.
        guard: The run's `TerminateOnNonFinite`.
    """

    def __init__(self, backup_dir, guard):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.stopped_at is None:
            super().on_epoch_end(epoch, logs)
