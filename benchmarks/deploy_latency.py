"""Deployed latency of stripped ResNet20s: LiteRT int8 at MAC targets 0.6 and 0.15 against the dense model.

    python benchmarks/deploy_latency.py
    python benchmarks/deploy_latency.py --data_source=npz --data_path=/work/shared/data/cifar10

Each stripped model is made as the pipeline makes it: `gate(resnet20(),
min_fraction=0.1)`, gate logits drawn at random (seeded; standing in for trained
gates, so channels close across all groups rather than group by group), then
`budget.close_to_target(gated, "macs", r)` and `strip`. The weights are untrained:
latency does not depend on weight values. int8 files are calibrated on real
training images. Latency is one thread, batch 1, median over interleaved rounds
(every model is timed in every round, so a busy machine slows all alike), as
wall-clock time and as the thread's CPU time (which a shared machine's
preemption does not inflate; it matters for the 10-50 ms TFLite Micro runs), for
LiteRT int8 with its default XNNPACK delegate (the headline), LiteRT int8 with
the built-in kernels only, LiteRT float32 and TFLite Micro int8. The target:
speed-up >= 0.8 / (MAC ratio). A probe times one int8 3x3 convolution at 32x32
per channel count, which explains the XNNPACK figures.
"""

import json
import os
import platform

import numpy as np
from absl import app, flags

_TARGETS = flags.DEFINE_list("targets", ["0.6", "0.15"], "MAC ratio targets of the stripped models.")
_DATA_SOURCE = flags.DEFINE_string("data_source", "sample", "Calibration images: sample | npz | tfds.")
_DATA_PATH = flags.DEFINE_string("data_path", None, "npz directory for data_source=npz.")
_ROUNDS = flags.DEFINE_integer("rounds", 20, "Interleaved measurement rounds.")
_RUNS = flags.DEFINE_integer("runs", 25, "Timed invocations per model and round.")
_MICRO_RUNS = flags.DEFINE_integer("micro_runs", 3, "Timed TFLite Micro runs per model and round (0: skip).")
_PROBE = flags.DEFINE_bool("probe", True, "Time one int8 3x3 convolution per channel count.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the model weights and gate logits.")
_OUT = flags.DEFINE_string(
    "out", os.path.join(os.path.dirname(__file__), "results", "deploy_latency.json"), "Result JSON path."
)

BACKENDS = {  # name -> (variant, LiteRT op resolver)
    "litert_int8": ("int8", "auto"),
    "litert_int8_builtin": ("int8", "builtin"),
    "litert_float32": ("float32", "auto"),
}


def _cpu():
    model, flags_line = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags_line = line
                    break
    except OSError:
        pass
    return {
        "model": model,
        "amx_int8": " amx_int8" in flags_line,
        "avx512_vnni": " avx512_vnni" in flags_line,
        "cores": os.cpu_count(),
    }


def _stripped_models(targets, seed):
    import keras

    import tfrobustprune

    keras.utils.set_random_seed(seed)
    dense = tfrobustprune.models.resnet20()
    dense_macs = tfrobustprune.count_macs(dense)
    models = [("dense", 1.0, dense)]
    for target in targets:
        gated = tfrobustprune.gate(dense, min_fraction=0.1)
        rng = np.random.default_rng(seed)
        for layer in tfrobustprune.gate_layers(gated):
            layer.logits.assign(rng.normal(3.0, 1.0, layer.logits.shape).astype("float32"))
        tfrobustprune.budget.close_to_target(gated, "macs", target)
        models.append((f"stripped_{target:g}", target, tfrobustprune.strip(gated)))
    rows = []
    for name, target, model in models:
        widths = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        rows.append(
            {
                "name": name,
                "target": target,
                "model": model,
                "macs": tfrobustprune.count_macs(model),
                "mac_ratio": tfrobustprune.count_macs(model) / dense_macs,
                "params": model.count_params(),
                "conv_widths": widths,
            }
        )
    return rows


def _micro_invoker(content, raw_image):
    from tflite_export import micro

    interpreter = micro.micro_interpreter(content, micro.find_arena_size(content, raw_image)["arena_bytes"])
    interpreter.set_input(raw_image, 0)
    return interpreter.invoke


