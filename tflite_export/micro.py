"""Running an int8 `.tflite` file on the TFLite Micro interpreter (`tflite-micro`) and sizing its arena.

TFLite Micro plans every tensor into one preallocated buffer, the tensor arena;
its size is the RAM a microcontroller must set aside. `arena_size` finds the
smallest arena the model allocates and runs in (a bisection over the size); the
interpreter's own recording allocator gives the same figure up to alignment.
"""

import contextlib
import os
import re
import sys
import tempfile

import numpy as np
from tflite_micro import runtime as micro_runtime

from tflite_export.litert import LiteRTModel

_RECORDED_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


@contextlib.contextmanager
def captured_stderr():
    """Redirects the process's stderr (file descriptor 2) to a buffer, for C++ logs.

    Yields:
        A list that receives the captured text (one string) on exit.
    """
    captured = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def micro_interpreter(model_content, arena_size):
    """A TFLite Micro interpreter with an arena of `arena_size` bytes (C++ logs captured).

    Args:
        model_content: The `.tflite` file as bytes.
        arena_size: Int, tensor arena in bytes.

    Returns:
        A `tflite_micro.runtime.Interpreter`.

    Raises:
        RuntimeError: if the tensors do not fit in the arena (or an operator
            is missing from TFLite Micro); the message holds the interpreter log.
    """
    with captured_stderr() as log:
        try:
            return micro_runtime.Interpreter.from_bytes(bytes(model_content), arena_size=int(arena_size))
        except RuntimeError as error:
            failure = error
    raise RuntimeError(f"{failure}: {log[0].strip()}")


def run_micro(model_content, x_raw, arena_size=None):
    """Runs prepared int8 inputs through TFLite Micro, one image at a time.

    Args:
        model_content: The `.tflite` file as bytes.
        x_raw: Array `(n, h, w, c)` of the model's input dtype (quantised
            images, see `LiteRTModel.prepare`).
        arena_size: Int bytes, or None for `arena_size(model_content)`.

    Returns:
        Raw outputs `(n, ...)` of the model's output dtype.
    """
    x_raw = np.asarray(x_raw)
    arena = arena_size or find_arena_size(model_content, x_raw[:1])["arena_bytes"]
    interpreter = micro_interpreter(model_content, arena)
    expected = np.dtype(interpreter.get_input_details(0)["dtype"])
    if x_raw.dtype != expected:
        raise ValueError(f"`x_raw` must have the model's input dtype {expected}. Received: dtype {x_raw.dtype}")
    outputs = []
    for image in x_raw:
        interpreter.set_input(image[None], 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0))[0])
    return np.stack(outputs)


def _runs(model_content, arena, image):
    try:
        interpreter = micro_interpreter(model_content, arena)
        if image is not None:
            interpreter.set_input(image, 0)
            with captured_stderr():
                interpreter.invoke()
        return True
    except RuntimeError:
        return False


def recorded_arena_size(model_content, image):
    """Arena bytes reported by TFLite Micro's recording allocator after one inference.

    Args:
        model_content: The `.tflite` file as bytes.
        image: One prepared input `(1, h, w, c)`.

    Returns:
        Int bytes, or None if the log holds no total.
    """
    interpreter = micro_interpreter(model_content, max(len(model_content) * 10, 1 << 20))
    interpreter.set_input(np.asarray(image), 0)
    with captured_stderr() as log:
        interpreter.invoke()
        interpreter.print_allocations()
    match = _RECORDED_TOTAL.search(log[0])
    return int(match.group(1)) if match else None


