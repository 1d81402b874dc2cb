import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobustprune import ChannelGate


def test_gate_rejects_bad_threshold():
    with pytest.raises(ValueError, match=r"Received: threshold=1\.5"):
        ChannelGate(threshold=1.5)


def test_gate_rejects_bad_min_channels():
    with pytest.raises(ValueError, match=r"Received: min_channels=0"):
        ChannelGate(min_channels=0)


def test_gate_rejects_floor_wider_than_input():
    with pytest.raises(ValueError, match=r"exceeds the 4 channels"):
        ChannelGate(min_channels=5)(np.ones((1, 4), "float32"))


def test_forward_uses_hard_mask():
    gate = ChannelGate()
    x = np.ones((2, 3, 3, 4), "float32")
    gate.build(x.shape)
    gate.logits.assign([2.0, -2.0, 0.5, -0.1])
    y = keras.ops.convert_to_numpy(gate(x))
    np.testing.assert_array_equal(y[0, 0, 0], [1.0, 0.0, 1.0, 0.0])


def test_floor_keeps_largest_logits_open():
    gate = ChannelGate(min_channels=2)
    gate.build((1, 5))
    gate.logits.assign([-3.0, -1.0, -2.0, -5.0, -4.0])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(gate.hard_mask()), [0, 1, 1, 0, 0])


def test_floor_opens_exactly_min_channels_when_logits_tie():
    gate = ChannelGate(init_logit=-1.0, min_channels=2)  # every logit equal and below the threshold
    gate.build((1, 8))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(gate.hard_mask()), [1, 1, 0, 0, 0, 0, 0, 0])
    gate.logits.assign([-2.0, -1.0, -3.0, -1.0, -1.0, -4.0, -5.0, -6.0])  # a tie at the floor's edge
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(gate.hard_mask()), [0, 1, 0, 1, 0, 0, 0, 0])


def test_straight_through_gradient_reaches_closed_and_open_gates():
    gate = ChannelGate()
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 3)).astype("float32"))
    gate.build(x.shape)
    gate.logits.assign([2.0, -2.0, 0.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(gate(x) * x)
    grad = tape.gradient(loss, gate.logits).numpy()
    # d/dl of sum(x^2 * mask) through sigmoid: sum(x^2) * sigmoid'(l), non-zero even for the closed gate.
    sig = 1 / (1 + np.exp(-np.array([2.0, -2.0, 0.0])))
    np.testing.assert_allclose(grad, (x.numpy() ** 2).sum(0) * sig * (1 - sig), rtol=1e-5)


def test_frozen_gate_passes_no_gradient():
    gate = ChannelGate(frozen=True)
    x = tf.ones((2, 3))
    gate.build(x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(gate(x))
    assert tape.gradient(loss, gate.logits) is None


def test_gate_config_round_trip():
    gate = ChannelGate(init_logit=1.5, threshold=0.4, min_channels=3, frozen=True, name="g")
    clone = ChannelGate.from_config(gate.get_config())
    assert (clone.init_logit, clone.threshold, clone.min_channels, clone.frozen, clone.name) == (1.5, 0.4, 3, True, "g")


def test_gated_model_keras_save_load_round_trip(tmp_path, tiny_gated_model, images):
    path = tmp_path / "gated.keras"
    tiny_gated_model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), tiny_gated_model.predict(images, verbose=0), atol=1e-6
    )
    gates = [layer for layer in loaded.layers if isinstance(layer, ChannelGate)]
    assert gates and all(g.min_channels >= 1 for g in gates)