def _conv_probe(representative, rounds, runs):
    """Per-convolution int8 latency of a 3x3 conv at 32x32, by channel count (6 convs minus the 1x1 stem)."""
    import keras

    from tflite_export import convert, litert
    from tflite_export.litert import LiteRTModel

    rows = []
    for channels in (4, 8, 16, 32, 64):
        pair = {}
        for depth in (0, 6):
            inputs = keras.Input((32, 32, 3))
            x = keras.layers.Conv2D(channels, 1)(inputs)
            for _ in range(depth):
                x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
            pair[depth] = convert(keras.Model(inputs, x), ["int8"], representative[:20])["int8"]
        row = {"channels": channels, "macs_per_conv": 32 * 32 * 9 * channels * channels}
        for backend in ("auto", "builtin"):
            invokers = {d: LiteRTModel(c, op_resolver=backend).invoker(representative[0]) for d, c in pair.items()}
            ms = litert.interleaved_latency(invokers, rounds, runs)
            row[f"us_per_conv_{'xnnpack' if backend == 'auto' else 'builtin'}"] = (
                (ms[6]["median_ms"] - ms[0]["median_ms"]) / 6 * 1e3
            )
        rows.append(row)
    return rows


def main(argv):
    del argv
    import tfrobustprune
    from tflite_export import convert, litert, representative_images
    from tflite_export.litert import LiteRTModel

    targets = [float(t) for t in _TARGETS.value]
    split = tfrobustprune.data.load(_DATA_SOURCE.value, path=_DATA_PATH.value)
    representative = representative_images(split.x_train, 100, seed=_SEED.value)
    image = split.x_val[:1]
    rows = _stripped_models(targets, _SEED.value)
    for row in rows:
        row["files"] = convert(row.pop("model"), ["float32", "int8"], representative)
        row["int8_size_bytes"] = len(row["files"]["int8"])
    latency = {}
    for backend, (variant, resolver) in BACKENDS.items():
        invokers = {r["name"]: LiteRTModel(r["files"][variant], op_resolver=resolver).invoker(image[0]) for r in rows}
        latency[backend] = litert.interleaved_latency(invokers, _ROUNDS.value, _RUNS.value)
    if _MICRO_RUNS.value:
        invokers = {
            r["name"]: _micro_invoker(r["files"]["int8"], LiteRTModel(r["files"]["int8"]).prepare(image)) for r in rows
        }
        latency["micro_int8"] = litert.interleaved_latency(invokers, max(3, _ROUNDS.value // 8), _MICRO_RUNS.value)
    dense = {backend: values["dense"]["median_ms"] for backend, values in latency.items()}
    dense_cpu = {backend: values["dense"]["cpu_median_ms"] for backend, values in latency.items()}
    results = []
    for row in rows:
        row.pop("files")
        row["latency_ms"] = {backend: values[row["name"]] for backend, values in latency.items()}
        row["speedup"] = {b: dense[b] / row["latency_ms"][b]["median_ms"] for b in latency}
        row["speedup_cpu_time"] = {b: dense_cpu[b] / row["latency_ms"][b]["cpu_median_ms"] for b in latency}
        row["required_speedup"] = 0.8 / row["mac_ratio"]
        row["meets_target_litert_int8"] = row["speedup"]["litert_int8"] >= row["required_speedup"]
        row["meets_target_litert_int8_cpu_time"] = row["speedup_cpu_time"]["litert_int8"] >= row["required_speedup"]
        results.append(row)
        print(
            f"{row['name']:>16}  MAC ratio {row['mac_ratio']:.3f}  "
            + "  ".join(
                f"{b} {row['latency_ms'][b]['median_ms']:.3f} ms (x{row['speedup'][b]:.2f}; "
                f"CPU {row['latency_ms'][b]['cpu_median_ms']:.3f} ms, x{row['speedup_cpu_time'][b]:.2f})"
                for b in latency
            )
            + f"  required x{row['required_speedup']:.2f}"
        )
    probe = _conv_probe(representative, max(3, _ROUNDS.value // 4), _RUNS.value) if _PROBE.value else []
    for row in probe:
        print(
            f"3x3 conv 32x32, {row['channels']:>2} channels: XNNPACK {row['us_per_conv_xnnpack']:.1f} us, "
            f"built-in {row['us_per_conv_builtin']:.1f} us"
        )
    result = {
        "benchmark": "deploy_latency",
        "setup": {
            "cpu": _cpu(),
            "threads": 1,
            "batch": 1,
            "rounds": _ROUNDS.value,
            "runs_per_round": _RUNS.value,
            "calibration": f"100 training images ({split.source})",
            "weights": "untrained (latency does not depend on them)",
            "gates": f"random logits N(3, 1), seed {_SEED.value}, min_fraction 0.1, then budget.close_to_target",
            "load_average": os.getloadavg(),
        },
        "models": results,
        "conv_probe": probe,
    }
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(result, f, indent=2)
    print(f"Wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
