"""Peer 2 of the paper table: TFMOT `prune_low_magnitude` with fast adversarial fine-tuning, under tf_keras.

    python benchmarks/tfmot_peer.py --weights=dense_weights.npz --data=train_split.npz \
        --target_nonzero=160041 --epochs=10 --out=peer_tfmot

Runs in its own process because tensorflow-model-optimization needs the legacy
tf_keras (TF_USE_LEGACY_KERAS=1), which cannot share a process with Keras 3, and
pins absl-py 1.x (`pip install -r benchmarks/requirements-tfmot.txt`). It imports
nothing from tfrobustprune. Input: the dense robust ResNet20's weights as an npz
keyed `layer/index` (written by `paper_table.py`), the training split as an npz
(`x` uint8 NHWC, `y` int). It rebuilds the same ResNet20 in tf_keras, wraps every
convolution and the classifier in `prune_low_magnitude` with a `PolynomialDecay`
to the sparsity that leaves `target_nonzero` non-zero parameters in the whole
model, fine-tunes adversarially with the training attack and optimiser of our
trainer (N-FGSM, de Jorge et al. 2022, or FGSM-RS, Wong et al. 2020), strips the
wrappers and writes `weights.npz` (same keys) and `result.json` (non-zero count,
epochs, wall time) to `--out`. Completed epochs are checkpointed in
`--out/checkpoint/`; a rerun resumes after the last one.
"""

import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import app, flags, logging  # noqa: E402

_WEIGHTS = flags.DEFINE_string("weights", None, "npz of the dense model's weights, keys `layer/index`.", required=True)
_DATA = flags.DEFINE_string("data", None, "npz with `x` (uint8 NHWC) and `y` training arrays.", required=True)
_TARGET = flags.DEFINE_integer("target_nonzero", None, "Non-zero parameters of the result.", required=True)
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Fine-tuning epochs.")
_LR = flags.DEFINE_float("learning_rate", 0.05, "Peak learning rate (linear warm-up, cosine decay).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_EPSILON = flags.DEFINE_float("epsilon", 8 / 255, "L-infinity budget in pixels.")
_ATTACK = flags.DEFINE_enum(
    "attack", "n_fgsm", ["n_fgsm", "fgsm_rs", "pgd2"], "Training attack, as in our trainer (pgd2: step eps/2)."
)
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 5e-4, "Weight decay.")
_WEIGHT_DECAY_MODE = flags.DEFINE_enum(
    "weight_decay_mode",
    "decoupled",
    ["decoupled", "coupled"],
    "decoupled: Keras' SGD weight_decay; coupled: L2 added to the gradients (torch.optim.SGD), as the trainer's "
    "`weight_decay_mode`.",
)
_PRUNE_END = flags.DEFINE_float("prune_end", 0.6, "Fraction of the steps at which the final sparsity is reached.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def resnet20(num_classes=10, width=16):
    """The ResNet20 of `tfrobustprune.models.cifar_resnet`, same layer names, in tf_keras."""

    def conv_bn(x, filters, kernel, strides, name):
        x = keras.layers.Conv2D(filters, kernel, strides, "same", use_bias=False, name=f"{name}_conv")(x)
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)

    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Normalization(mean=MEAN, variance=[s * s for s in STD], name="normalize")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(conv_bn(x, width, 3, 1, "stem"))
    for stage in range(3):
        filters = width * 2**stage
        for block in range(3):
            name, strides = f"stage{stage + 1}_block{block + 1}", 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = keras.layers.ReLU(name=f"{name}_relu1")(conv_bn(x, filters, 3, strides, f"{name}_1"))
            y = conv_bn(y, filters, 3, 1, f"{name}_2")
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = conv_bn(shortcut, filters, 1, strides, f"{name}_proj")
            x = keras.layers.ReLU(name=f"{name}_relu2")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name="resnet20")


