"""`ChannelGate`: a trainable 0/1 gate per channel with a straight-through gradient."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfrobustprune")
class ChannelGate(keras.layers.Layer):
    """Scales each channel by a trainable 0/1 gate (straight-through estimator).

    Each channel `c` has a logit `l_c`. The forward pass multiplies channel `c`
    by the hard mask `1[sigmoid(l_c) > threshold]`; the backward pass uses the
    gradient of `sigmoid(l_c)` (straight-through), so the task loss and the
    hardware loss both reach the logits. The `min_channels` channels with the
    largest logits are always open (the group's floor; of tied logits the
    lower index), so a group never empties. A frozen gate applies its hard mask with no gradient to the logits.

    One instance is shared by every place of a channel group (for example all
    branches of a residual stream), so coupled channels open and close together.

    Args:
        init_logit: Float, initial logit of every channel; `3.0` starts open
            (`sigmoid(3) = 0.95`).
        threshold: Float in (0, 1), the sigmoid value above which a channel is
            open.
        min_channels: Int >= 1, channels that stay open whatever their logits.
        frozen: Bool, when True the mask is constant (no gradient to logits).
        **kwargs: Base layer keyword arguments, such as `name`.

    Input shape:
        N-D tensor `(..., channels)`, channels last.

    Output shape:
        Same as the input.

    Example:

    >>> gate = ChannelGate(init_logit=-1.0, min_channels=2)
    >>> y = gate(keras.ops.ones((1, 4, 4, 8)))
    >>> int(keras.ops.sum(gate.hard_mask()))
    2
    """

    def __init__(self, init_logit=3.0, threshold=0.5, min_channels=1, frozen=False, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` must be in (0, 1). Received: threshold={threshold}")
        if int(min_channels) != min_channels or min_channels < 1:
            raise ValueError(f"`min_channels` must be an integer >= 1. Received: min_channels={min_channels}")
        self.init_logit = float(init_logit)
        self.threshold = float(threshold)
        self.min_channels = int(min_channels)
        self.frozen = bool(frozen)
        self.logits = None
        self.supports_masking = True

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"`ChannelGate` needs a known channel (last) dimension. Received: input_shape={input_shape}"
            )
        if self.min_channels > channels:
            raise ValueError(
                f"`min_channels` ({self.min_channels}) exceeds the {channels} channels "
                f"of the gated tensor. Received: min_channels={self.min_channels}"
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: channels})
        self.logits = self.add_weight(
            name="logits",
            shape=(channels,),
            initializer=keras.initializers.Constant(self.init_logit),
            trainable=True,
        )

    @property
    def channels(self):
        """Number of channels the gate covers (None before `build`)."""
        return None if self.logits is None else int(self.logits.shape[0])

    def _floor_mask(self, logits):
        # Exactly the `min_channels` largest logits stay open (ties: the lower index), so a group never empties
        # and the floor never opens more channels than it names, even when logits tie (as they do at init).
        top = ops.top_k(logits, self.min_channels, sorted=True)[1]
        return ops.sum(ops.one_hot(top, ops.shape(logits)[0], dtype=logits.dtype), axis=0)

    def hard_mask(self):
        """The 0/1 mask of the forward pass, floor included, without gradient."""
        logits = ops.convert_to_tensor(self.logits)
        soft = ops.sigmoid(logits)
        hard = ops.cast(soft > self.threshold, soft.dtype)
        return ops.stop_gradient(ops.maximum(hard, self._floor_mask(logits)))

    def mask(self):
        """The forward mask with the straight-through gradient of `sigmoid(logits)`."""
        hard = self.hard_mask()
        if self.frozen:
            return hard
        soft = ops.sigmoid(self.logits)
        return soft + ops.stop_gradient(hard - soft)

    def call(self, inputs):
        return inputs * ops.cast(self.mask(), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "init_logit": self.init_logit,
            "threshold": self.threshold,
            "min_channels": self.min_channels,
            "frozen": self.frozen,
        }
