"""Reading a `.tflite` flatbuffer: operators, tensors, types, shapes and constants.

Analysis only: nothing is run. The Edge TPU readiness check and the reports use
it to list what a converted file really contains.
"""

import collections
import dataclasses

import numpy as np
from ai_edge_litert import schema_py_generated as schema

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_NUMPY_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "INT32": np.int32,
    "INT64": np.int64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "BOOL": np.bool_,
}
ACTIVATIONS = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor of a `.tflite` subgraph.

    Attributes:
        index: Int, tensor index in its subgraph.
        name: Str.
        dtype: Str, the TFLite type name ("INT8", "FLOAT32", ...).
        shape: Tuple of ints (batch included).
        shape_signature: Tuple of ints, -1 for a dynamic dimension.
        constant: Bool, True for weights and other compile-time data.
        scales: Tuple of floats, quantisation scales (empty if none).
        value: numpy array for small constants (<= 64 elements), else None.
    """

    index: int
    name: str
    dtype: str
    shape: tuple
    shape_signature: tuple
    constant: bool
    scales: tuple
    value: object = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class Operator:
    """One operator: its builtin name, tensors and options.

    Attributes:
        name: Str, e.g. "CONV_2D" (custom ops: "CUSTOM:<code>").
        inputs: Tuple of `Tensor` (optional inputs left out).
        outputs: Tuple of `Tensor`.
        options: The flatbuffer options object (e.g. `Conv2DOptionsT`) or None.
    """

    name: str
    inputs: tuple
    outputs: tuple
    options: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def fused_activation(self):
        """Name of the fused activation ("NONE", "RELU", ...), or None if the op has none."""
        code = getattr(self.options, "fusedActivationFunction", None)
        return None if code is None else ACTIVATIONS.get(code, str(code))


@dataclasses.dataclass(frozen=True)
class Graph:
    """A `.tflite` file as data.

    Attributes:
        num_subgraphs: Int.
        operators: Tuple of `Operator` of the main subgraph, in execution order.
        tensors: Tuple of `Tensor` of the main subgraph.
        inputs: Tuple of `Tensor`, the model inputs.
        outputs: Tuple of `Tensor`, the model outputs.
    """

    num_subgraphs: int
    operators: tuple
    tensors: tuple
    inputs: tuple
    outputs: tuple

    def op_counts(self):
        """Dict operator name -> count, in first-use order."""
        return dict(collections.Counter(op.name for op in self.operators))


def _op_name(code):
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    name = _OP_NAMES.get(builtin, str(builtin))
    if name == "CUSTOM":
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        return f"CUSTOM:{custom}"
    return name


def _buffer_bytes(model, buf, tensor):
    buffer = model.buffers[tensor.buffer] if 0 <= tensor.buffer < len(model.buffers) else None
    if buffer is None:
        return None
    if buffer.data is not None and len(buffer.data):
        return np.asarray(buffer.data, np.uint8).tobytes()
    if buffer.offset and buffer.size:
        return bytes(buf[buffer.offset : buffer.offset + buffer.size])
    return None


def _tensor(model, buf, index, tensor):
    data = _buffer_bytes(model, buf, tensor)
    dtype = _TYPE_NAMES.get(tensor.type, str(tensor.type))
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
    signature = tuple(int(d) for d in tensor.shapeSignature) if tensor.shapeSignature is not None else shape
    value = None
    if data is not None and dtype in _NUMPY_TYPES and int(np.prod(shape, dtype=np.int64)) <= 64:
        value = np.frombuffer(data, _NUMPY_TYPES[dtype]).reshape(shape)
    quantization = tensor.quantization
    scales = (
        tuple(float(s) for s in quantization.scale)
        if quantization is not None and quantization.scale is not None
        else ()
    )
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
    return Tensor(index, name, dtype, shape, signature, data is not None, scales, value)


def read_graph(model_content):
    """Parses a `.tflite` flatbuffer into a `Graph` of its main subgraph.

    Args:
        model_content: The `.tflite` file as bytes.

    Returns:
        A `Graph`.

    Example:

    >>> graph = read_graph(open("model_int8.tflite", "rb").read())  # a ResNet20 from `conversion.convert`
    >>> graph.op_counts()
    {'DEPTHWISE_CONV_2D': 1, 'CONV_2D': 21, 'ADD': 9, 'MEAN': 1, 'FULLY_CONNECTED': 1}
    """
    buf = bytearray(model_content)
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(buf, 0))
    except Exception as error:  # flatbuffers raises assorted errors on garbage
        raise ValueError(
            f"`model_content` is not a .tflite flatbuffer ({error}). Received: {len(buf)} bytes"
        ) from error
    if not model.subgraphs:
        raise ValueError("`model_content` has no subgraph. Received: an empty model")
    subgraph = model.subgraphs[0]
    tensors = tuple(_tensor(model, buf, i, t) for i, t in enumerate(subgraph.tensors or ()))
    operators = []
    for op in subgraph.operators or ():
        inputs = tuple(tensors[i] for i in (op.inputs if op.inputs is not None else ()) if i >= 0)
        outputs = tuple(tensors[i] for i in (op.outputs if op.outputs is not None else ()) if i >= 0)
        operators.append(Operator(_op_name(model.operatorCodes[op.opcodeIndex]), inputs, outputs, op.builtinOptions))
    return Graph(
        num_subgraphs=len(model.subgraphs),
        operators=tuple(operators),
        tensors=tensors,
        inputs=tuple(tensors[i] for i in subgraph.inputs),
        outputs=tuple(tensors[i] for i in subgraph.outputs),
    )