def read_weights(path):
    """Dict layer name -> list of arrays, from an npz keyed `layer/index`."""
    per_layer = {}
    with np.load(path) as arrays:
        for key in arrays.files:
            layer, index = key.rsplit("/", 1)
            per_layer.setdefault(layer, {})[int(index)] = arrays[key]
    return {layer: [w[i] for i in sorted(w)] for layer, w in per_layer.items()}


def write_weights(model, path):
    """Writes every layer's weights (normalisation constants excluded) as `layer/index`."""
    arrays = {
        f"{layer.name}/{i}": w
        for layer in model.layers
        if not isinstance(layer, keras.layers.Normalization)
        for i, w in enumerate(layer.get_weights())
    }
    np.savez(path + ".tmp.npz", **arrays)
    os.replace(path + ".tmp.npz", path)


def load_into(model, weights):
    """Sets every layer with weights from `weights`; the names must match exactly."""
    expected = {layer.name for layer in model.layers if layer.weights and layer.name != "normalize"}
    if set(weights) != expected:
        raise ValueError(
            f"--weights must hold exactly the layers {sorted(expected)[:3]}...; missing "
            f"{sorted(expected - set(weights))[:5]}, unknown {sorted(set(weights) - expected)[:5]}"
        )
    for layer in model.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])


def write_json(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)


def count_params(model):
    return int(sum(w.size for layer in model.layers if layer.name != "normalize" for w in layer.get_weights()))


def count_nonzero(model):
    return int(
        sum(np.count_nonzero(w) for layer in model.layers if layer.name != "normalize" for w in layer.get_weights())
    )


def prunable_count(model):
    return int(
        sum(
            np.prod(layer.kernel.shape.as_list())
            for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
        )
    )


def dataset(x, y, batch_size, seed):
    def augment(image, label):
        image = tf.image.resize_with_crop_or_pad(image, 40, 40)
        image = tf.image.random_crop(image, (32, 32, 3))
        return tf.image.random_flip_left_right(image), label

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, tf.cast(b, tf.int32)))
    return ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=True).prefetch(2)


