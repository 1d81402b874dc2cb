"""L-infinity attacks for training and evaluation; images in [0, 1], budgets in pixels.

Each training attack is a function of `loss_of(x) -> scalar` (the summed loss of
a batch), so it ignores how the model is called and the same code serves the
training step and the evaluation. `fgsm_rs` follows Wong et al. (2020),
`n_fgsm` de Jorge et al. (2022), `pgd` Madry et al. (2018).
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

ATTACKS = ("none", "fgsm", "fgsm_rs", "n_fgsm", "pgd")


def _uniform(x, bound, seed):
    """Uniform noise in [-bound, bound] shaped like `x`; stateless from `seed` (shape [2] ints) if given."""
    if seed is None:
        return tf.random.uniform(tf.shape(x), -bound, bound, dtype=x.dtype)
    return tf.random.stateless_uniform(tf.shape(x), seed, -bound, bound, dtype=x.dtype)


def _signed_gradient(loss_of, x_adv):
    with tf.GradientTape() as tape:
        tape.watch(x_adv)
        loss = loss_of(x_adv)
    return tf.sign(tape.gradient(loss, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO))


def fgsm(loss_of, x, epsilon):
    """One signed-gradient step of size `epsilon` from the clean image (Goodfellow et al., 2015).

    Args:
        loss_of: Callable mapping a batch of images to a scalar loss.
        x: Float tensor of images in [0, 1].
        epsilon: Float, L-infinity budget in pixel units.

    Returns:
        Adversarial images in [0, 1], within `epsilon` of `x`.
    """
    return tf.stop_gradient(tf.clip_by_value(x + epsilon * _signed_gradient(loss_of, x), 0.0, 1.0))


def fgsm_rs(loss_of, x, epsilon, step, seed=None):
    """FGSM from a uniform random start in the eps-ball, then projected (Wong et al., 2020).

    Args:
        loss_of: Callable mapping a batch of images to a scalar loss.
        x: Float tensor of images in [0, 1].
        epsilon: Float, L-infinity budget in pixel units.
        step: Float, step size (1.25 * epsilon in the paper).
        seed: Optional stateless seed, an int tensor of shape [2], for the
            random start (reproducible); None uses TF's global RNG.

    Returns:
        Adversarial images in [0, 1], within `epsilon` of `x`.
    """
    delta = _uniform(x, epsilon, seed)
    delta = tf.clip_by_value(x + delta, 0.0, 1.0) - x
    delta = delta + step * _signed_gradient(loss_of, x + delta)
    delta = tf.clip_by_value(delta, -epsilon, epsilon)
    return tf.stop_gradient(tf.clip_by_value(x + delta, 0.0, 1.0))


def n_fgsm(loss_of, x, epsilon, step, noise, seed=None):
    """Noise-FGSM: a large random start and a full step, no projection (de Jorge et al., 2022).

    Resists catastrophic overfitting without extra cost. The perturbation may
    exceed `epsilon` (up to `noise + step`); that is the method, not a bug.

    Args:
        loss_of: Callable mapping a batch of images to a scalar loss.
        x: Float tensor of images in [0, 1].
        epsilon: Float, nominal budget (unused beyond documentation; kept for a
            uniform signature).
        step: Float, step size (epsilon in the paper).
        noise: Float, half-width of the uniform noise (2 * epsilon in the paper).
        seed: Optional stateless seed (int tensor of shape [2]) for the noise.

    Returns:
        Perturbed images in [0, 1].
    """
    del epsilon
    x_noisy = tf.clip_by_value(x + _uniform(x, noise, seed), 0.0, 1.0)
    return tf.stop_gradient(tf.clip_by_value(x_noisy + step * _signed_gradient(loss_of, x_noisy), 0.0, 1.0))


def pgd(loss_of, x, epsilon, step, steps, random_start=True, seed=None):
    """Projected gradient descent with `steps` signed steps (Madry et al., 2018).

    Args:
        loss_of: Callable mapping a batch of images to a scalar loss.
        x: Float tensor of images in [0, 1].
        epsilon: Float, L-infinity budget in pixel units.
        step: Float, step size per iteration.
        steps: Int >= 1, iterations.
        random_start: Bool, start from a uniform point of the eps-ball.
        seed: Optional stateless seed (int tensor of shape [2]) for the random start.

    Returns:
        Adversarial images in [0, 1], within `epsilon` of `x`.
    """
    x_adv = x
    if random_start:
        x_adv = tf.clip_by_value(x + _uniform(x, epsilon, seed), 0.0, 1.0)
    for _ in range(int(steps)):
        x_adv = x_adv + step * _signed_gradient(loss_of, x_adv)
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - epsilon, x + epsilon), 0.0, 1.0)
    return tf.stop_gradient(x_adv)


def default_step(attack, epsilon):
    """The step size each attack's paper uses for a budget `epsilon`.

    Args:
        attack: One of `ATTACKS`.
        epsilon: Float budget.

    Returns:
        Float step size: 1.25 * eps (fgsm_rs), eps (fgsm, n_fgsm), 2/255 or
        eps / 4 if smaller (pgd), 0 (none).
    """
    if attack not in ATTACKS:
        raise ValueError(f"`attack` must be one of {ATTACKS}. Received: attack={attack!r}")
    return {
        "none": 0.0,
        "fgsm": epsilon,
        "fgsm_rs": 1.25 * epsilon,
        "n_fgsm": epsilon,
        "pgd": min(2.0 / 255.0, epsilon / 4.0) if epsilon > 0 else 0.0,
    }[attack]


def pgd_k(epsilon, steps):
    """The training attack "PGD-K": `steps` iterations of step `epsilon / steps`.

    The guard's fallback after catastrophic overfitting and the configs' `attack=pgdK`
    both train with it: K steps of eps / K can just reach the budget's corner.

    Args:
        epsilon: Float in [0, 1], L-infinity budget in pixels.
        steps: Int >= 1, the K of PGD-K.

    Returns:
        Dict `{"attack": "pgd", "step": epsilon / steps, "pgd_steps": steps}`, the
        keyword arguments of `RobustPruneModel.set_training_attack`.

    Example:
    >>> pgd_k(8 / 255, 2)["step"] == 4 / 255
    True
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"`steps` of PGD-K must be an integer >= 1. Received: steps={steps!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"`epsilon` must be in [0, 1] (pixel units, e.g. 8/255). Received: epsilon={epsilon}")
    return {"attack": "pgd", "step": epsilon / int(steps), "pgd_steps": int(steps)}


