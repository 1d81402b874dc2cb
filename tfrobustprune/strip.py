"""`strip(model)`: removes closed channels and returns a smaller plain Keras model.

Surgery only: the channel groups come from `tfrobustprune.groups.analyze`, the
kept channels from each gate's hard mask. Each weight is sliced along the axes
that the analysis binds to a group (`WeightBinding`), so the stripped model has
standard layers only and computes the gated model's function exactly.
"""

import keras
import numpy as np

from tfrobustprune import groups as groups_lib
from tfrobustprune.gates import ChannelGate

# Layer type -> config key holding its number of output channels.
_WIDTH_KEYS = {keras.layers.Conv2D: "filters", keras.layers.Dense: "units"}


def kept_channels(model, graph=None):
    """Indices of the open channels of each gated group.

    Args:
        model: A gated functional `keras.Model`.
        graph: Its `ChannelGraph` (analysed if None).

    Returns:
        Dict gid -> sorted int numpy array of kept channel indices.

    Raises:
        ValueError: if a gate would leave a group empty.
    """
    graph = graph or groups_lib.analyze(model)
    kept = {}
    for group in graph.groups:
        if group.gate is None:
            continue
        layer_gate = model.get_layer(group.gate)
        mask = keras.ops.convert_to_numpy(layer_gate.hard_mask())
        if mask.shape != (group.width,):
            raise ValueError(
                f"Gate {group.gate} has {mask.shape[0]} channels but its group {group.name} has "
                f"{group.width}; the model is inconsistent."
            )
        indices = np.flatnonzero(mask > 0.5)
        if indices.size == 0:
            raise ValueError(f"Gate {group.gate} closes every channel of group {group.name}; refusing to strip.")
        kept[group.gid] = indices
    return kept


def strip(model):
    """Returns a plain, smaller `keras.Model` with the closed channels removed.

    Args:
        model: A gated functional model, or a `RobustPruneModel` wrapping one.

    Returns:
        A functional `keras.Model` of standard Keras layers (no gates), whose
        outputs equal the gated model's (up to float rounding) and whose
        `count_params()` equals `CostModel(model).params` at the hard masks.

    Example:

    >>> slim = strip(gated_model)
    >>> slim.count_params() <= gated_model.count_params()
    True
    """
    model = getattr(model, "network", model)
    graph = groups_lib.analyze(model)
    kept = kept_channels(model, graph)
    axes_of = {}
    for binding in graph.bindings:
        axes_of.setdefault(binding.layer, {})[binding.index] = dict(binding.axes)

    def clone_function(layer):
        config = layer.get_config()
        key = _WIDTH_KEYS.get(type(layer))
        out_gid = graph.layer_groups.get(layer.name, (None, None))[1]
        if key and out_gid in kept:
            config[key] = int(kept[out_gid].size)
        return layer.__class__.from_config(config)

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, ChannelGate):
            return args[0]
        return layer(*args, **kwargs)

    slim = keras.models.clone_model(model, clone_function=clone_function, call_function=call_function)
    for layer in slim.layers:
        if not layer.weights:
            continue
        weights = model.get_layer(layer.name).get_weights()
        for index, axes in axes_of.get(layer.name, {}).items():
            for axis, gid in axes.items():
                if gid in kept:
                    weights[index] = np.take(weights[index], kept[gid], axis=axis)
        layer.set_weights(weights)
    slim.name = f"{model.name}_stripped"
    return slim
