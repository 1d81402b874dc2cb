"""Helpers the tests import: a benchmark script loader, randomized gates and BN statistics, a small CNN.

Fixtures live in conftest.py; plain functions live here, because conftest.py is pytest's to load, not a module to import.
"""

import importlib.util
import os
import sys

import keras
import numpy as np

import tfrobustprune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def load_benchmark(name):
    """Imports `benchmarks/<name>.py` (not a package) as a module, so that tests can call its functions.

    The benchmarks folder goes on `sys.path` first, as it is for a script run from it, so that a script's imports
    of its sibling modules (e.g. `import histories`) resolve.
    """
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def randomize(model, seed=0):
    """Random BN statistics and gate logits, so closed channels and BN shifts are exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.normal(1.0, 0.3, gamma.shape).astype("float32"),
                    rng.normal(0.0, 0.5, beta.shape).astype("float32"),
                    rng.normal(0.0, 0.5, mean.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, var.shape).astype("float32"),
                ]
            )
        if isinstance(layer, tfrobustprune.ChannelGate):
            layer.logits.assign(rng.normal(0.0, 1.5, layer.logits.shape).astype("float32"))
    return model


def small_cnn(seed=0):
    """A small plain CNN (two conv blocks, two dense layers) on 32x32x3 images, logits out."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(10)(h))
