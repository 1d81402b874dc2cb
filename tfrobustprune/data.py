"""Image classification data: a shipped CIFAR-10 sample, `.npz` directories, tensorflow-datasets.

Every source returns a `Split` of uint8 NHWC images and int labels; `train_dataset`
and `eval_dataset` turn them into `tf.data` pipelines of float images in [0, 1]
(normalisation lives inside the models, so attack budgets are in pixels).
"""

import dataclasses
import glob
import os
import re
import socket

import keras
import numpy as np
import tensorflow as tf

SOURCES = ("sample", "npz", "tfds")
SAMPLE_PATH = os.path.join(os.path.dirname(__file__), "data", "cifar10_sample.npz")
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(ValueError):
    """Raised for data that is missing, malformed or cannot be fetched."""


@dataclasses.dataclass(frozen=True)
class Split:
    """Training and validation arrays.

    Attributes:
        x_train: uint8 array `(n, height, width, channels)`.
        y_train: int32 array `(n,)`.
        x_val: uint8 array `(m, height, width, channels)`.
        y_val: int32 array `(m,)`.
        num_classes: Int.
        source: Str, where the data came from (for reports).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    source: str

    def subset(self, train_size=None, val_size=None):
        """The first `train_size` training and `val_size` validation examples (None: all)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train[:train_size],
            y_train=self.y_train[:train_size],
            x_val=self.x_val[:val_size],
            y_val=self.y_val[:val_size],
        )


