"""Shared by the training-cost benchmarks: `fit` throughput and a description of the machine."""

import os
import platform
import time

import keras


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
