"""CIFAR ResNets (He et al., 2016) as plain Keras functional models, inputs in [0, 1]."""

import keras

# Per-channel statistics of the CIFAR-10 training set (pixels in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _conv_bn(x, filters, kernel_size, strides, name):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)


def cifar_resnet(depth=20, width=16, num_classes=10, input_shape=(32, 32, 3), mean=None, std=None):
    """Builds a CIFAR ResNet of depth `6n + 2` (ResNet20/32/56/110).

    Three stages of `n` basic blocks with `width`, `2 * width` and `4 * width`
    channels; a stage that changes resolution or width uses a 1x1 projection
    shortcut (option B). Inputs are images in [0, 1]; the per-channel
    normalisation is the model's first layer, so attack budgets are in pixels.

    Args:
        depth: Int, `6n + 2` with `n >= 1`: 20, 32, 44, 56, 110.
        width: Int, channels of the first stage.
        num_classes: Int, number of logits.
        input_shape: Tuple `(height, width, channels)`.
        mean: Per-channel mean used for normalisation; CIFAR-10's by default.
        std: Per-channel standard deviation; CIFAR-10's by default.

    Returns:
        A `keras.Model` mapping images in [0, 1] to logits.

    Example:

    >>> model = cifar_resnet(depth=20)
    >>> model.count_params() > 250_000
    True
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"`depth` must be 6n + 2 with n >= 1 (20, 32, 56, ...). Received: depth={depth}")
    if width < 1:
        raise ValueError(f"`width` must be a positive integer. Received: width={width}")
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2. Received: num_classes={num_classes}")
    blocks_per_stage = (depth - 2) // 6
    mean = CIFAR10_MEAN if mean is None else tuple(mean)
    std = CIFAR10_STD if std is None else tuple(std)

    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalize")(inputs)
    x = _conv_bn(x, width, 3, 1, "stem")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage in range(3):
        filters = width * 2**stage
        for block in range(blocks_per_stage):
            name = f"stage{stage + 1}_block{block + 1}"
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = _conv_bn(x, filters, 3, strides, f"{name}_1")
            y = keras.layers.ReLU(name=f"{name}_relu1")(y)
            y = _conv_bn(y, filters, 3, 1, f"{name}_2")
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = _conv_bn(shortcut, filters, 1, strides, f"{name}_proj")
            x = keras.layers.Add(name=f"{name}_add")([y, shortcut])
            x = keras.layers.ReLU(name=f"{name}_relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def resnet20(**kwargs):
    """ResNet20 (`cifar_resnet(depth=20)`); see `cifar_resnet` for the arguments."""
    return cifar_resnet(depth=20, **kwargs)


def resnet32(**kwargs):
    """ResNet32 (`cifar_resnet(depth=32)`); see `cifar_resnet` for the arguments."""
    return cifar_resnet(depth=32, **kwargs)


def resnet56(**kwargs):
    """ResNet56 (`cifar_resnet(depth=56)`); see `cifar_resnet` for the arguments."""
    return cifar_resnet(depth=56, **kwargs)


MODELS = {"resnet20": resnet20, "resnet32": resnet32, "resnet56": resnet56, "cifar_resnet": cifar_resnet}


def get_model(name, **kwargs):
    """Builds a registered model by name.

    Args:
        name: One of `MODELS`: "resnet20", "resnet32", "resnet56", "cifar_resnet".
        **kwargs: Passed to the model builder.

    Returns:
        A `keras.Model`.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown `model_name`; expected one of {sorted(MODELS)}. Received: model_name={name!r}")
    return MODELS[name](**kwargs)
