"""Exact hardware cost (parameters, MACs) as a function of the open channels per group.

`CostModel` reads a gated model's `ChannelGraph` and evaluates

    params(k) = fixed + sum over weights of prod over axes (k[group] or size)
    macs(k)   = sum over conv/dense layers of positions * kernel size(k)

where `k[group]` is the number of open channels of each gated group. With
Python ints (hard masks) the figures equal `count_params()` and `count_macs()`
of the stripped model; with the straight-through sums of the gate masks they
are differentiable, which is what the hardware loss needs.
"""

import math

import keras
from keras import ops

from tfrobustprune import groups as groups_lib

COST_METRICS = ("params", "macs")


def count_macs(model):
    """Counts multiply-accumulates of one image through a plain Keras model.

    Counts `Conv2D`, `DepthwiseConv2D` and `Dense` layers from their actual
    tensor shapes (independently of the channel-group analysis).

    Args:
        model: A built `keras.Model`.

    Returns:
        Int, MACs per image.
    """
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, cin, mult = layer.kernel.shape
            macs += math.prod(layer.output.shape[1:-1]) * kh * kw * cin * mult
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            macs += math.prod(layer.output.shape[1:-1]) * kh * kw * cin_per_group * cout
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            macs += math.prod(layer.input.shape[1:-1]) * cin * cout
        elif isinstance(layer, keras.Model):
            macs += count_macs(layer)
    return int(macs)


class CostModel:
    """Parameter and MAC counts of a gated model as functions of its open channels.

    Args:
        model: A gated functional `keras.Model` (see `tfrobustprune.gate`).

    Example:

    >>> cost = CostModel(tfrobustprune.gate(tfrobustprune.models.resnet20()))
    >>> cost.dense("params") == tfrobustprune.models.resnet20().count_params()
    True
    """

    def __init__(self, model):
        self.graph = groups_lib.analyze(model)
        self.widths = {g.gid: g.width for g in self.graph.groups}
        self.gates = {g.gid: model.get_layer(g.gate) for g in self.graph.groups if g.gate}
        self._kernels = {(b.layer, b.index): b for b in self.graph.bindings}
        self._dense = {metric: int(self.evaluate(metric, {})) for metric in COST_METRICS}

    def _size(self, binding, kept):
        size = 1
        axes = dict(binding.axes)
        for axis, dim in enumerate(binding.shape):
            gid = axes.get(axis)
            size = size * (kept.get(gid, dim) if gid is not None else dim)
        return size

    def params(self, kept):
        """Parameters with `kept[gid]` open channels per group (missing groups: all open)."""
        total = self.graph.fixed_params
        for binding in self.graph.bindings:
            total = total + self._size(binding, kept)
        return total

    def macs(self, kept):
        """MACs per image with `kept[gid]` open channels per group (missing groups: all open)."""
        total = 0
        for layer, index, positions in self.graph.mac_layers:
            total = total + positions * self._size(self._kernels[(layer, index)], kept)
        return total

    def evaluate(self, metric, kept):
        """`params(kept)` or `macs(kept)` by name.

        Args:
            metric: "params" or "macs".
            kept: Dict gid -> open channels (int or scalar tensor).

        Returns:
            Int or scalar tensor.
        """
        if metric not in COST_METRICS:
            raise ValueError(f"`metric` must be one of {COST_METRICS}. Received: metric={metric!r}")
        return self.params(kept) if metric == "params" else self.macs(kept)

    def dense(self, metric):
        """Cost of the model with every channel open."""
        if metric not in COST_METRICS:
            raise ValueError(f"`metric` must be one of {COST_METRICS}. Received: metric={metric!r}")
        return self._dense[metric]

    def hard_widths(self):
        """Dict gid -> open channels under the gates' hard masks (Python ints)."""
        return {gid: int(ops.convert_to_numpy(ops.sum(g.hard_mask()))) for gid, g in self.gates.items()}

    def soft_widths(self):
        """Dict gid -> straight-through sum of the gate mask (differentiable)."""
        return {gid: ops.sum(g.mask()) for gid, g in self.gates.items()}

    def ratio(self, metric, differentiable=False):
        """Cost of the current masks divided by the dense cost.

        Args:
            metric: "params" or "macs".
            differentiable: Bool, use straight-through widths (a tensor) instead
                of hard ones (a float).

        Returns:
            Scalar tensor if `differentiable`, else float.
        """
        if differentiable:
            return self.evaluate(metric, self.soft_widths()) / float(self.dense(metric))
        return float(self.evaluate(metric, self.hard_widths())) / self.dense(metric)

    def marginal_costs(self, metric, widths=None):
        """Cost of one more open channel in each gated group: the derivative of the cost by the group's width.

        The cost is at most quadratic in one group's width (a residual stream
        feeds itself), so the central difference `(cost(k + 1) - cost(k - 1)) / 2`
        is the exact derivative.

        Args:
            metric: "params" or "macs".
            widths: Optional dict gid -> open channels (float or scalar tensor);
                default: the current hard widths.

        Returns:
            Dict gid -> float or scalar tensor, >= 0 (0 for a group the metric
            does not count).
        """
        if widths is None:
            widths = {gid: float(w) for gid, w in self.hard_widths().items()}
        return {
            gid: (self.evaluate(metric, {**widths, gid: w + 1.0}) - self.evaluate(metric, {**widths, gid: w - 1.0}))
            / 2.0
            for gid, w in widths.items()
        }

    def named_widths(self):
        """Dict group name -> open channels (hard masks), for logs and reports."""
        hard = self.hard_widths()
        return {g.name: hard.get(g.gid, g.width) for g in self.graph.groups if g.gate}
