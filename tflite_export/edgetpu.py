"""Edge TPU readiness by the documented rules, since the Edge TPU compiler cannot be installed here.

The rules and the operator table are those of "TensorFlow models on the Edge
TPU" (https://coral.ai/docs/edgetpu/models-intro/#supported-operations):

* tensor parameters are quantised to 8 bits (int8 or uint8); int32 appears only
  as bias or as small index parameters (axes, shapes, paddings);
* tensor sizes are constant at compile time (no dynamic shapes);
* model parameters (weights, biases) are constant at compile time;
* tensors are 1-, 2- or 3-dimensional; a tensor with more dimensions may have
  a size above 1 only in its 3 innermost dimensions;
* the model uses only the supported operations below, within their limits
  (the compiler stops mapping at the first unsupported operator: it and every
  operator after it run on the CPU).

A pass here means the compiler should map the whole graph; only the real
compiler can confirm it.
"""

import numpy as np

from tflite_export import tflite_graph

REFERENCE = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"

# TFLite builtin operator -> documented limitation ("" if none).
SUPPORTED_OPS = {
    "ADD": "",
    "AVERAGE_POOL_2D": "No fused activation function.",
    "CONCATENATION": "No fused activation function. A constant input must be all zeros (zero padding), with 2 inputs.",
    "CONV_2D": "Must use the same dilation in x and y dimensions.",
    "DEPTHWISE_CONV_2D": "Must use the same dilation in x and y dimensions.",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "Only the default format for weights. Output tensor is one-dimensional.",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "Unidirectional LSTM only.",
    "MAXIMUM": "",
    "MAX_POOL_2D": "No fused activation function.",
    "MEAN": "No reduction in batch dimension; reduction along x and/or y only.",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "No packing in batch dimension.",
    "PAD": "No padding in batch dimension.",
    "PRELU": "Alpha must be 1-dimensional (only the innermost dimension above 1).",
    "QUANTIZE": "",
    "REDUCE_MAX": "Cannot operate on the batch dimension.",
    "REDUCE_MIN": "Cannot operate on the batch dimension.",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "Certain reshapes might not be mapped for large tensor sizes.",
    "RESIZE_BILINEAR": "Input/output is a 3-dimensional tensor; may stay on the CPU to avoid loss of precision.",
    "RESIZE_NEAREST_NEIGHBOR": "Input/output is a 3-dimensional tensor; may stay on the CPU to avoid loss of precision.",
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "Supports only 1-D input tensor with a max of 16,000 elements.",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "No splitting in batch dimension.",
    "SQUARED_DIFFERENCE": "",
    "SQUEEZE": "",
    "STRIDED_SLICE": "All strides must be 1.",
    "SUB": "",
    "SUM": "Cannot operate on the batch dimension.",
    "TANH": "",
    "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
}

_EIGHT_BIT = ("INT8", "UINT8")
# Operator -> index of its int32 bias input.
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}
_NO_FUSED_ACTIVATION = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION")
_NO_BATCH_REDUCTION = ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN")