def validate_arrays(x, y, num_classes, where):
    """Checks images and labels; raises `DataError` naming `where` and the problem.

    Args:
        x: Images, uint8 `(n, h, w, c)`, or float in [0, 1] (converted to uint8
            only if they are exact multiples of 1/255 is not required: floats
            are rounded).
        y: Integer labels `(n,)` in `[0, num_classes)`.
        num_classes: Int.
        where: Str naming the source, for messages.

    Returns:
        `(x uint8, y int32)`.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{where}: images must have shape (n, height, width, 1 or 3). Received: shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{where}: no images (empty array).")
    if y.shape != (x.shape[0],):
        raise DataError(
            f"{where}: labels must have shape ({x.shape[0]},) to match the images. Received: shape {y.shape}"
        )
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise DataError(f"{where}: images contain NaN or infinite pixels.")
        if x.min() < 0.0 or x.max() > 1.0:
            raise DataError(f"{where}: float images must be in [0, 1]. Received: range [{x.min():.3g}, {x.max():.3g}]")
        x = np.round(x * 255.0).astype(np.uint8)
    elif x.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8 (0..255) or float in [0, 1]. Received: dtype {x.dtype}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers. Received: dtype {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{where}: labels must be in [0, {num_classes}). Received: range [{y.min()}, {y.max()}]")
    return x, y.astype(np.int32)


def _natural_key(path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", os.path.basename(path))]


def load_npz_dir(path, val_size=5000, num_classes=10):
    """Loads every `.npz` file (arrays `x` uint8 NHWC, `y`) of a directory, in natural name order.

    The last `val_size` examples are the validation split, the rest training
    (for ../shared/data/cifar10: 45,000 train, 5,000 validation).

    Args:
        path: Directory path.
        val_size: Int >= 1, examples held out at the end.
        num_classes: Int, labels must be in `[0, num_classes)`.

    Returns:
        A `Split`.

    Raises:
        DataError: for a missing or empty directory or malformed arrays.
    """
    if not path or not os.path.isdir(path):
        raise DataError(f"npz data directory not found: {path!r}")
    files = sorted(glob.glob(os.path.join(path, "*.npz")), key=_natural_key)
    if not files:
        raise DataError(f"npz data directory {path!r} holds no .npz files")
    xs, ys = [], []
    for file in files:
        try:
            with np.load(file) as arrays:
                if "x" not in arrays or "y" not in arrays:
                    raise DataError(f"{file}: needs arrays 'x' and 'y'. Received: {sorted(arrays.files)}")
                x, y = validate_arrays(arrays["x"], arrays["y"], num_classes, file)
        except (OSError, ValueError) as error:
            if isinstance(error, DataError):
                raise
            raise DataError(f"{file}: not a readable .npz file ({error})") from error
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not 0 < val_size < len(x):
        raise DataError(f"`val_size` must be in [1, {len(x) - 1}] for {len(x)} examples. Received: val_size={val_size}")
    return Split(x[:-val_size], y[:-val_size], x[-val_size:], y[-val_size:], num_classes, f"npz:{path}")


def load_sample():
    """The CIFAR-10 sample shipped in the package: 2,000 training and 500 validation images.

    The training images are the first 2,000 of the official training set; the
    validation images are the first 500 of its last 5,000 (the held-out
    validation split used everywhere in this project).

    Returns:
        A `Split`.
    """
    with np.load(SAMPLE_PATH) as arrays:
        return Split(
            arrays["x_train"],
            arrays["y_train"].astype(np.int32),
            arrays["x_val"],
            arrays["y_val"].astype(np.int32),
            10,
            "sample",
        )


def _network_reachable(host="storage.googleapis.com", port=443, timeout=3.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_tfds(name="cifar10", data_dir=None, val_size=5000):
    """Loads a tensorflow-datasets image dataset; the last `val_size` training examples are validation.

    Checks first that the dataset is already prepared or the network is
    reachable, so an offline machine gets a clear error in seconds instead of
    minutes of retries.

    Args:
        name: tfds name, e.g. "cifar10", "cifar100", "svhn_cropped".
        data_dir: tfds data directory (None: tfds default).
        val_size: Int, validation examples held out from the end of "train".

    Returns:
        A `Split`.

    Raises:
        DataError: if the dataset is unknown, or not prepared and offline.
    """
    import tensorflow_datasets as tfds  # slow import, only for this source

    if name not in tfds.list_builders():
        raise DataError(f"Unknown tfds dataset {name!r}; e.g. 'cifar10', 'cifar100', 'svhn_cropped'.")
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared() and not _network_reachable():
        raise DataError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir!r} and the network is unreachable. "
            "Use an .npz directory (data.source='npz') or the shipped sample (data.source='sample')."
        )
    builder.download_and_prepare()
    total = builder.info.splits["train"].num_examples
    num_classes = builder.info.features["label"].num_classes
    arrays = {}
    for part, split in (("train", f"train[:{total - val_size}]"), ("val", f"train[{total - val_size}:]")):
        x, y = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
        arrays[part] = validate_arrays(x, y, num_classes, f"tfds:{name}/{split}")
    return Split(*arrays["train"], *arrays["val"], num_classes, f"tfds:{name}")


def load(source="sample", path=None, name="cifar10", val_size=5000, train_size=None, eval_size=None):
    """Loads a `Split` from one of `SOURCES`.

    Args:
        source: "sample" (shipped, offline), "npz" (directory `path`) or "tfds" (`name`).
        path: Directory for "npz", tfds data_dir for "tfds".
        name: tfds dataset name.
        val_size: Int, held-out examples for "npz" and "tfds".
        train_size: Int or None, keep only the first training examples.
        eval_size: Int or None, keep only the first validation examples.

    Returns:
        A `Split`.
    """
    if source == "sample":
        split = load_sample()
    elif source == "npz":
        split = load_npz_dir(path, val_size=val_size)
    elif source == "tfds":
        split = load_tfds(name, data_dir=path, val_size=val_size)
    else:
        raise DataError(f"`data.source` must be one of {SOURCES}. Received: source={source!r}")
    return split.subset(train_size, eval_size)


def _to_float(x, y):
    return tf.cast(x, tf.float32) / 255.0, y


def _augment(image, seed):
    # 4-pixel zero padding, random crop back to size, random horizontal flip; stateless, so the
    # same (seed, epoch, example) always gives the same image, across restarts too.
    shape = tf.shape(image)
    padded = tf.image.pad_to_bounding_box(image, 4, 4, shape[0] + 8, shape[1] + 8)
    cropped = tf.image.stateless_random_crop(padded, shape, seed=seed)
    return tf.image.stateless_random_flip_left_right(cropped, seed=seed + 1)


def train_dataset(x, y, batch_size, augment=True, seed=0, epoch=None):
    """Shuffled, augmented `tf.data` batches of float images in [0, 1], reproducible per epoch.

    The order and the augmentation of epoch `e` depend only on `(seed, e)`:
    pass a `tf.Variable` as `epoch` and set it at each epoch's start (see
    `EpochVariable`), and a run resumed at epoch `e` sees exactly the batches an
    uninterrupted run would. Without `epoch`, every epoch repeats epoch 0's order.

    Args:
        x: uint8 images `(n, h, w, c)`.
        y: int labels.
        batch_size: Int.
        augment: Bool, pad-and-crop plus horizontal flip.
        seed: Int seed.
        epoch: Optional int64 `tf.Variable` holding the current epoch.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`; the partial last batch is
        dropped when there is at least one full batch.
    """
    n = len(x)
    epoch = epoch if epoch is not None else tf.constant(0, tf.int64)
    images, labels = tf.constant(x), tf.constant(y)

    def permutation(_):
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
        return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key)

    def example(index):
        image, label = _to_float(tf.gather(images, index), tf.gather(labels, index))
        if augment:
            key = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64), index])
            image = _augment(image, key)
        return image, label

    ds = tf.data.Dataset.from_tensors(0).map(permutation).unbatch()
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=n >= batch_size).prefetch(tf.data.AUTOTUNE)


def eval_dataset(x, y, batch_size):
    """Ordered `tf.data` batches of float images in [0, 1], no augmentation."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class EpochVariable(keras.callbacks.Callback):
    """Holds the current epoch in a `tf.Variable` for `train_dataset(epoch=...)`.

    Place it anywhere in `callbacks`; it sets the variable in `on_epoch_begin`,
    before `fit` opens the epoch's iterator.

    Example:

    >>> epoch = EpochVariable()
    >>> ds = train_dataset(x, y, 128, seed=0, epoch=epoch.variable)
    >>> model.fit(ds, epochs=30, callbacks=[epoch])  # doctest: +SKIP
    """

    def __init__(self):
        super().__init__()
        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)
