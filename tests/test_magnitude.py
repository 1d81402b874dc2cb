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


def test_l1_prune_to_widths_keeps_the_largest_filters_at_the_given_widths():
    model = _resnet(seed=5)
    dense = magnitude.group_widths(model)
    widths = {name: max(1, width // 2) if name.startswith("stage") else width for name, width in dense.items()}
    widths["stream:stem_conv"] = 3
    gated = magnitude.l1_gates_to_widths(model, widths)
    cost = CostModel(gated)
    assert cost.named_widths() == widths
    norms = magnitude.filter_l1_norms(gated, cost)
    for gid, layer_gate in cost.gates.items():
        is_open = np.asarray(layer_gate.hard_mask()).astype(bool)
        if not is_open.all():
            assert norms[gid][is_open].min() >= norms[gid][~is_open].max()
    pruned = magnitude.l1_prune_to_widths(model, widths)
    assert magnitude.group_widths(pruned) == widths  # the allocation survives the strip
    assert magnitude.group_widths(model) == dense
    x = np.random.default_rng(2).uniform(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(pruned.predict(x, verbose=0), gated.predict(x, verbose=0), atol=1e-4)


def test_l1_prune_to_widths_rejects_unknown_missing_and_out_of_range_widths():
    model = _resnet()
    dense = magnitude.group_widths(model)
    with pytest.raises(ValueError, match=r"unknown: \['nope'\], missing: \[\]"):
        magnitude.l1_prune_to_widths(model, {**dense, "nope": 2})
    with pytest.raises(ValueError, match=r"missing: \['stream:stem_conv'\]"):
        magnitude.l1_prune_to_widths(model, {k: v for k, v in dense.items() if k != "stream:stem_conv"})
    with pytest.raises(ValueError, match=r"Received: widths\['stream:stem_conv'\]=0"):
        magnitude.l1_prune_to_widths(model, {**dense, "stream:stem_conv": 0})
    with pytest.raises(ValueError, match=r"Received: widths\['stream:stem_conv'\]=9"):
        magnitude.l1_prune_to_widths(model, {**dense, "stream:stem_conv": 9})
