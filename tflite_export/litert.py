"""Running a `.tflite` file on the LiteRT interpreter (`ai-edge-litert`) with float images in, float logits out.

`tf.lite.Interpreter` is deprecated; this is the supported runtime. Quantised
files take and return int8: images are quantised with the input tensor's scale
and zero point, logits dequantised with the output tensor's.
"""

import time

import numpy as np
from ai_edge_litert import interpreter as litert_interpreter

OP_RESOLVERS = {
    "auto": litert_interpreter.OpResolverType.AUTO,  # optimised kernels + XNNPACK delegate (the default)
    "builtin": litert_interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,  # optimised kernels only
    "reference": litert_interpreter.OpResolverType.BUILTIN_REF,  # reference kernels
}


def quantize(x, scale, zero_point, dtype):
    """Float values -> integers `round(x / scale) + zero_point`, clipped to `dtype`.

    Args:
        x: Float array.
        scale: Float quantisation scale.
        zero_point: Int zero point.
        dtype: numpy integer dtype (np.int8, np.uint8, ...).

    Returns:
        Array of `dtype`.
    """
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(x, np.float64) / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    """Integers -> float32 `(q - zero_point) * scale`.

    Args:
        q: Integer array.
        scale: Float quantisation scale.
        zero_point: Int zero point.

    Returns:
        float32 array.
    """
    return ((np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class LiteRTModel:
    """A `.tflite` image classifier on the LiteRT interpreter, batch 1.

    Args:
        model_content: The `.tflite` flatbuffer (bytes).
        num_threads: Int >= 1, interpreter threads (1 for latency figures).
        op_resolver: One of `OP_RESOLVERS`: "auto" (default LiteRT: XNNPACK),
            "builtin" (no default delegate) or "reference".

    Example:

    >>> runner = LiteRTModel(files["int8"])
    >>> runner.predict(x_val[:8]).shape
    (8, 10)
    """

    def __init__(self, model_content, num_threads=1, op_resolver="auto"):
        if op_resolver not in OP_RESOLVERS:
            raise ValueError(
                f"`op_resolver` must be one of {sorted(OP_RESOLVERS)}. Received: op_resolver={op_resolver!r}"
            )
        if int(num_threads) != num_threads or num_threads < 1:
            raise ValueError(f"`num_threads` must be a positive integer. Received: num_threads={num_threads}")
        self.model_content = bytes(model_content)
        self.interpreter = litert_interpreter.Interpreter(
            model_content=self.model_content,
            num_threads=int(num_threads),
            experimental_op_resolver_type=OP_RESOLVERS[op_resolver],
        )
        self.interpreter.allocate_tensors()
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"`model_content` must have one input and one output. Received: {len(inputs)} inputs, {len(outputs)} outputs"
            )
        self.input, self.output = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self.input["shape"])
        if self.input_shape[0] != 1:
            raise ValueError(f"`model_content` must have a batch-1 input. Received: input shape {self.input_shape}")

    @property
    def input_dtype(self):
        """numpy dtype of the input tensor."""
        return np.dtype(self.input["dtype"])

    @property
    def output_dtype(self):
        """numpy dtype of the output tensor."""
        return np.dtype(self.output["dtype"])

    @property
    def quantized_input(self):
        """True if the file takes integer images."""
        return np.issubdtype(self.input_dtype, np.integer)

    @property
    def quantized_output(self):
        """True if the file returns integer logits."""
        return np.issubdtype(self.output_dtype, np.integer)

    def prepare(self, x):
        """Float images in [0, 1] (or uint8 pixels) -> the input tensor's dtype (quantised if integer).

        Args:
            x: Images `(n, h, w, c)`, uint8 or float in [0, 1].

        Returns:
            Array of the input dtype, shape `(n, h, w, c)`.
        """
        x = np.asarray(x)
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        if self.quantized_input:
            scale, zero_point = self.input["quantization"]
            return quantize(x, scale, zero_point, self.input_dtype)
        return x.astype(self.input_dtype)

    def to_float(self, y):
        """Raw outputs -> float32 logits (dequantised if integer).

        Args:
            y: Raw outputs of the output dtype.

        Returns:
            float32 array of the same shape.
        """
        if self.quantized_output:
            scale, zero_point = self.output["quantization"]
            return dequantize(y, scale, zero_point)
        return np.asarray(y, np.float32)

    def invoke_raw(self, x_raw):
        """Runs prepared inputs one image at a time.

        Args:
            x_raw: Array `(n, h, w, c)` of the input dtype (see `prepare`).

        Returns:
            Raw outputs `(n, ...)` of the output dtype.
        """
        outputs = []
        for image in np.asarray(x_raw):
            self.interpreter.set_tensor(self.input["index"], image[None])
            self.interpreter.invoke()
            outputs.append(self.interpreter.get_tensor(self.output["index"])[0].copy())
        return np.stack(outputs)

    def predict(self, x):
        """Float logits for images.

        Args:
            x: Images `(n, h, w, c)`, uint8 or float in [0, 1].

        Returns:
            float32 logits `(n, num_classes)`.
        """
        return self.to_float(self.invoke_raw(self.prepare(x)))

    def __call__(self, x):
        """Same as `predict`: float logits for images, so the runner stands in for a Keras model."""
        return self.predict(x)

    def latency(self, image, runs=100, warmup=10):
        """Milliseconds per `invoke()` on one image: median and spread of repeated runs.

        Args:
            image: One image `(h, w, c)`, uint8 or float in [0, 1].
            runs: Int >= 1, timed invocations.
            warmup: Int >= 0, untimed invocations first.

        Returns:
            Dict with `median_ms`, `p10_ms`, `p90_ms` and `runs`.
        """
        if int(runs) != runs or runs < 1:
            raise ValueError(f"`runs` must be a positive integer. Received: runs={runs}")
        invoke = self.invoker(image)
        for _ in range(int(warmup)):
            invoke()
        times = self.time_invokes(runs)
        return summarize_times(times)

    def invoker(self, image):
        """Sets `image` as the input; returns the zero-argument callable that runs one inference on it.

        Args:
            image: One image `(h, w, c)`, uint8 or float in [0, 1].

        Returns:
            The interpreter's `invoke`, for `timed_calls` or `interleaved_latency`.
        """
        self.interpreter.set_tensor(self.input["index"], self.prepare(np.asarray(image)[None]))
        return self.interpreter.invoke

    def time_invokes(self, runs):
        """Times `invoke()` on the input tensor already set.

        Args:
            runs: Int, invocations.

        Returns:
            float array `(runs,)` of seconds.
        """
        times = np.empty(int(runs))
        for i in range(int(runs)):
            start = time.perf_counter()
            self.interpreter.invoke()
            times[i] = time.perf_counter() - start
        return times