def _short(name, limit=48):
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _tensor_reasons(graph):
    parameters = set()
    for op in graph.operators:
        bias = _BIAS_INPUT.get(op.name)
        for position, tensor in enumerate(op.inputs):
            # int32 bias, or unquantised int32 index data (axes, shapes, paddings, permutations).
            if tensor.constant and tensor.dtype == "INT32" and (position == bias or not tensor.scales):
                parameters.add(tensor.index)
    problems = {}  # problem -> tensor names; one reason per problem keeps float models readable
    for tensor in graph.tensors:
        if tensor.index in parameters:
            continue
        kind = "constants" if tensor.constant else "tensors"
        if tensor.dtype not in _EIGHT_BIT:
            problems.setdefault(f"{kind} of type {tensor.dtype}, not 8-bit quantised", []).append(tensor.name)
        elif not tensor.scales:
            problems.setdefault(f"{kind} of type {tensor.dtype} without quantisation parameters", []).append(
                tensor.name
            )
        if tensor.constant:
            continue
        if any(d < 0 for d in tensor.shape_signature):
            problems.setdefault("tensors with a dynamic shape (-1 in the shape signature)", []).append(tensor.name)
        if len(tensor.shape) > 3 and any(d > 1 for d in tensor.shape[:-3]):
            problems.setdefault("tensors above 1 outside their 3 innermost dimensions", []).append(tensor.name)
    reasons = []
    for problem, names in problems.items():
        example = ", ".join(repr(_short(n)) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        reasons.append(f"{len(names)} {problem} (e.g. {example})")
    return reasons


def _axes(op):
    axis = op.inputs[1].value if len(op.inputs) > 1 else None
    if axis is None:
        return None
    rank = len(op.inputs[0].shape)
    return sorted({int(a) % rank for a in np.ravel(axis)}) if rank else []


def _op_reasons(i, op):
    where = f"operator {i} {op.name}"
    if op.name not in SUPPORTED_OPS:
        return [f"{where} is not supported by the Edge TPU"]
    reasons = []
    if op.name in _NO_FUSED_ACTIVATION and op.fused_activation not in (None, "NONE"):
        reasons.append(f"{where} has a fused {op.fused_activation} activation ({SUPPORTED_OPS[op.name]})")
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        h, w = getattr(op.options, "dilationHFactor", 1), getattr(op.options, "dilationWFactor", 1)
        if h != w:
            reasons.append(f"{where} has dilation {h}x{w} ({SUPPORTED_OPS[op.name]})")
    if op.name in _NO_BATCH_REDUCTION:
        axes = _axes(op)
        if axes is None:
            reasons.append(f"{where} has non-constant axes")
        elif 0 in axes or (op.name == "MEAN" and len(op.inputs[0].shape) == 4 and not set(axes) <= {1, 2}):
            reasons.append(f"{where} reduces axes {axes} ({SUPPORTED_OPS[op.name]})")
    if op.name == "PAD" and len(op.inputs) > 1 and op.inputs[1].value is not None:
        if np.any(np.asarray(op.inputs[1].value)[0] != 0):
            reasons.append(f"{where} pads the batch dimension ({SUPPORTED_OPS[op.name]})")
    if op.name == "SOFTMAX":
        shape = op.inputs[0].shape
        if any(d > 1 for d in shape[:-1]) or (shape and shape[-1] > 16000):
            reasons.append(f"{where} has input shape {shape} ({SUPPORTED_OPS[op.name]})")
    if op.name == "STRIDED_SLICE" and len(op.inputs) > 3 and op.inputs[3].value is not None:
        if np.any(np.asarray(op.inputs[3].value) != 1):
            reasons.append(f"{where} has strides {np.asarray(op.inputs[3].value).tolist()} ({SUPPORTED_OPS[op.name]})")
    if op.name == "FULLY_CONNECTED" and op.outputs and any(d > 1 for d in op.outputs[0].shape[:-1]):
        reasons.append(f"{where} has output shape {op.outputs[0].shape} ({SUPPORTED_OPS[op.name]})")
    return reasons


def check_edgetpu(model_content):
    """Checks a `.tflite` file against the Edge TPU compiler's documented requirements.

    Args:
        model_content: The `.tflite` file as bytes.

    Returns:
        Dict with `passed` (bool), `reasons` (list of str, empty on a pass),
        `ops` (operator name -> count), `unsupported_ops` (names),
        `first_unsupported_op` (index of the operator where the compiler would
        stop mapping, or None) and `reference` (the documentation URL).

    Example:

    >>> check_edgetpu(files["int8"])["passed"]
    True
    >>> check_edgetpu(files["float32"])["reasons"][0]
    "35 tensors of type FLOAT32, not 8-bit quantised (e.g. 'serving_default_images:0', ...)"
    """
    graph = tflite_graph.read_graph(model_content)
    reasons = []
    if graph.num_subgraphs != 1:
        reasons.append(f"the model has {graph.num_subgraphs} subgraphs; only one is supported")
    reasons += _tensor_reasons(graph)
    first_unsupported = None
    for i, op in enumerate(graph.operators):
        op_reasons = _op_reasons(i, op)
        if op_reasons and first_unsupported is None:
            first_unsupported = i
        reasons += op_reasons
    return {
        "passed": not reasons,
        "reasons": reasons,
        "ops": graph.op_counts(),
        "unsupported_ops": sorted({op.name for op in graph.operators if op.name not in SUPPORTED_OPS}),
        "first_unsupported_op": first_unsupported,
        "reference": REFERENCE,
    }
