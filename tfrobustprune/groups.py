"""Channel-dependency analysis of a Keras functional model (analysis only, no surgery).

Channels that must be kept or removed together form a `ChannelGroup`: the
output channels of a convolution, every channel-wise layer after it (batch
norm, activation, pooling, depthwise convolution) and, through a residual
`Add`, every other branch of the same stream. The analysis walks the functional
graph once and returns frozen, printable groups plus, for each weight of each
layer, which of its axes belong to which group. `tfrobustprune.cost` counts
parameters and MACs from that table and `tfrobustprune.strip` slices weights
with it, so the two cannot disagree.
"""

import dataclasses
import math

import keras

from tfrobustprune.gates import ChannelGate

# Activations f with f(0) == 0: a closed (zero) channel stays exactly zero.
ZERO_PRESERVING_ACTIVATIONS = frozenset(
    {
        "relu",
        "relu6",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "silu",
        "swish",
        "tanh",
        "linear",
        "hard_silu",
        "hard_swish",
        "mish",
        "softsign",
    }
)
_MERGE_LAYERS = (
    keras.layers.Add,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Average,
    keras.layers.Multiply,
)
_ZERO_PRESERVING_LAYERS = (
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.ZeroPadding2D,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.Identity,
)


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels that are kept or removed together; layer names only, never weights.

    Attributes:
        gid: Int, index of the group in `ChannelGraph.groups`.
        name: Str, readable name: the first layer producing the channels, with
            `stream:` in front when a residual merge couples several producers.
        width: Int, number of channels.
        members: Tuple of `(layer name, role)`, producers first; role is "out"
            (the layer makes these channels), "in" (it consumes them) or
            "channel" (it maps channel c to channel c).
        prunable: Bool, False when some member cannot be sliced exactly.
        reason: Str, why the group is not prunable ("" when it is).
        gate_after: Tuple of layer names whose outputs get this group's gate.
        gate: Str or None, name of the `ChannelGate` already on this group.
    """

    gid: int
    name: str
    width: int
    members: tuple
    prunable: bool
    reason: str
    gate_after: tuple
    gate: str | None

    def __str__(self):
        state = "prunable" if self.prunable else f"fixed ({self.reason})"
        members = ", ".join(f"{layer}:{role}" for layer, role in self.members)
        return f"ChannelGroup({self.name}, width={self.width}, {state}, gate={self.gate}: {members})"


@dataclasses.dataclass(frozen=True)
class WeightBinding:
    """Which axes of one weight of a layer follow which channel group.

    Attributes:
        layer: Str, layer name.
        index: Int, position of the weight in `layer.weights`.
        shape: Tuple of ints, the weight's full shape.
        axes: Tuple of `(axis, gid)` pairs; other axes keep their size.
    """

    layer: str
    index: int
    shape: tuple
    axes: tuple


@dataclasses.dataclass(frozen=True)
class ChannelGraph:
    """Result of `analyze`: groups, weight bindings and MAC positions.

    Attributes:
        groups: Tuple of `ChannelGroup`, indexed by `gid`.
        bindings: Tuple of `WeightBinding`, one per weight of every sliceable layer.
        fixed_params: Int, parameters of layers whose weights follow no group
            (gates excluded: stripping removes them).
        mac_layers: Tuple of `(layer name, kernel weight index, positions)`: the
            MACs of such a layer are `positions` times the kernel size.
        layer_groups: Dict layer name -> `(input gid, output gid)`.
    """

    groups: tuple
    bindings: tuple
    fixed_params: int
    mac_layers: tuple
    layer_groups: dict

    @property
    def prunable_groups(self):
        """The groups that can be gated and sliced."""
        return tuple(g for g in self.groups if g.prunable)

    def group_by_gate(self):
        """Dict gate layer name -> `ChannelGroup` for gated groups."""
        return {g.gate: g for g in self.groups if g.gate is not None}

    def __str__(self):
        return "\n".join(str(g) for g in self.groups)


class _UnionFind:
    def __init__(self):
        self.parent = []

    def add(self):
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i):
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i, j):
        i, j = self.find(i), self.find(j)
        if i != j:
            self.parent[max(i, j)] = min(i, j)
        return min(i, j)


def _is_zero_preserving(layer):
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.threshold) == 0.0 or float(layer.negative_slope) == 0.0
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") in ZERO_PRESERVING_ACTIVATIONS
    return isinstance(layer, _ZERO_PRESERVING_LAYERS)


def _is_channels_last_bn(layer, ndim=None):
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    return layer.axis == -1 or (ndim is not None and layer.axis == ndim - 1)


def _weight_axes(layer, in_gid, out_gid, ndim=None):
    """Axis -> group binding of each weight of a sliceable layer, or None if not sliceable."""
    if type(layer) is keras.layers.Conv2D and layer.groups == 1:
        return [{2: in_gid, 3: out_gid}, {0: out_gid}][: len(layer.weights)]
    if type(layer) is keras.layers.Dense:
        return [{0: in_gid, 1: out_gid}, {0: out_gid}][: len(layer.weights)]
    if type(layer) is keras.layers.DepthwiseConv2D and layer.depth_multiplier == 1:
        return [{2: in_gid}, {0: in_gid}][: len(layer.weights)]
    if _is_channels_last_bn(layer, ndim):
        return [{0: in_gid} for _ in layer.weights]
    if isinstance(layer, ChannelGate):
        return [{0: in_gid}]
    return None


def _positions(tensor):
    return math.prod(int(d) for d in tensor.shape[1:-1])


def analyze(model):
    """Analyses a functional model into channel groups.

    Args:
        model: A built functional `keras.Model` (channels-last tensors).

    Returns:
        A `ChannelGraph`.

    Raises:
        TypeError: if `model` is not a functional model.
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise TypeError(
            "`model` must be a functional keras.Model (keras.Model(inputs, outputs)); subclassed "
            f"and Sequential models have no graph to analyse. Received: model={type(model).__name__}"
        )
    uf = _UnionFind()
    width, fixed_reason, gid_of_tensor = {}, {}, {}
    members, layer_groups, consumers = [], {}, {}
    mac_layers, raw_bindings, fixed_params = [], [], 0

    def new_group(channels, reason=""):
        gid = uf.add()
        width[gid] = channels
        if reason:
            fixed_reason[gid] = reason
        return gid

    def fix(gid, reason):
        fixed_reason.setdefault(gid, reason)

    for tensor in model.inputs:
        gid_of_tensor[id(tensor)] = new_group(tensor.shape[-1], "model input")

    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if node.is_input or layer is None:
                continue
            inputs = node.input_tensors
            for t in inputs:
                consumers.setdefault(id(t), []).append(layer)
            in_gids = [gid_of_tensor[id(t)] for t in inputs]
            outputs = node.outputs
            in_gid = in_gids[0] if len(in_gids) == 1 else None

            if isinstance(layer, _MERGE_LAYERS):
                out_gid = in_gids[0]
                for g in in_gids[1:]:
                    if width[uf.find(g)] != width[uf.find(out_gid)]:
                        fix(g, f"merged with another width at {layer.name}")
                    out_gid = uf.union(out_gid, g)
                members.append((out_gid, layer.name, "channel", layer, id(outputs[0])))
                gid_of_tensor[id(outputs[0])] = out_gid
                continue

            axes = (
                _weight_axes(layer, in_gid, None, len(inputs[0].shape))
                if in_gid is not None and len(outputs) == 1
                else None
            )
            produces = type(layer) in (keras.layers.Conv2D, keras.layers.Dense) and axes is not None
            channelwise = (axes is not None and not produces) or (
                in_gid is not None and len(outputs) == 1 and _is_zero_preserving(layer)
            )
            if produces:
                out_gid = new_group(outputs[0].shape[-1])
                axes = _weight_axes(layer, in_gid, out_gid)
                members.append((in_gid, layer.name, "in", layer, None))
                members.append((out_gid, layer.name, "out", layer, id(outputs[0])))
                mac_layers.append((layer.name, 0, _positions(outputs[0])))
            elif channelwise:
                out_gid = in_gid
                members.append((in_gid, layer.name, "channel", layer, id(outputs[0])))
                if isinstance(layer, keras.layers.DepthwiseConv2D):
                    mac_layers.append((layer.name, 0, _positions(outputs[0])))
            else:
                # Unknown to the slicers: its channels can't be removed exactly.
                for g in in_gids:
                    fix(g, f"consumed by {type(layer).__name__} layer {layer.name}")
                    members.append((g, layer.name, "in", layer, None))
                out_gids = [
                    new_group(t.shape[-1], f"made by {type(layer).__name__} layer {layer.name}") for t in outputs
                ]
                for t, g in zip(outputs, out_gids):
                    gid_of_tensor[id(t)] = g
                    members.append((g, layer.name, "out", layer, id(t)))
                fixed_params += int(layer.count_params()) if layer.built else 0
                layer_groups[layer.name] = (in_gid, out_gids[0] if len(out_gids) == 1 else None)
                continue
            gid_of_tensor[id(outputs[0])] = out_gid
            layer_groups[layer.name] = (in_gid, out_gid)
            if axes and not isinstance(layer, ChannelGate):
                for index, (weight, weight_axes) in enumerate(zip(layer.weights, axes)):
                    raw_bindings.append((layer.name, index, tuple(weight.shape), weight_axes))

    for tensor in model.outputs:
        fix(gid_of_tensor[id(tensor)], "model output")

    return _finish(
        model,
        uf,
        width,
        fixed_reason,
        members,
        layer_groups,
        consumers,
        mac_layers,
        raw_bindings,
        fixed_params,
        gid_of_tensor,
    )


