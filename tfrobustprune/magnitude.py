"""L1-norm filter pruning of a trained model to a cost target or to given widths: the classic post-training baseline.

Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017) rank the filters
of a trained network by the L1 norm of their weights and remove the smallest.
Here the ranking runs over the same channel groups the gates use (a residual
stream is one group, scored by the summed norms of every layer writing to it),
norms are divided by their group's mean so layers of different scale compete
fairly, and channels are removed smallest first until the cost target holds
(`budget.close_to_target`). `l1_prune_to_widths` instead keeps a given number
of channels per group (an allocation found elsewhere, e.g. by the gates). The
result is stripped like a gated model, so the pruned model is a genuinely
smaller plain Keras model.
"""

import math

import numpy as np
from keras import ops

from tfrobustprune import budget, gating
from tfrobustprune.cost import COST_METRICS, CostModel
from tfrobustprune.strip import strip


def _producing_kernels(gated, cost_model):
    """Dict gid -> `(width, [(kernel, channels), ...])`: the kernels writing each gated group's channels."""
    kernels = {}
    for gid in cost_model.gates:
        group = cost_model.graph.groups[gid]
        found = []
        for layer_name, role in group.members:
            layer = gated.get_layer(layer_name)
            kernel = getattr(layer, "kernel", None)
            if role != "out" or kernel is None:
                continue
            # The output channels are the last axis, or in x multiplier for a depthwise (kh, kw, in, mult) kernel.
            channels = math.prod(kernel.shape[2:]) if type(layer).__name__ == "DepthwiseConv2D" else kernel.shape[-1]
            found.append((kernel, int(channels)))
        kernels[gid] = (group.width, found)
    return kernels


def filter_l1_norm_tensors(gated, cost_model=None):
    """L1 norm of the weights producing each channel of each gated group, as tensors (usable in a train step).

    Args:
        gated: A gated functional model (`tfrobustprune.gate`).
        cost_model: Optional `CostModel` of `gated`.

    Returns:
        Dict gid -> float32 tensor of shape `(width,)`: for every channel, the
        sum over the group's producing layers (role "out") of the L1 norm of
        the kernel slice that computes it (0 for a group no kernel produces).
    """
    norms = {}
    for gid, (width, kernels) in _producing_kernels(gated, cost_model or CostModel(gated)).items():
        total = ops.zeros((width,))
        for kernel, channels in kernels:
            total = total + ops.sum(ops.reshape(ops.abs(ops.convert_to_tensor(kernel)), (-1, channels)), axis=0)
        norms[gid] = total
    return norms


def filter_l1_norms(gated, cost_model=None):
    """`filter_l1_norm_tensors` in NumPy, summed over layers in float64, for ranking outside a train step.

    Args:
        gated: A gated functional model (`tfrobustprune.gate`).
        cost_model: Optional `CostModel` of `gated`.

    Returns:
        Dict gid -> float64 array of shape `(width,)`.
    """
    norms = {}
    for gid, (width, kernels) in _producing_kernels(gated, cost_model or CostModel(gated)).items():
        total = np.zeros(width)
        for kernel, channels in kernels:
            total += np.abs(np.asarray(kernel)).reshape(-1, channels).sum(axis=0)
        norms[gid] = total
    return norms


def _gated_with_norms(model, min_channels, min_fraction):
    """`(gated, cost_model, norms)`: `model` with open gates, its `CostModel` and `filter_l1_norms`."""
    gated = gating.gate(model, min_channels=min_channels, min_fraction=min_fraction, init_logit=1.0)
    cost_model = CostModel(gated)
    return gated, cost_model, filter_l1_norms(gated, cost_model)


def _relative(group_norms):
    """Each group's norms divided by the group's mean, so layers of different scale compete fairly."""
    return {gid: norms / max(float(norms.mean()), 1e-12) for gid, norms in group_norms.items()}


def rank_untrained_gates_by_norm(gated, cost_model=None):
    """Breaks the ties of gates that never trained by the relative L1 norms of their channels.

    `budget.close_to_target` closes the lowest logits first; when every logit
    still holds one value (the gates never moved, e.g. a freeze before the
    hardware loss ever ran) it would close by group and channel index. This
    adds `1e-3 * (norm / group mean - 1)` to each logit, so the ranking is
    that of `l1_prune` and no channel crosses its threshold.

    Args:
        gated: A gated functional model.
        cost_model: Optional `CostModel` of `gated`.

    Returns:
        Bool, whether the gates were untrained (and so re-ranked).
    """
    cost_model = cost_model or CostModel(gated)
    values = np.concatenate([np.asarray(g.logits).ravel() for g in cost_model.gates.values()])
    if values.size == 0 or not np.all(values == values[0]):
        return False
    for gid, relative in _relative(filter_l1_norms(gated, cost_model)).items():
        cost_model.gates[gid].logits.assign((values[0] + 1e-3 * (relative - 1.0)).astype("float32"))
    return True


