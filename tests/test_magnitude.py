import numpy as np
import pytest

from tfrobustprune import CostModel, count_macs, magnitude, models


def _resnet(seed=0):
    model = models.cifar_resnet(depth=8, width=8)
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # distinct filter norms so the ranking is well defined
        if hasattr(layer, "kernel"):
            kernel = layer.kernel.numpy()
            layer.kernel.assign(kernel * rng.uniform(0.1, 2.0, size=kernel.shape[-1]).astype("float32"))
    return model


@pytest.mark.parametrize("metric,target", [("params", 0.5), ("macs", 0.3)])
def test_l1_prune_meets_target_with_a_smaller_plain_model(metric, target):
    model = _resnet()
    pruned, result = magnitude.l1_prune(model, metric, target)
    assert result["reachable"] and result["ratio"] <= target
    measured = (
        pruned.count_params() / model.count_params() if metric == "params" else count_macs(pruned) / count_macs(model)
    )
    assert measured == pytest.approx(result["ratio"])
    assert all("Gate" not in type(layer).__name__ for layer in pruned.layers)
    x = np.random.default_rng(1).uniform(size=(4, 32, 32, 3)).astype("float32")
    assert pruned.predict(x, verbose=0).shape == (4, 10)


def test_l1_gates_close_the_smallest_filters_of_each_group():
    model = _resnet(seed=3)
    gated, _ = magnitude.l1_gates(model, "params", 0.3)
    cost = CostModel(gated)
    norms = magnitude.filter_l1_norms(gated, cost)
    name = "stage1_block1_1_conv"
    expected = np.abs(model.get_layer(name).kernel.numpy()).reshape(-1, 8).sum(0)
    shrunk = matched = 0
    for gid, layer_gate in cost.gates.items():
        is_open = np.asarray(layer_gate.hard_mask()).astype(bool)
        if cost.graph.groups[gid].name == name:
            np.testing.assert_allclose(norms[gid], expected, rtol=1e-6)
            matched += 1
        if not is_open.all():
            shrunk += 1
            assert norms[gid][is_open].min() >= norms[gid][~is_open].max()
    assert shrunk >= 2 and matched == 1


def test_l1_prune_rejects_bad_arguments():
    model = _resnet()
    with pytest.raises(ValueError, match=r"Received: metric='flops'"):
        magnitude.l1_prune(model, "flops", 0.5)
    with pytest.raises(ValueError, match=r"Received: target_ratio=1.5"):
        magnitude.l1_prune(model, "params", 1.5)