def main(argv):
    del argv
    os.makedirs(_OUT.value, exist_ok=True)
    tf.keras.utils.set_random_seed(_SEED.value)
    with np.load(_DATA.value) as arrays:
        x, y = arrays["x"], arrays["y"]
    base = resnet20(num_classes=int(y.max()) + 1)
    load_into(base, read_weights(_WEIGHTS.value))
    total, prunable = count_params(base), prunable_count(base)
    fixed = total - prunable
    if not fixed < _TARGET.value <= total:
        raise app.UsageError(f"--target_nonzero must be in ({fixed}, {total}]. Received: {_TARGET.value}")
    sparsity = 1.0 - (_TARGET.value - fixed) / prunable
    steps_per_epoch = len(x) // _BATCH.value
    total_steps = _EPOCHS.value * steps_per_epoch
    end_step = max(1, int(_PRUNE_END.value * total_steps))
    frequency = max(1, min(50, end_step // 10))
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=end_step - end_step % frequency,  # the last mask update lands on the final sparsity
        frequency=frequency,
    )

    def wrap(layer):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer.__class__.from_config(layer.get_config())

    model = keras.models.clone_model(base, clone_function=wrap)
    for layer in model.layers:  # clone_model does not copy weights into the wrappers
        source = base.get_layer(layer.name if not layer.name.startswith("prune_low_magnitude_") else layer.layer.name)
        target = layer.layer if hasattr(layer, "layer") else layer
        target.set_weights(source.get_weights())
    warmup = max(1, total_steps // 5)
    lr = keras.optimizers.schedules.CosineDecay(
        _LR.value * 0.01, total_steps - warmup, warmup_target=_LR.value, warmup_steps=warmup
    )
    coupled_decay = _WEIGHT_DECAY_MODE.value == "coupled"
    optimizer = keras.optimizers.SGD(
        lr, momentum=0.9, nesterov=True, weight_decay=None if coupled_decay else _WEIGHT_DECAY.value
    )
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    eps = _EPSILON.value

    @tf.function
    def train_step(images, labels):
        if _ATTACK.value == "n_fgsm":  # noise 2 eps, step eps, no projection
            noise, limit, step, steps = 2 * eps, 3 * eps, eps, 1
        elif _ATTACK.value == "fgsm_rs":  # uniform start in the eps-ball, step 1.25 eps, projected
            noise, limit, step, steps = eps, eps, 1.25 * eps, 1
        else:  # pgd2: uniform start in the eps-ball, two projected steps of eps / 2
            noise, limit, step, steps = eps, eps, eps / 2, 2
        delta = tf.clip_by_value(images + tf.random.uniform(tf.shape(images), -noise, noise), 0.0, 1.0) - images
        for _ in range(steps):
            start = images + delta
            with tf.GradientTape() as tape:
                tape.watch(start)
                attack_loss = loss_fn(labels, model(start, training=True))
            delta = tf.clip_by_value(start + step * tf.sign(tape.gradient(attack_loss, start)) - images, -limit, limit)
            delta = tf.clip_by_value(images + delta, 0.0, 1.0) - images
        adversarial = tf.stop_gradient(tf.clip_by_value(images + delta, 0.0, 1.0))
        with tf.GradientTape() as tape:
            logits = model(adversarial, training=True)
            loss = loss_fn(labels, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        if coupled_decay:
            grads = [
                None if g is None else g + _WEIGHT_DECAY.value * v for g, v in zip(grads, model.trainable_variables)
            ]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        correct = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
        return loss, correct

    optimizer.build(model.trainable_variables)  # built before a restore, so the momentum comes back at once
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=tf.Variable(0))
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(_OUT.value, "checkpoint"), max_to_keep=1)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        logging.info("Resumed after epoch %d.", int(checkpoint.epoch))
    step_callback = tfmot.sparsity.keras.UpdatePruningStep()
    step_callback.set_model(model)
    step_callback.on_train_begin()
    started, epoch_seconds = time.time(), []
    times_path = os.path.join(_OUT.value, "epoch_seconds.json")
    if os.path.exists(times_path):  # epochs of earlier, interrupted runs count toward the wall time
        with open(times_path) as f:
            epoch_seconds = json.load(f)[: int(checkpoint.epoch)]
    for epoch in range(int(checkpoint.epoch), _EPOCHS.value):
        epoch_start = time.time()
        losses, accs = [], []
        for images, labels in dataset(x, y, _BATCH.value, _SEED.value + epoch):
            step_callback.on_train_batch_begin(batch=-1)
            loss, acc = train_step(images, labels)
            losses.append(float(loss))
            accs.append(float(acc))
        step_callback.on_epoch_end(epoch)
        checkpoint.epoch.assign(epoch + 1)
        manager.save()
        epoch_seconds.append(time.time() - epoch_start)
        write_json(times_path, epoch_seconds)
        logging.info(
            "epoch %d/%d: loss %.4f, adversarial train accuracy %.4f, %.0f s",
            epoch + 1,
            _EPOCHS.value,
            np.mean(losses),
            np.mean(accs),
            epoch_seconds[-1],
        )
    final = tfmot.sparsity.keras.strip_pruning(model)
    write_weights(final, os.path.join(_OUT.value, "weights.npz"))
    result = {
        "target_nonzero": _TARGET.value,
        "nonzero": count_nonzero(final),
        "params": total,
        "final_sparsity_of_kernels": sparsity,
        "epochs": _EPOCHS.value,
        "train_seconds": float(sum(epoch_seconds)),
        "timed_epochs": len(epoch_seconds),
        "learning_rate": _LR.value,
        "attack": _ATTACK.value,
        "weight_decay": _WEIGHT_DECAY.value,
        "weight_decay_mode": _WEIGHT_DECAY_MODE.value,
    }
    write_json(os.path.join(_OUT.value, "result.json"), result)
    logging.info(
        "Done: %d non-zero of %d parameters (%.0f s this run).", result["nonzero"], total, time.time() - started
    )


if __name__ == "__main__":
    app.run(main)
