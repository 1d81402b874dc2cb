"""`gate(model)`: puts one shared `ChannelGate` on every prunable channel group."""

import math

import keras

from tfrobustprune import groups as groups_lib
from tfrobustprune.gates import ChannelGate


def group_floor(width, min_channels=1, min_fraction=0.0):
    """Smallest width a group may shrink to: `max(min_channels, ceil(min_fraction * width))`.

    Args:
        width: Int, channels of the group.
        min_channels: Int >= 1.
        min_fraction: Float in [0, 1].

    Returns:
        Int in [1, width].
    """
    return min(width, max(int(min_channels), math.ceil(float(min_fraction) * width)))


def gate(model, min_channels=1, min_fraction=0.0, init_logit=3.0, threshold=0.5):
    """Returns a copy of a functional model with a channel gate on every prunable group.

    The model is analysed into channel groups (`tfrobustprune.groups.analyze`);
    each prunable group gets one `ChannelGate`, placed after every batch norm
    (or bias-adding layer) that produces the group's channels, so a closed
    channel is exactly zero wherever it is read and stripping is exact. The
    copy starts with the original weights.

    Args:
        model: A functional `keras.Model` without gates.
        min_channels: Int >= 1, minimum open channels of each group.
        min_fraction: Float in [0, 1), minimum open fraction of each group;
            the floor is the larger of the two.
        init_logit: Float, initial gate logit (3.0: open).
        threshold: Float in (0, 1), sigmoid value above which a channel is open.

    Returns:
        The gated functional `keras.Model`, with the same inputs and outputs.

    Raises:
        ValueError: for a bad floor, or a model that already has gates.

    Example:

    >>> gated = gate(tfrobustprune.models.resnet20(), min_fraction=0.1)
    >>> len([l for l in gated.layers if isinstance(l, ChannelGate)])
    12
    """
    if int(min_channels) != min_channels or min_channels < 1:
        raise ValueError(f"`min_channels` must be an integer >= 1. Received: min_channels={min_channels}")
    if not 0.0 <= min_fraction < 1.0:
        raise ValueError(f"`min_fraction` must be in [0, 1). Received: min_fraction={min_fraction}")
    graph = groups_lib.analyze(model)
    if any(g.gate for g in graph.groups):
        raise ValueError("`model` already has channel gates; pass the model before gating.")
    gates, gate_of_layer = [], {}
    for i, group in enumerate(graph.prunable_groups):
        if not group.gate_after:
            continue
        name = "gate_" + group.name.replace("stream:", "stream_").replace("/", "_")
        layer_gate = ChannelGate(
            init_logit=init_logit,
            threshold=threshold,
            min_channels=group_floor(group.width, min_channels, min_fraction),
            name=name if name not in gate_of_layer else f"{name}_{i}",
        )
        gates.append(layer_gate)
        for layer_name in group.gate_after:
            gate_of_layer[layer_name] = layer_gate

    def call_function(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        layer_gate = gate_of_layer.get(layer.name)
        return outputs if layer_gate is None else layer_gate(outputs)

    gated = keras.models.clone_model(model, call_function=call_function)
    for layer in model.layers:
        if layer.weights:
            gated.get_layer(layer.name).set_weights(layer.get_weights())
    gated.name = model.name
    return gated


def gate_layers(model):
    """The `ChannelGate` layers of a model, in layer order.

    Args:
        model: A `keras.Model`.

    Returns:
        List of `ChannelGate`.
    """
    return [layer for layer in model.layers if isinstance(layer, ChannelGate)]