def find_arena_size(model_content, image=None, granularity=16):
    """Smallest tensor arena (to `granularity` bytes) in which the model allocates and runs.

    Args:
        model_content: The `.tflite` file as bytes.
        image: Optional prepared input `(1, h, w, c)`; if given, each candidate
            arena must also complete an inference.
        granularity: Int >= 1, precision of the search in bytes.

    Returns:
        Dict with `arena_bytes` (smallest working size found) and
        `recorded_arena_bytes` (the recording allocator's total, or None).

    Raises:
        RuntimeError: if the model does not run on TFLite Micro at all.
    """
    if int(granularity) != granularity or granularity < 1:
        raise ValueError(f"`granularity` must be a positive integer. Received: granularity={granularity}")
    image = None if image is None else np.asarray(image)
    recorded = recorded_arena_size(model_content, image) if image is not None else None
    high = recorded + 1024 if recorded else max(len(model_content), 4096)
    while not _runs(model_content, high, image):
        if high > (1 << 30):
            micro_interpreter(model_content, high)  # raises with the interpreter's log
            raise RuntimeError("The model does not run on TFLite Micro with a 1 GiB arena.")
        high *= 2
    low = 0  # invariant: `low` fails (or is 0), `high` works
    while high - low > granularity:
        middle = (low + high) // 2
        if _runs(model_content, middle, image):
            high = middle
        else:
            low = middle
    return {"arena_bytes": int(high), "recorded_arena_bytes": recorded}


def _agreement(outputs, reference, dequantize):
    diff = np.abs(outputs - reference)
    return {
        "argmax_agreement": float(np.mean(outputs.argmax(-1) == reference.argmax(-1))),
        "exact_match_fraction": float(np.mean(np.all(diff == 0, axis=-1))),
        "max_abs_diff_steps": int(diff.max()),
        "max_abs_logit_diff": float(np.abs(dequantize(outputs) - dequantize(reference)).max()),
    }


def verify_micro(model_content, images, litert_model=None, tolerance=1):
    """Runs the int8 model on TFLite Micro and compares its outputs with LiteRT's.

    TFLite Micro runs reference kernels; LiteRT with `op_resolver="reference"`
    runs its own, which compute the same integers except where a
    requantisation rounds a tie differently (seen: the final FULLY_CONNECTED,
    one quantisation step on about one image in 30). Default LiteRT (XNNPACK)
    rounds every requantisation its own way, so against it the outputs differ
    by a few steps; that comparison is reported beside.

    Args:
        model_content: The int8 `.tflite` file as bytes.
        images: Real images `(n, h, w, c)`, uint8 or float in [0, 1].
        litert_model: Optional `LiteRTModel` of the same file on default
            LiteRT (built if None).
        tolerance: Int, most quantisation steps by which an output may differ
            from LiteRT's reference kernels and still match.

    Returns:
        Dict with `images`, `arena_bytes`, `recorded_arena_bytes`,
        `outputs_match` (every output within `tolerance` steps of LiteRT's
        reference kernels), `tolerance_steps`, and `vs_litert_reference`,
        `vs_litert` (default LiteRT), each with `argmax_agreement`,
        `exact_match_fraction`, `max_abs_diff_steps` and `max_abs_logit_diff`.
    """
    if int(tolerance) != tolerance or tolerance < 0:
        raise ValueError(f"`tolerance` must be a non-negative integer. Received: tolerance={tolerance}")
    litert_model = litert_model or LiteRTModel(model_content)
    reference_model = LiteRTModel(model_content, op_resolver="reference")
    x_raw = litert_model.prepare(images)
    arena = find_arena_size(model_content, x_raw[:1])
    micro = run_micro(model_content, x_raw, arena["arena_bytes"]).astype(np.int64)
    vs_reference = _agreement(micro, reference_model.invoke_raw(x_raw).astype(np.int64), litert_model.to_float)
    return {
        "images": int(len(x_raw)),
        **arena,
        "outputs_match": vs_reference["max_abs_diff_steps"] <= tolerance,
        "tolerance_steps": int(tolerance),
        "vs_litert_reference": vs_reference,
        "vs_litert": _agreement(micro, litert_model.invoke_raw(x_raw).astype(np.int64), litert_model.to_float),
    }
