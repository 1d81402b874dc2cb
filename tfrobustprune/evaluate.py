"""Robustness evaluation binary: natural, per-attack and worst-case robust accuracy, with sanity checks.

    python -m tfrobustprune.evaluate --model=runs/x/stripped.keras --data=npz --data_dir=../shared/data/cifar10 \
        --num_examples=1000 --attacks=fgsm,pgd10,pgd50x10,apgd_ce,apgd_t --output=eval.json

Works on plain, gated (`tfrobustprune.gate`) and stripped `.keras` models, and
on `.tflite` files run with the LiteRT interpreter: a `.tflite` model has no
gradients, so its attacks are transfer attacks crafted on `--surrogate` (a
`.keras` model, e.g. the one it was converted from); with no surrogate only its
natural accuracy is measured. Evaluates the first `--num_examples` validation
images; prints a table and writes JSON to `--output` (or prints it).
"""

import json
import os
import sys
import time

import keras
from absl import app, flags, logging

import tfrobustprune  # noqa: F401  (registers ChannelGate and RobustPruneModel for loading)
from tfrobustprune import data as data_lib
from tfrobustprune import model_io, robustness


def define_flags(flag_values=flags.FLAGS):
    """Defines the binary's flags on `flag_values`.

    Called only when the module runs as a program, so importing it (for `run`)
    defines no flag that could collide with another binary's (`tflite_export`
    also has `--model`); tests pass a fresh `flags.FlagValues()`.

    Args:
        flag_values: An `absl.flags.FlagValues`.
    """

    def define(kind, name, default, help_text, *args):
        getattr(flags, f"DEFINE_{kind}")(name, default, *args, help_text, flag_values=flag_values)

    define("string", "model", None, "Model to evaluate: a .keras or .tflite file.")
    define("string", "surrogate", None, "A .keras model whose gradients craft transfer attacks.")
    define("enum", "data", "sample", "Data source: sample, npz or tfds.", data_lib.SOURCES)
    define("string", "data_dir", None, "Directory of .npz files (npz) or tfds data_dir (tfds).")
    define("string", "dataset", "cifar10", "tfds dataset name (data=tfds).")
    define("integer", "num_examples", 1000, "Validation images to evaluate (the first ones).")
    define(
        "string",
        "attacks",
        "fgsm,pgd10,pgd50x10,apgd_ce,apgd_t",
        "Comma-separated: fgsm, pgdK, pgdKxR (K steps, R restarts), apgd_ce[K], apgd_t[K].",
    )
    define("string", "epsilon", "8/255", "L-infinity budget in pixels, e.g. 8/255 or 0.03.")
    define("string", "step", "2/255", "PGD step size in pixels.")
    define("integer", "apgd_steps", 100, "APGD iterations (AutoAttack: 100).")
    define("integer", "apgd_targets", 9, "Target classes of apgd_t (AutoAttack: 9).")
    define("integer", "batch_size", 256, "Attack batch size.")
    define("integer", "seed", 0, "Seed of the random starts.")
    define("bool", "checks", True, "Run the extra sanity attacks (eps = 0, large budget).")
    define("string", "output", None, "JSON result path; default: print the JSON.")


def parse_budget(text, name="epsilon"):
    """Parses a budget in pixels: "8/255" or "0.0314".

    Args:
        text: Str or number.
        name: Str, the flag name for messages.

    Returns:
        Float in [0, 1].
    """
    try:
        if isinstance(text, str) and "/" in text:
            num, den = text.split("/")
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"`{name}` must be a number or a fraction like 8/255. Received: {name}={text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1] (pixels). Received: {name}={text!r}")
    return value


def tflite_classifier(path):
    """A `.tflite` classifier on the LiteRT interpreter, callable as `classifier(images) -> logits`.

    Float, float16 and quantized (int8 / uint8 input or output) files are
    accepted; inputs are quantized and outputs dequantized with the tensors' own
    scale and zero point (`tflite_export.LiteRTModel`, batch 1).

    Args:
        path: Str, the `.tflite` file.

    Returns:
        A `tflite_export.litert.LiteRTModel` (call it, or its `predict`, on images).

    Raises:
        ModelFileError: for a missing or unreadable file.
    """
    from tflite_export.litert import LiteRTModel  # the export package is optional at import time

    return LiteRTModel(model_io.read_tflite(path), num_threads=os.cpu_count() or 1)


