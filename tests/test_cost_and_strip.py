import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import randomize

import tfrobustprune
from tfrobustprune import CostModel, count_macs, models, strip
from tfrobustprune.strip import kept_channels


def test_dense_cost_equals_the_plain_model():
    model = models.resnet20()
    cost = CostModel(tfrobustprune.gate(model))
    assert cost.dense("params") == model.count_params()
    assert cost.dense("macs") == count_macs(model) == 40_813_184


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cost_model_equals_stripped_model_for_random_masks(seed):
    gated = randomize(tfrobustprune.gate(models.cifar_resnet(depth=14, width=8)), seed=seed)
    cost = CostModel(gated)
    widths = cost.hard_widths()
    slim = strip(gated)
    assert cost.params(widths) == slim.count_params()
    assert cost.macs(widths) == count_macs(slim)
    assert slim.count_params() < gated.count_params()


def test_differentiable_cost_has_gradients_for_every_gate(tiny_gated_model):
    cost = CostModel(tiny_gated_model)
    with tf.GradientTape() as tape:
        ratio = cost.ratio("macs", differentiable=True)
    grads = tape.gradient(ratio, [g.logits for g in cost.gates.values()])
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert float(ratio) == pytest.approx(cost.ratio("macs"), rel=1e-5)


def test_marginal_costs_are_the_derivatives_of_the_exact_cost(tiny_gated_model):
    cost = CostModel(tiny_gated_model)
    widths = {gid: tf.constant(float(w)) for gid, w in cost.hard_widths().items()}
    for metric in ("params", "macs"):
        with tf.GradientTape() as tape:
            tape.watch(list(widths.values()))
            total = cost.evaluate(metric, widths)
        derivatives = dict(zip(widths, tape.gradient(total, list(widths.values()))))
        marginal = cost.marginal_costs(metric)
        assert set(marginal) == set(widths)
        for gid, value in marginal.items():
            assert float(value) == pytest.approx(float(derivatives[gid]), rel=1e-6) and float(value) > 0


def test_strip_is_exact(tiny_gated_model, images):
    slim = strip(tiny_gated_model)
    np.testing.assert_allclose(slim.predict(images, verbose=0), tiny_gated_model.predict(images, verbose=0), atol=1e-5)


def test_stripped_model_has_only_standard_layers_and_loads_plainly(tmp_path, tiny_gated_model, images):
    slim = strip(tiny_gated_model)
    path = tmp_path / "stripped.keras"
    slim.save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    assert "tfrobustprune" not in json.dumps(config)
    loaded = keras.models.load_model(path, custom_objects={})
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), tiny_gated_model.predict(images, verbose=0), atol=1e-5
    )


def test_strip_refuses_a_gate_that_closes_everything(tiny_gated_model):
    gate = tfrobustprune.gate_layers(tiny_gated_model)[0]
    gate.min_channels = 1
    kept = kept_channels(tiny_gated_model)
    assert all(idx.size >= 1 for idx in kept.values())
    # Break the invariant by hand: a mask of zeros must be refused, not stripped into an empty layer.
    gate.hard_mask = lambda: keras.ops.zeros((gate.channels,))
    with pytest.raises(ValueError, match="closes every channel"):
        strip(tiny_gated_model)


def test_strip_of_robust_prune_model_uses_its_network(tiny_gated_model, images):
    model = tfrobustprune.RobustPruneModel(tiny_gated_model)
    slim = strip(model)
    np.testing.assert_allclose(slim.predict(images, verbose=0), tiny_gated_model.predict(images, verbose=0), atol=1e-5)
