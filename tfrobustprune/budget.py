"""Meeting a cost target exactly: close the least important channels (or reopen the most) until it holds."""

import numpy as np

from tfrobustprune.cost import CostModel

# Logit written into a gate to close its channel for good (sigmoid(-6) = 0.0025).
CLOSED_LOGIT = -6.0


def close_to_target(network, metric, target_ratio, cost_model=None, reopen=True):
    """Sets the gates so the cost is as close to `target_ratio` as possible without exceeding it.

    While the cost is above the target, the open channel with the lowest logit
    among the groups that can still shrink is closed (floors are respected), so
    the channels the training found least useful go first. If the cost is then
    below the target and `reopen` is True, closed channels are reopened, highest
    logit first, as long as the cost stays within the target. The result lies
    within one channel's cost below the target.

    Args:
        network: A gated functional model.
        metric: "params" or "macs".
        target_ratio: Float in (0, 1].
        cost_model: Optional `CostModel` of `network` (built if None).
        reopen: Bool, reopen channels when below the target.

    Returns:
        Dict with `ratio` (achieved), `closed` and `reopened` (channels changed
        here) and `reachable` (False if the floors stop short of the target).

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

    closed = reopened = 0
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
        closed += 1
        current = ratio()
    if reopen and current < target_ratio:
        shut = sorted(((-logits[gid][c], gid, c) for gid, mask in masks.items() for c in np.flatnonzero(~mask)))
        for _, gid, channel in shut:
            masks[gid][channel] = True
            trial = ratio()
            if trial <= target_ratio:
                current, reopened = trial, reopened + 1
            else:
                masks[gid][channel] = False
    for gid, g in cost_model.gates.items():
        # Open channels get a clearly open logit, closed ones a clearly closed one.
        new = np.where(masks[gid], np.maximum(logits[gid], 1.0), np.minimum(logits[gid], CLOSED_LOGIT))
        g.logits.assign(new.astype(g.logits.dtype))
    return {"ratio": current, "closed": closed, "reopened": reopened, "reachable": current <= target_ratio}


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