def load_model(path):
    """Loads a `.keras` model (plain, gated, stripped or `RobustPruneModel`) or a `.tflite` file.

    Args:
        path: Str, a `.keras` or `.tflite` file.

    Returns:
        A `keras.Model` or a LiteRT classifier (`tflite_classifier`).
    """
    if not path or not os.path.isfile(path):
        raise ValueError(f"`model` must be an existing .keras or .tflite file. Received: model={path!r}")
    if path.endswith(".tflite"):
        return tflite_classifier(path)
    if path.endswith(".keras"):
        return model_io.load_keras_model(path)
    raise ValueError(f"`model` must end in .keras or .tflite. Received: model={path!r}")


def run(
    model_path,
    x,
    y,
    attacks="fgsm,pgd10,pgd50x10,apgd_ce,apgd_t",
    epsilon=8 / 255,
    step=2 / 255,
    surrogate_path=None,
    batch_size=256,
    seed=0,
    apgd_steps=100,
    apgd_targets=9,
    checks=True,
    progress=False,
):
    """Evaluates a model (file or loaded `keras.Model`) on images; the whole binary but flags and printing.

    Args:
        model_path: Str, `.keras` or `.tflite`; or a loaded `keras.Model` (saves a reload when a
            caller evaluates one model several times).
        x: Images, uint8 or float in [0, 1].
        y: Int labels.
        attacks: Comma-separated attack names (see `robustness.parse_attack`).
        epsilon: Float budget in pixels.
        step: Float PGD step size.
        surrogate_path: Str or None, `.keras` model crafting transfer attacks.
        batch_size: Int.
        seed: Int.
        apgd_steps: Int, APGD iterations.
        apgd_targets: Int, APGD-T target classes.
        checks: Bool, run the extra sanity attacks.
        progress: Bool, show a progress bar.

    Returns:
        `(result, report)`: a JSON-serialisable dict, and the `robustness.Report`.
    """
    model = model_path if isinstance(model_path, keras.Model) else load_model(model_path)
    surrogate = load_model(surrogate_path) if surrogate_path else None
    if surrogate is not None and not isinstance(surrogate, keras.Model):
        raise ValueError(
            f"`surrogate` must be a .keras model (it provides gradients). Received: surrogate={surrogate_path!r}"
        )
    note, predict, attacker = None, None, surrogate or model
    if not isinstance(model, keras.Model):
        predict = model
        if surrogate is None:
            note = "A .tflite model has no gradients and no --surrogate was given: natural accuracy only."
            attacks, checks = [], False
    elif surrogate is not None:
        predict = robustness.logits_function(model)
    report = robustness.evaluate_robustness(
        attacker if isinstance(attacker, keras.Model) else None,
        x,
        y,
        attacks,
        epsilon,
        step,
        batch_size,
        seed,
        predict=predict,
        apgd_steps=apgd_steps,
        apgd_targets=apgd_targets,
        checks=checks,
        progress=progress,
    )
    result = {
        "model": model.name if isinstance(model_path, keras.Model) else model_path,
        "surrogate": surrogate_path,
        "attacks": list(report.robust_accuracy),
        "seed": seed,
        "apgd_steps": apgd_steps,
        "apgd_targets": apgd_targets,
        **report.to_json(),
    }
    if note:
        result["note"] = note
    return result, report


def main(argv, flag_values=flags.FLAGS):
    """Runs the evaluation the flags describe; prints the table and the JSON (or writes `--output`).

    Args:
        argv: Unused command-line leftovers.
        flag_values: The parsed `absl.flags.FlagValues` (defined by `define_flags`).
    """
    del argv  # everything comes from flags
    f = flag_values
    if not f.model:
        raise app.UsageError("--model=PATH.keras or PATH.tflite is required.")
    epsilon, step = parse_budget(f.epsilon), parse_budget(f.step, "step")
    split = data_lib.load(f.data, path=f.data_dir, name=f.dataset)
    x, y = split.x_val[: f.num_examples], split.y_val[: f.num_examples]
    logging.info(
        "Evaluating %s on %d %s validation images, epsilon %.4g, attacks %s",
        f.model,
        len(x),
        split.source,
        epsilon,
        f.attacks,
    )
    start = time.time()
    result, report = run(
        f.model,
        x,
        y,
        f.attacks,
        epsilon,
        step,
        f.surrogate,
        f.batch_size,
        f.seed,
        f.apgd_steps,
        f.apgd_targets,
        f.checks,
        progress=True,
    )
    result.update(data=split.source, total_seconds=time.time() - start)
    print(report.table())
    if result.get("note"):
        print(result["note"])
    for warning in report.warnings:
        logging.warning("%s", warning)
    text = json.dumps(result, indent=2)
    if f.output:
        os.makedirs(os.path.dirname(os.path.abspath(f.output)), exist_ok=True)
        with open(f.output, "w") as out:
            out.write(text + "\n")
        print(f"Wrote {f.output}")
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
