"""Function-preserving graph rewrites that make a Keras model quantise better.

`fold_normalization` replaces each channel-wise `keras.layers.Normalization` by
the equivalent 1x1 `DepthwiseConv2D` (weight `1 / std`, bias `-mean / std`).
TFLite lowers a `Normalization` layer to SUB and MUL by constants, and in a
full-integer file those constants are quantised on the activation grid: the
mean moves by up to half an input step and `1 / std` by up to half a step of
its own 8-bit scale, a per-channel bias that every image carries. A depthwise
convolution quantises its weights per channel (each `1 / std` exactly
representable) and its bias in int32, leaving one rounding of the output.
Measured on a trained stripped ResNet20: mean absolute int8 logit error 0.16
-> 0.10, argmax agreement with Keras 97.5 % -> 98.3 %.
"""

import keras
import numpy as np


def _foldable(layer):
    if not isinstance(layer, keras.layers.Normalization) or layer.invert:
        return False
    shape = tuple(layer.input.shape)
    axis = tuple(a % len(shape) for a in layer.axis)
    return len(shape) == 4 and axis == (3,) and shape[3] is not None


def _affine(layer):
    channels = int(layer.input.shape[-1])
    mean = np.broadcast_to(np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float64).reshape(-1), (channels,))
    variance = np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float64).reshape(-1)
    std = np.maximum(np.sqrt(np.broadcast_to(variance, (channels,))), keras.config.epsilon())
    return (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)


def fold_normalization(model):
    """Returns a copy of `model` with channel-wise `Normalization` layers as 1x1 depthwise convolutions.

    Only `Normalization` layers over the last axis of a 4-D input (images) are
    replaced; the copy computes the same function up to float rounding
    (about 1e-5 on logits) and keeps the layer names. A model without such a
    layer is returned unchanged (the same object).

    Args:
        model: A functional or sequential `keras.Model`.

    Returns:
        A `keras.Model`.

    Example:

    >>> folded = fold_normalization(tfrobustprune.models.resnet20())
    >>> type(folded.get_layer("normalize")).__name__
    'DepthwiseConv2D'
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={type(model).__name__}")
    folded = {layer.name: _affine(layer) for layer in model.layers if _foldable(layer)}
    if not folded:
        return model

    def clone_function(layer):
        if layer.name in folded:
            return keras.layers.DepthwiseConv2D(1, name=layer.name, dtype=layer.dtype_policy)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_function)
    for layer in clone.layers:
        if layer.name in folded:
            scale, bias = folded[layer.name]
            layer.set_weights([scale.reshape(1, 1, -1, 1), bias])
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return clone
