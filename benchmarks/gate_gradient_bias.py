"""What the task gradient tells channel gates: per-group mean of the straight-through gradient on a trained model.

Gates every channel group of a trained plain model (all channels open), crafts PGD adversarial examples for
`--batches` training batches and records the gradient of the adversarial cross entropy with respect to each gate
logit, averaged over the batches. Per group it reports the mean over channels (the part of the gradient that
moves the whole group, i.e. decides how many channels it keeps), the fraction of channels pushed toward closing
(gradient > 0) and the mean magnitude (what ranks channels within the group).

A gated tensor that only reaches the loss through a batch norm in training mode is scale-invariant: scaling all
its channels together changes nothing, so the group mean is zero up to float rounding and the gradient carries
no information about the group's width. Only groups without such a norm downstream (in ResNet20 the stage-3
residual stream, read by the classifier) get a non-zero mean.

    python benchmarks/gate_gradient_bias.py --model=runs/paper_table/dense/stripped.keras \\
        --data_dir=../shared/data/cifar10 --out=benchmarks/results/gate_gradient_bias.json
"""

import os
import sys

import numpy as np
from absl import app, flags, logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_MODEL = _DATA_DIR = _BATCHES = _PGD_STEPS = _OUT = None  # flag holders, defined by `define_flags`


def define_flags():
    """Defines the script's flags; only when run as a script, so tests can import `gate_gradients`."""
    global _MODEL, _DATA_DIR, _BATCHES, _PGD_STEPS, _OUT
    _MODEL = flags.DEFINE_string("model", None, "A trained plain .keras classifier (e.g. the table's dense row).")
    _DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/cifar10", "Directory of CIFAR-10 .npz files.")
    _BATCHES = flags.DEFINE_integer("batches", 8, "Training batches of 128 to average over.")
    _PGD_STEPS = flags.DEFINE_integer("pgd_steps", 5, "PGD iterations (step 2/255, eps 8/255) of the examples.")
    _OUT = flags.DEFINE_string("out", None, "Result JSON.")


def gate_gradients(model, x, y, batches, pgd_steps, batch_size=128):
    """Per-group statistics of the adversarial task gradient on the gate logits of `model` gated open.

    Args:
        model: A trained plain functional classifier (logits out).
        x: Float32 images in [0, 1], at least `batches * batch_size`.
        y: Int labels.
        batches: Int >= 1.
        pgd_steps: Int >= 1, PGD iterations (eps 8/255, step 2/255).
        batch_size: Int.

    Returns:
        Dict group name -> {"mean", "fraction_closing", "mean_abs", "width"}.
    """
    import keras
    import tensorflow as tf

    import tfrobustprune
    from tfrobustprune import attacks
    from tfrobustprune.cost import CostModel

    if batches < 1 or len(x) < batches * batch_size:
        raise ValueError(f"`batches` must be in [1, {len(x) // batch_size}]. Received: batches={batches}")
    network = tfrobustprune.gate(model, init_logit=1.0)
    cost = CostModel(network)
    names = {g.gid: g.name for g in cost.graph.groups}
    gids = list(cost.gates)
    logits = [cost.gates[gid].logits for gid in gids]
    sums = [np.zeros(v.shape) for v in logits]
    for b in range(batches):
        xb = tf.constant(x[b * batch_size : (b + 1) * batch_size])
        yb = tf.constant(y[b * batch_size : (b + 1) * batch_size])

        def loss_of(images, labels=yb):
            out = network(images, training=True)
            return tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, out, from_logits=True))

        adversarial = attacks.pgd(loss_of, xb, 8 / 255, 2 / 255, pgd_steps, seed=tf.constant([0, b], tf.int64))
        with tf.GradientTape() as tape:
            out = network(adversarial, training=True)
            ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, out, from_logits=True))
        for total, grad in zip(sums, tape.gradient(ce, logits)):
            total += grad.numpy()
    result = {}
    for gid, total in zip(gids, sums):
        mean_grad = total / batches
        result[names[gid]] = {
            "mean": float(mean_grad.mean()),
            "fraction_closing": float(np.mean(mean_grad > 0)),
            "mean_abs": float(np.abs(mean_grad).mean()),
            "width": int(mean_grad.size),
        }
    return result


def main(argv):
    del argv
    if not _MODEL.value:
        raise app.UsageError("--model is required (a trained plain .keras classifier).")
    from tfrobustprune import data, model_io

    split = data.load("npz", path=_DATA_DIR.value)
    x = split.x_train.astype("float32") / 255.0
    result = gate_gradients(model_io.load_keras_model(_MODEL.value), x, split.y_train, _BATCHES.value, _PGD_STEPS.value)
    for name, row in result.items():
        logging.info(
            "%-34s mean %+.2e  closing %.2f  |g| %.2e", name, row["mean"], row["fraction_closing"], row["mean_abs"]
        )
    if _OUT.value:
        model_io.write_json_atomic(
            _OUT.value,
            {"command": " ".join(sys.argv), "model": os.path.abspath(_MODEL.value), "groups": result},
            indent=2,
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
