import pytest

import tfrobustprune
from tfrobustprune import CostModel, budget, count_macs, models, strip


@pytest.mark.parametrize("metric,target", [("macs", 0.5), ("params", 0.3)])
def test_close_to_target_meets_target_from_above(metric, target):
    gated = tfrobustprune.gate(models.cifar_resnet(depth=14, width=8), min_fraction=0.1)
    result = budget.close_to_target(gated, metric, target)
    assert result["reachable"]
    assert result["ratio"] <= target
    assert result["ratio"] > target * 0.95  # one channel at a time: no big overshoot
    slim = strip(gated)
    dense = models.cifar_resnet(depth=14, width=8)
    measured = (
        slim.count_params() / dense.count_params() if metric == "params" else count_macs(slim) / count_macs(dense)
    )
    assert measured == pytest.approx(result["ratio"])


def test_close_to_target_reports_unreachable_target_and_respects_floors():
    gated = tfrobustprune.gate(models.cifar_resnet(depth=8, width=8), min_fraction=0.5)
    floor = budget.min_ratio(gated, "params")
    result = budget.close_to_target(gated, "params", floor / 2)
    assert not result["reachable"]
    assert result["ratio"] == pytest.approx(floor)
    cost = CostModel(gated)
    assert all(cost.hard_widths()[gid] == g.min_channels for gid, g in cost.gates.items())


def test_close_to_target_rejects_bad_target(tiny_gated_model):
    with pytest.raises(ValueError, match=r"Received: target_ratio=0"):
        budget.close_to_target(tiny_gated_model, "macs", 0)


def test_close_to_target_reopens_when_training_overshot_below():
    gated = tfrobustprune.gate(models.cifar_resnet(depth=14, width=8), min_fraction=0.1)
    budget.close_to_target(gated, "macs", 0.3)  # far below the target we then ask for
    result = budget.close_to_target(gated, "macs", 0.5)
    assert result["reopened"] > 0 and result["closed"] == 0
    assert 0.5 * 0.95 < result["ratio"] <= 0.5
