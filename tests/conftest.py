"""Shared fixtures: a tiny real-image batch and small (gated) ResNets, CPU, seconds."""

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tfrobustprune  # noqa: E402
from tfrobustprune import data, models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_benchmark(name):
    """Imports `benchmarks/<name>.py` (not a package) as a module, so that tests can call its functions."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def sample():
    """The CIFAR-10 sample shipped in the package."""
    return data.load_sample()


@pytest.fixture(scope="session")
def images(sample):
    """32 real validation images as float32 in [0, 1]."""
    return sample.x_val[:32].astype("float32") / 255.0


@pytest.fixture(scope="session")
def labels(sample):
    return sample.y_val[:32]


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


@pytest.fixture
def tiny_model():
    """A plain ResNet8 with widths 4/8/16."""
    keras.utils.set_random_seed(0)
    return models.cifar_resnet(depth=8, width=4)


@pytest.fixture
def tiny_gated_model(tiny_model):
    """The tiny ResNet gated, with random gates (some channels closed) and random BN statistics."""
    return randomize(tfrobustprune.gate(tiny_model, min_channels=1))


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


@pytest.fixture(scope="session")
def trained_cnn():
    """`small_cnn` trained 6 epochs on the shipped sample (about 40% validation accuracy); shared, not mutated."""
    split = data.load_sample()
    model = small_cnn()
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(split.x_train / 255.0, split.y_train, epochs=6, batch_size=64, verbose=0)
    return model
