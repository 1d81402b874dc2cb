"""Robustness after conversion: PGD examples crafted on the float Keras model, replayed on `.tflite` files.

The attack needs gradients, which a `.tflite` file does not give, so the
examples are transferred from the Keras model; beside them stands the Keras
model's own (white-box) robust accuracy on the same examples. An int8 file reads
its images quantised to its input grid (steps of 1/255 for images in [0, 1]),
so a transferred perturbation can move by up to half a step.
"""

import numpy as np
import tensorflow as tf

from tflite_export.conversion import to_float_images
from tflite_export.verify import accuracy
from tfrobustprune import attacks


def pgd_examples(model, x, y, epsilon=8 / 255, step=2 / 255, steps=10, batch_size=256, seed=0):
    """PGD adversarial examples against a Keras model (one random start).

    Args:
        model: Keras model mapping images in [0, 1] to logits.
        x: Images `(n, h, w, c)`, uint8 or float in [0, 1].
        y: Int labels `(n,)`.
        epsilon: Float L-infinity budget in pixels (8/255).
        step: Float step size.
        steps: Int >= 1, iterations.
        batch_size: Int.
        seed: Int seed of the random start.

    Returns:
        float32 adversarial images in [0, 1], within `epsilon` of `x`.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"`epsilon` must be in [0, 1] (pixel units, e.g. 8/255). Received: epsilon={epsilon}")
    tf.random.set_seed(seed)
    x, y = to_float_images(x), np.asarray(y, np.int32)

    @tf.function
    def attack(xb, yb):
        return attacks.pgd(attacks.cross_entropy_of(model, yb), xb, epsilon, step, steps)

    batches = []
    for start in range(0, len(x), batch_size):
        part = np.arange(start, min(start + batch_size, len(x)))
        padded = attacks.pad_batch(part)  # odd batches can crash TF 2.21's strided-conv gradient
        batches.append(attack(tf.constant(x[padded]), tf.constant(y[padded])).numpy()[: len(part)])
    return np.concatenate(batches) if batches else x


def transfer_robustness(model, runners, x, y, epsilon=8 / 255, step=2 / 255, steps=10, seed=0):
    """Robust accuracy of `.tflite` files on PGD examples crafted on the Keras model.

    Args:
        model: The float Keras model (the attack's target).
        runners: Dict name -> `LiteRTModel` to evaluate.
        x: Images `(n, h, w, c)`, uint8 or float in [0, 1].
        y: Int labels `(n,)`.
        epsilon: Float budget in pixels.
        step: Float PGD step.
        steps: Int PGD iterations.
        seed: Int seed of the random start.

    Returns:
        Dict with `images`, `epsilon`, `step`, `steps`, `keras`
        (`clean_accuracy`, `robust_accuracy`: white-box) and, per runner name,
        `clean_accuracy` and `transfer_robust_accuracy`.
    """
    x, y = to_float_images(x), np.asarray(y)
    x_adv = pgd_examples(model, x, y, epsilon, step, steps, seed=seed)
    result = {
        "images": int(len(x)),
        "epsilon": float(epsilon),
        "step": float(step),
        "steps": int(steps),
        "keras": {
            "clean_accuracy": accuracy(model.predict(x, batch_size=256, verbose=0), y),
            "robust_accuracy": accuracy(model.predict(x_adv, batch_size=256, verbose=0), y),
        },
    }
    for name, runner in runners.items():
        result[name] = {
            "clean_accuracy": accuracy(runner.predict(x), y),
            "transfer_robust_accuracy": accuracy(runner.predict(x_adv), y),
        }
    return result