def _finish(
    model,
    uf,
    width,
    fixed_reason,
    members,
    layer_groups,
    consumers,
    mac_layers,
    raw_bindings,
    fixed_params,
    gid_of_tensor,
):
    roots = sorted({uf.find(g) for g in width})
    index_of_root = {root: i for i, root in enumerate(roots)}
    reasons, group_members, gates = {}, {root: [] for root in roots}, {root: [] for root in roots}
    for gid, reason in fixed_reason.items():
        reasons.setdefault(uf.find(gid), reason)
    for gid, name, role, layer, out_id in members:
        group_members[uf.find(gid)].append((name, role, layer, out_id))
        if isinstance(layer, ChannelGate):
            gates[uf.find(gid)].append(name)

    groups = []
    for root in roots:
        entries = group_members[root]
        entries.sort(key=lambda e: {"out": 0, "channel": 1, "in": 2}[e[1]])
        producers = [name for name, role, _, _ in entries if role == "out"]
        merged = any(isinstance(layer, _MERGE_LAYERS) for _, _, layer, _ in entries)
        reason = reasons.get(root, "")
        if not reason and not producers:
            reason = "no layer produces these channels"
        if len(set(gates[root])) > 1:
            raise ValueError(f"Channel group of {producers[:1]} has several gates: {sorted(set(gates[root]))}")
        gate_after = []
        if not reason:
            for name, role, layer, out_id in entries:
                if role == "in" or _is_zero_preserving(layer) or isinstance(layer, (ChannelGate, *_MERGE_LAYERS)):
                    continue
                # A convolution feeding only its batch norm is gated after the norm.
                users = consumers.get(out_id, [])
                if len(users) == 1 and isinstance(users[0], keras.layers.BatchNormalization):
                    continue
                if any(isinstance(u, ChannelGate) for u in users):
                    continue
                gate_after.append(name)
        name = producers[0] if producers else ("input" if reason == "model input" else f"group{root}")
        groups.append(
            ChannelGroup(
                gid=index_of_root[root],
                name=("stream:" if merged else "") + name,
                width=int(width[root]),
                members=tuple((n, r) for n, r, _, _ in entries),
                prunable=not reason,
                reason=reason,
                gate_after=tuple(gate_after),
                gate=gates[root][0] if gates[root] else None,
            )
        )

    def gid(g):
        return None if g is None else index_of_root[uf.find(g)]

    bindings = tuple(
        WeightBinding(layer, index, shape, tuple((axis, gid(g)) for axis, g in axes.items()))
        for layer, index, shape, axes in raw_bindings
    )
    return ChannelGraph(
        groups=tuple(groups),
        bindings=bindings,
        fixed_params=fixed_params,
        mac_layers=tuple(mac_layers),
        layer_groups={name: (gid(i), gid(o)) for name, (i, o) in layer_groups.items()},
    )
