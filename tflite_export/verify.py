"""Agreement of a `.tflite` file with its Keras model: accuracy, argmax agreement, logit error, size, latency."""

import numpy as np

from tflite_export.litert import LiteRTModel


def compare_logits(logits, reference, labels=None):
    """Compares logits with reference logits (and labels).

    Args:
        logits: float array `(n, classes)`, e.g. a `.tflite` file's dequantised outputs.
        reference: float array `(n, classes)`, e.g. the Keras model's.
        labels: Optional int array `(n,)`.

    Returns:
        Dict with `argmax_agreement`, `max_abs_logit_diff`,
        `mean_abs_logit_diff`, and `accuracy` if labels are given.
    """
    logits, reference = np.asarray(logits, np.float32), np.asarray(reference, np.float32)
    if logits.shape != reference.shape:
        raise ValueError(
            f"`logits` must have the shape of `reference` {reference.shape}. Received: shape {logits.shape}"
        )
    diff = np.abs(logits - reference)
    result = {
        "argmax_agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
    }
    if labels is not None:
        result["accuracy"] = accuracy(logits, labels)
    return result


def accuracy(logits, labels):
    """Top-1 accuracy.

    Args:
        logits: float array `(n, classes)`.
        labels: int array `(n,)`.

    Returns:
        Float in [0, 1].
    """
    return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(labels)))


def verify_file(model_content, keras_logits, x, y, latency_runs=100, num_threads=1):
    """Runs one `.tflite` file on LiteRT over a split and compares it with the Keras model.

    Args:
        model_content: The `.tflite` file as bytes.
        keras_logits: The Keras model's logits on `x`, `(n, classes)`.
        x: Images `(n, h, w, c)`, uint8 or float in [0, 1].
        y: Int labels `(n,)`.
        latency_runs: Int >= 1, timed runs on one image (after 10 % warm-up runs).
        num_threads: Int, interpreter threads (1 for latency figures).

    Returns:
        Dict with `size_bytes`, `input_dtype`, `output_dtype`, `accuracy`,
        `argmax_agreement`, `max_abs_logit_diff`, `mean_abs_logit_diff`
        (int8 outputs dequantised) and `latency` (see `LiteRTModel.latency`).
    """
    runner = LiteRTModel(model_content, num_threads=num_threads)
    logits = runner.predict(x)
    return {
        "size_bytes": len(model_content),
        "input_dtype": runner.input_dtype.name,
        "output_dtype": runner.output_dtype.name,
        **compare_logits(logits, keras_logits, y),
        "latency": runner.latency(np.asarray(x)[0], runs=latency_runs, warmup=max(1, latency_runs // 10)),
    }