def make_training_attack(name, epsilon, step=None, steps=10, noise=None):
    """Returns `attack(loss_of, x) -> x_adv` for the named training attack.

    Args:
        name: One of `ATTACKS`.
        epsilon: Float in [0, 1], L-infinity budget in pixels.
        step: Float step size, or None for `default_step(name, epsilon)`.
        steps: Int, PGD iterations (only for "pgd").
        noise: Float in [0, 1], half-width of N-FGSM's uniform noise in pixels, or None for
            `2 * epsilon` (de Jorge et al., 2022, who also study 1 and 3 eps). Only for "n_fgsm".

    Returns:
        A callable `attack(loss_of, x, seed=None)`; `seed` is an optional
        stateless seed (int tensor of shape [2]) for the random start.
    """
    if name not in ATTACKS:
        raise ValueError(f"`attack` must be one of {ATTACKS}. Received: attack={name!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"`epsilon` must be in [0, 1] (pixel units, e.g. 8/255). Received: epsilon={epsilon}")
    if noise is not None:
        if name != "n_fgsm":
            raise ValueError(f"`noise` is N-FGSM's alone (attack='n_fgsm'). Received: attack={name!r}, noise={noise}")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"`noise` must be in [0, 1] (pixel units, e.g. 16/255). Received: noise={noise}")
    step = default_step(name, epsilon) if step is None else float(step)
    noise = 2.0 * epsilon if noise is None else float(noise)
    if name == "none" or epsilon == 0.0:
        return lambda loss_of, x, seed=None: x
    if name == "fgsm":
        return lambda loss_of, x, seed=None: fgsm(loss_of, x, epsilon)
    if name == "fgsm_rs":
        return lambda loss_of, x, seed=None: fgsm_rs(loss_of, x, epsilon, step, seed)
    if name == "n_fgsm":
        return lambda loss_of, x, seed=None: n_fgsm(loss_of, x, epsilon, step, noise, seed)
    return lambda loss_of, x, seed=None: pgd(loss_of, x, epsilon, step, steps, seed=seed)


