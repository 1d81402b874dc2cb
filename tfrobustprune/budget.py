"""Meeting a cost target exactly: close the least important open channels until the budget holds."""

import numpy as np

from tfrobustprune.cost import CostModel

# Logit written into a gate to close its channel for good (sigmoid(-6) = 0.0025).
CLOSED_LOGIT = -6.0


def close_to_target(network, metric, target_ratio, cost_model=None):
    """Closes open channels, lowest gate logit first, until `cost <= target_ratio * dense cost`.

    Floors are respected (a gate never goes below its `min_channels`). Each
    closure is chosen as the open channel with the lowest logit among the
    groups that can still shrink, so the channels the training found least
    useful go first. Nothing changes if the target already holds.

    Args:
        network: A gated functional model.
        metric: "params" or "macs".
        target_ratio: Float in (0, 1].
        cost_model: Optional `CostModel` of `network` (built if None).

    Returns:
        Dict with `ratio` (achieved), `closed` (channels closed here) and
        `reachable` (False if the floors stop short of the target).

    Example:

    >>> result = close_to_target(tfrobustprune.gate(resnet20()), "macs", 0.25)
    >>> result["ratio"] <= 0.25
    True
    """
    if not 0.0 < target_ratio <= 1.0:
        raise ValueError(f"`target_ratio` must be in (0, 1]. Received: target_ratio={target_ratio}")
    cost_model = cost_model or CostModel(network)
    dense = cost_model.dense(metric)
    masks = {gid: np.asarray(g.hard_mask()).astype(bool) for gid, g in cost_model.gates.items()}
    logits = {gid: np.array(g.logits.numpy()) for gid, g in cost_model.gates.items()}
    floors = {gid: g.min_channels for gid, g in cost_model.gates.items()}

    def ratio():
        return cost_model.evaluate(metric, {gid: int(m.sum()) for gid, m in masks.items()}) / dense

    closed = 0
    current = ratio()
    while current > target_ratio:
        candidates = [
            (logits[gid][c], gid, c)
            for gid, mask in masks.items()
            if mask.sum() > floors[gid]
            for c in np.flatnonzero(mask)
        ]
        if not candidates:
            break
        _, gid, channel = min(candidates)
        masks[gid][channel] = False
        logits[gid][channel] = min(logits[gid][channel], CLOSED_LOGIT)
        closed += 1
        current = ratio()
    for gid, g in cost_model.gates.items():
        # Open channels keep their logits; closed ones get a clearly closed logit.
        new = np.where(masks[gid], np.maximum(logits[gid], 1.0), np.minimum(logits[gid], CLOSED_LOGIT))
        g.logits.assign(new.astype(g.logits.dtype))
    return {"ratio": current, "closed": closed, "reachable": current <= target_ratio}


def min_ratio(network, metric, cost_model=None):
    """Smallest cost ratio the floors allow (every group at its `min_channels`).

    Args:
        network: A gated functional model.
        metric: "params" or "macs".
        cost_model: Optional `CostModel`.

    Returns:
        Float.
    """
    cost_model = cost_model or CostModel(network)
    kept = {gid: g.min_channels for gid, g in cost_model.gates.items()}
    return cost_model.evaluate(metric, kept) / cost_model.dense(metric)
