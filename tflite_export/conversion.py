"""Keras model -> `.tflite` bytes: float32, float16, dynamic-range int8 and full-integer int8.

The model is exported once to a SavedModel with a static batch-1 signature (the
path Keras 3 itself takes for `model.export(format="litert")`), then converted
per variant with `tf.lite.TFLiteConverter`. A static shape keeps every tensor
size known at compile time, which TFLite Micro and the Edge TPU need.
"""

import contextlib
import logging
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

from tflite_export import rewrite

VARIANTS = ("float32", "float16", "dynamic_range", "int8")


def check_image_model(model):
    """Checks that `model` maps one static-shape image batch to one tensor.

    Args:
        model: A `keras.Model`.

    Returns:
        The input shape `(height, width, channels)` as a tuple of ints.

    Raises:
        ValueError: for a model with several inputs or outputs, or a
            dynamic image shape.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "`model` must have exactly one input and one output. "
            f"Received: {len(model.inputs)} inputs, {len(model.outputs)} outputs"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            "`model` must take images of a static shape (height, width, channels). "
            f"Received: input shape {tuple(model.inputs[0].shape)}"
        )
    return tuple(int(d) for d in shape)


def representative_images(x_train, size, seed=0):
    """Draws the calibration set for full-integer quantisation from the training images.

    Args:
        x_train: uint8 images `(n, h, w, c)` or float images in [0, 1].
        size: Int >= 1, number of images (at most `n`).
        seed: Int, seed of the draw (without replacement).

    Returns:
        float32 array `(size, h, w, c)` in [0, 1].
    """
    x_train = np.asarray(x_train)
    if int(size) != size or size < 1:
        raise ValueError(f"`size` must be a positive integer. Received: size={size}")
    size = min(int(size), len(x_train))
    index = np.sort(np.random.default_rng(seed).choice(len(x_train), size, replace=False))
    return to_float_images(x_train[index])


def to_float_images(x):
    """Images as float32 in [0, 1].

    Args:
        x: uint8 pixels (divided by 255) or float images in [0, 1].

    Returns:
        float32 array of the same shape.
    """
    x = np.asarray(x)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _warnings_only(record):
    return record.levelno >= logging.WARNING


@contextlib.contextmanager
def _quiet_tensorflow_logs():
    # SavedModel writing logs a dozen INFO lines per export, through TF's logger and absl's (whose level it
    # resets meanwhile, so a filter, not a level, keeps only warnings).
    loggers = [tf.get_logger(), absl_logging.get_absl_logger()]
    for logger in loggers:
        logger.addFilter(_warnings_only)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_warnings_only)


@contextlib.contextmanager
def saved_model(model):
    """Exports `model` to a temporary SavedModel with a static batch-1 `serve` signature.

    Args:
        model: A single-input image `keras.Model`.

    Yields:
        The SavedModel directory (deleted on exit).
    """
    shape = check_image_model(model)
    with tempfile.TemporaryDirectory(prefix="tflite_export_") as directory, _quiet_tensorflow_logs():
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda images: model(images, training=False),
            input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="images")],
        )
        archive.write_out(directory, verbose=False)
        yield directory


def convert_saved_model(directory, variant, representative=None):
    """Converts a SavedModel directory to one `.tflite` variant.

    Args:
        directory: SavedModel path (see `saved_model`).
        variant: One of `VARIANTS`: "float32"; "float16" (float16 weights);
            "dynamic_range" (int8 weights, float activations); "int8" (int8
            weights and activations, int8 input and output).
        representative: float32 images in [0, 1] used to calibrate "int8".

    Returns:
        The `.tflite` flatbuffer as bytes.
    """
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
    if variant == "int8" and (representative is None or len(representative) == 0):
        raise ValueError(
            "`representative` images are needed to calibrate the int8 variant. Received: representative=None"
        )
    converter = tf.lite.TFLiteConverter.from_saved_model(directory)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        images = np.asarray(representative, dtype=np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([images[i : i + 1]] for i in range(len(images)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # int8 input from float images: the input statistics come from calibration, as intended.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()


def convert(model, variants=VARIANTS, representative=None, fold_normalization=True):
    """Converts a Keras image classifier to the requested `.tflite` variants.

    Args:
        model: A single-input `keras.Model` taking float images in [0, 1]
            (a stripped model: standard Keras layers only).
        variants: Iterable of names from `VARIANTS`.
        representative: float32 images in [0, 1] for the "int8" calibration
            (e.g. `representative_images(split.x_train, 200)`).
        fold_normalization: Bool; if True the "int8" file is made from
            `rewrite.fold_normalization(model)` (the same function, quantised
            with less error); the float and dynamic-range files always come
            from `model` itself.

    Returns:
        Dict variant -> `.tflite` bytes, in the order of `variants`.

    Example:

    >>> files = convert(model, ["float32", "int8"], representative_images(split.x_train, 100))
    >>> sorted(files)
    ['float32', 'int8']
    """
    variants = list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"`variants` must be a non-empty subset of {VARIANTS}. Received: variants={variants}")
    check_image_model(model)
    int8_model = rewrite.fold_normalization(model) if fold_normalization and "int8" in variants else model
    groups = [(model, [v for v in variants if v != "int8" or int8_model is model])]
    if int8_model is not model:
        groups.append((int8_model, ["int8"]))
    files = {}
    for source, names in groups:
        if names:
            with saved_model(source) as directory:
                files.update({v: convert_saved_model(directory, v, representative) for v in names})
    return {v: files[v] for v in variants}