def cross_entropy_of(model, y, training=False):
    """`loss_of(x)`: summed softmax cross entropy of `model(x)` against labels `y`."""

    def loss_of(x):
        logits = model(x, training=training)
        return tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    return loss_of


def pad_batch(indices, multiple=8):
    """Indices repeated at the end up to a multiple of `multiple`.

    TensorFlow 2.21's oneDNN kernels crash (heap corruption) on the input
    gradient of some strided 1x1 convolutions for odd batch sizes (seen with
    8 -> 16 and 7 -> 13 channels, the widths a stripped network may have);
    attacked batches are padded so their size is never odd.

    Args:
        indices: Int numpy array, non-empty.
        multiple: Int >= 1.

    Returns:
        Int numpy array starting with `indices`.
    """
    extra = -len(indices) % multiple
    return np.concatenate([indices, np.repeat(indices[-1:], extra)]) if extra else indices


def make_pgd_accuracy(model, epsilon=8 / 255, step=2 / 255, steps=10, batch_size=256):
    """Returns `accuracy(x, y, seed=0)`: PGD accuracy of `model` with one compiled attack reused across calls.

    Args:
        model: Keras model mapping images in [0, 1] to logits.
        epsilon: Float budget in pixels.
        step: Float step size.
        steps: Int iterations.
        batch_size: Int.

    Returns:
        A callable over numpy images (uint8, or float in [0, 1]) and labels
        returning the accuracy as a float.
    """

    @tf.function(reduce_retracing=True)
    def correct_in_batch(xb, yb, count):
        x_adv = pgd(cross_entropy_of(model, yb), xb, epsilon, step, steps)
        predictions = tf.argmax(model(x_adv, training=False), -1, output_type=tf.int32)
        return tf.reduce_sum(tf.cast(predictions[:count] == yb[:count], tf.int32))

    def accuracy(x, y, seed=0):
        tf.random.set_seed(seed)
        x = np.asarray(x)
        x = x.astype("float32") / 255.0 if x.dtype == np.uint8 else x.astype("float32")
        y = np.asarray(y).astype("int32")
        correct = 0
        for start in range(0, len(x), batch_size):
            part = np.arange(start, min(start + batch_size, len(x)))
            padded = pad_batch(part)
            correct += int(correct_in_batch(tf.constant(x[padded]), tf.constant(y[padded]), tf.constant(len(part))))
        return correct / max(len(x), 1)

    return accuracy


def pgd_accuracy(model, x, y, epsilon=8 / 255, step=2 / 255, steps=10, batch_size=256, seed=0):
    """Accuracy of `model` under PGD (one random start), batched over numpy arrays.

    Args:
        model: Keras model mapping images in [0, 1] to logits.
        x: Float or uint8 numpy images (uint8 is divided by 255).
        y: Int labels.
        epsilon: Float budget in pixels.
        step: Float step size.
        steps: Int iterations.
        batch_size: Int.
        seed: Int seed of the random start.

    Returns:
        Float accuracy in [0, 1].
    """
    return make_pgd_accuracy(model, epsilon, step, steps, batch_size)(x, y, seed)