def summarize_times(times):
    """Summarises run times.

    Args:
        times: Seconds per run.

    Returns:
        Dict with `median_ms`, `p10_ms`, `p90_ms` and `runs`.
    """
    times = np.asarray(times) * 1e3
    return {
        "median_ms": float(np.median(times)),
        "p10_ms": float(np.percentile(times, 10)),
        "p90_ms": float(np.percentile(times, 90)),
        "runs": int(times.size),
    }


def timed_calls(invoke, runs):
    """Wall-clock and thread CPU seconds of `runs` calls of `invoke`.

    Thread CPU time leaves out the time a busy machine's scheduler takes the thread away.

    Args:
        invoke: Zero-argument callable, e.g. `LiteRTModel.invoker(image)`.
        runs: Int >= 1, calls.

    Returns:
        `(wall, cpu)`: two lists of `runs` seconds.
    """
    wall, cpu = [], []
    for _ in range(int(runs)):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        invoke()
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return wall, cpu


def interleaved_latency(invokers, rounds, runs):
    """Latency of several models timed in turn, so that a busy machine slows all of them alike.

    Each round times every invoker `runs` times, one after the other; a few untimed calls of each come first.
    Figures of models timed in separate sessions are not comparable on a shared machine; these are.

    Args:
        invokers: Dict name -> zero-argument callable running one inference.
        rounds: Int >= 1, rounds.
        runs: Int >= 1, calls per invoker and round.

    Returns:
        Dict name -> `summarize_times` of the wall-clock times plus `cpu_median_ms` (thread CPU time).

    Example:
        >>> runners = {name: LiteRTModel(content, num_threads=1) for name, content in files.items()}
        >>> times = interleaved_latency({n: r.invoker(image) for n, r in runners.items()}, rounds=10, runs=30)
        >>> sorted(times["int8"])
        ['cpu_median_ms', 'median_ms', 'p10_ms', 'p90_ms', 'runs']
    """
    for name, value in (("rounds", rounds), ("runs", runs)):
        if int(value) != value or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
    wall = {name: [] for name in invokers}
    cpu = {name: [] for name in invokers}
    for invoke in invokers.values():
        timed_calls(invoke, max(2, int(runs) // 5))  # warm-up
    for _ in range(int(rounds)):
        for name, invoke in invokers.items():
            w, c = timed_calls(invoke, runs)
            wall[name] += w
            cpu[name] += c
    return {name: {**summarize_times(wall[name]), "cpu_median_ms": float(np.median(cpu[name]) * 1e3)} for name in wall}
