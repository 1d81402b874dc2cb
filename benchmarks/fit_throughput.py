"""Shared by the training-cost benchmarks: `fit` throughput and a description of the machine."""

import os
import platform
import time


def images_per_second(model, dataset, steps, batch_size):
    """Training images per second of `steps` steps of `model.fit` on a repeated `dataset`.

    Args:
        model: A compiled `keras.Model` (already traced: time a warm-up call first).
        dataset: A repeated `tf.data.Dataset` of `(images, labels)` batches.
        steps: Int, training steps to time.
        batch_size: Int, images per step.

    Returns:
        Float.
    """
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def machine():
    """Dict: CPU count, load average at the call (a busy machine slows every figure), platform, versions."""
    import keras
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "load_average_1_5_15min_at_end": list(os.getloadavg()),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
