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
