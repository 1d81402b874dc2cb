"""Shared fixtures: a tiny real-image batch and small (gated) ResNets, CPU, seconds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tfrobustprune  # noqa: E402
from tfrobustprune import data, models  # noqa: E402


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
