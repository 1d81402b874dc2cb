"""Shared fixtures: a tiny real-image batch and small (gated) ResNets, CPU, seconds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
from helpers import randomize, small_cnn  # noqa: E402

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


@pytest.fixture
def tiny_model():
    """A plain ResNet8 with widths 4/8/16."""
    keras.utils.set_random_seed(0)
    return models.cifar_resnet(depth=8, width=4)


@pytest.fixture
def tiny_gated_model(tiny_model):
    """The tiny ResNet gated, with random gates (some channels closed) and random BN statistics."""
    return randomize(tfrobustprune.gate(tiny_model, min_channels=1))


@pytest.fixture(scope="session")
def trained_cnn():
    """`small_cnn` trained 6 epochs on the shipped sample (about 40% validation accuracy); shared, not mutated."""
    split = data.load_sample()
    model = small_cnn()
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(split.x_train / 255.0, split.y_train, epochs=6, batch_size=64, verbose=0)
    return model