def l1_gates(model, metric, target_ratio, min_channels=1, min_fraction=0.0):
    """Gates `model` and closes its channels by L1 norm until `metric` is at most `target_ratio` of dense.

    Args:
        model: A trained functional `keras.Model` without gates.
        metric: "params" or "macs".
        target_ratio: Float in (0, 1], cost of the result relative to `model`.
        min_channels: Int >= 1, channels every group keeps at least.
        min_fraction: Float in [0, 1), fraction of its width every group keeps at least.

    Returns:
        `(gated, result)`: the gated model with frozen gates (closed channels
        output zeros) and the dict of `budget.close_to_target` (`ratio`
        achieved, `reachable`, ...).

    Raises:
        ValueError: for a bad `metric` or `target_ratio`, or a gated `model`.
    """
    if metric not in COST_METRICS:
        raise ValueError(f"`metric` must be one of {COST_METRICS}. Received: metric={metric!r}")
    if not 0.0 < target_ratio <= 1.0:
        raise ValueError(f"`target_ratio` must be in (0, 1]. Received: target_ratio={target_ratio}")
    gated, cost_model, group_norms = _gated_with_norms(model, min_channels, min_fraction)
    for gid, relative in _relative(group_norms).items():
        # Logits rank channels for close_to_target; all start open (sigmoid(1 + x) > 0.5).
        cost_model.gates[gid].logits.assign((1.0 + relative).astype("float32"))
    result = budget.close_to_target(gated, metric, target_ratio, cost_model)
    for layer_gate in cost_model.gates.values():
        layer_gate.frozen = True
    return gated, result


def l1_prune(model, metric, target_ratio, min_channels=1, min_fraction=0.0):
    """Prunes a trained model's channels by L1 norm to a cost target and strips them (see `l1_gates`).

    Returns:
        `(pruned, result)`: the smaller plain `keras.Model` and the dict of
        `budget.close_to_target`.

    Example:

    >>> pruned, result = l1_prune(trained_resnet20, "params", 0.584)
    >>> result["ratio"] <= 0.584
    True
    """
    gated, result = l1_gates(model, metric, target_ratio, min_channels, min_fraction)
    return strip(gated), result


def group_widths(model):
    """The width of every channel group of a plain model, in the form `l1_prune_to_widths` takes.

    Args:
        model: A functional `keras.Model` without gates, e.g. a stripped `RobustPruneModel` network.

    Returns:
        Dict group name -> channels, e.g. `{"stream:stem_conv": 16, "stage1_block1_1_conv": 16, ...}`.
    """
    return CostModel(gating.gate(model)).named_widths()


def l1_gates_to_widths(model, widths):
    """Gates `model` and keeps, in every group, the `widths[gid]` channels of largest L1 norm.

    Transfers a channel allocation (e.g. the widths the gates of a `RobustPruneModel` settled
    on, `RobustPruneCallback`'s `width/<gid>` logs) to a trained dense model, so that the
    allocation and the training that found it can be judged apart (Liu et al., "Rethinking
    the Value of Network Pruning", ICLR 2019).

    Args:
        model: A trained functional `keras.Model` without gates.
        widths: Dict group name (e.g. "stage3_block2_1_conv", "stream:stem_conv", as in the
            `width/<name>` logs) -> int in [1, group width]. Every group must be named.

    Returns:
        The gated model with frozen gates (closed channels output zeros).

    Raises:
        ValueError: for an unknown or missing group id, or a width out of range.
    """
    gated, cost_model, group_norms = _gated_with_norms(model, min_channels=1, min_fraction=0.0)
    names = {gid: cost_model.graph.groups[gid].name for gid in cost_model.gates}
    unknown = sorted(set(widths) - set(names.values()))
    missing = sorted(set(names.values()) - set(widths))
    if unknown or missing:
        raise ValueError(
            f"`widths` must name every channel group of the model once; unknown: {unknown}, missing: {missing}. "
            f"Received: widths={widths!r}"
        )
    for gid, norms in group_norms.items():
        name = names[gid]
        keep = widths[name]
        if int(keep) != keep or not 1 <= keep <= len(norms):
            raise ValueError(
                f"`widths[{name!r}]` must be an integer in [1, {len(norms)}]. Received: widths[{name!r}]={keep!r}"
            )
        kept = np.argsort(-norms, kind="stable")[: int(keep)]
        logits = np.full(len(norms), budget.CLOSED_LOGIT, dtype="float32")
        logits[kept] = 1.0
        cost_model.gates[gid].logits.assign(logits)
        cost_model.gates[gid].frozen = True
    return gated


def l1_prune_to_widths(model, widths):
    """Prunes a trained model to given per-group widths by L1 norm and strips it (see `l1_gates_to_widths`).

    Args:
        model: A trained functional `keras.Model` without gates.
        widths: Dict group name -> channels to keep, naming every group (`group_widths` gives
            the form, e.g. of another pruned model).

    Returns:
        The smaller plain `keras.Model`.

    Example:

    >>> pruned = l1_prune_to_widths(trained_resnet20, group_widths(our_stripped_resnet20))
    >>> group_widths(pruned) == group_widths(our_stripped_resnet20)
    True
    """
    return strip(l1_gates_to_widths(model, widths))
