"""Shared by the training-cost benchmarks: `fit` throughput and a description of the machine."""

import os
import platform
import time

import keras


class _StepClock(keras.callbacks.Callback):
    """Records the wall time at the end of every training step."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def images_per_second(model, dataset, steps, batch_size):
    """Training images per second of `model.fit` on a repeated `dataset`, steps 2 to `steps` of one call.

    The clock runs from the end of the first step to the end of the last one, so
    it leaves out what `fit` spends outside its steps: starting the epoch and, on
    this machine, up to several seconds tearing down the input pipeline after
    the last step (0.2 s after 2 steps, 3.5 s after 6 on a frozen gated ResNet20),
    which would otherwise weigh on a short measurement and not on a real epoch.

    Args:
        model: A compiled `keras.Model` (already traced: time a warm-up call first).
        dataset: A repeated `tf.data.Dataset` of `(images, labels)` batches.
        steps: Int >= 2, training steps to run.
        batch_size: Int, images per step.

    Returns:
        Float.

    Raises:
        ValueError: If `steps` is below 2.
    """
    if steps < 2:
        raise ValueError(f"`steps` must be at least 2 (the first step starts the clock). Received: {steps}")
    clock = _StepClock()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock])
    return (len(clock.ends) - 1) * batch_size / (clock.ends[-1] - clock.ends[0])


def machine():
    """Dict: CPU count, load average at the call (a busy machine slows every figure), platform, versions."""
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "load_average_1_5_15min_at_end": list(os.getloadavg()),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
