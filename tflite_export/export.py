"""`export_and_verify`: a stripped Keras model -> verified `.tflite` files, `export_report.json` and a markdown table."""

import os

import numpy as np
from absl import logging

from tflite_export import report as report_lib
from tflite_export.conversion import VARIANTS, check_image_model, convert, representative_images, to_float_images
from tflite_export.edgetpu import check_edgetpu
from tflite_export.litert import LiteRTModel
from tflite_export.micro import verify_micro
from tflite_export.robustness import transfer_robustness
from tflite_export.verify import accuracy, verify_file
from tfrobustprune import model_io
from tfrobustprune.cost import count_macs
from tfrobustprune.gating import gate_layers

REPORT_NAME = "export_report.json"
MARKDOWN_NAME = "export_report.md"
# The acceptance thresholds.
MIN_INT8_AGREEMENT = 0.98
MAX_FLOAT32_LOGIT_DIFF = 1e-4


def _criteria(report):
    criteria = {}
    variants = report["variants"]
    if "int8" in variants:
        value = variants["int8"]["argmax_agreement"]
        criteria[f"int8 argmax agreement >= {MIN_INT8_AGREEMENT}"] = {
            "value": round(value, 4),
            "passed": value >= MIN_INT8_AGREEMENT,
        }
    if "float32" in variants:
        value = variants["float32"]["max_abs_logit_diff"]
        criteria[f"float32 max abs logit diff <= {MAX_FLOAT32_LOGIT_DIFF:g}"] = {
            "value": float(f"{value:.3g}"),
            "passed": value <= MAX_FLOAT32_LOGIT_DIFF,
        }
    if report.get("micro"):
        micro = report["micro"]
        criteria[f"int8 runs on TFLite Micro, within {micro['tolerance_steps']} step of LiteRT reference kernels"] = {
            "value": f"arena {micro['arena_bytes']} B, max diff {micro['vs_litert_reference']['max_abs_diff_steps']}",
            "passed": bool(micro["outputs_match"]),
        }
    if "int8" in report["edgetpu"]:
        criteria["int8 Edge TPU readiness"] = {
            "value": "pass" if report["edgetpu"]["int8"]["passed"] else "fail",
            "passed": report["edgetpu"]["int8"]["passed"],
        }
    return criteria


def export_and_verify(
    model,
    split,
    out_dir,
    variants=VARIANTS,
    name="model",
    representative_size=500,
    eval_size=None,
    latency_runs=100,
    micro_images=32,
    robust_size=500,
    epsilon=8 / 255,
    pgd_step=2 / 255,
    pgd_steps=10,
    seed=0,
):
    """Converts a stripped Keras model to `.tflite` files and proves they behave like it.

    Writes `<name>_<variant>.tflite` for each variant, `export_report.json` and
    `export_report.md` into `out_dir`. For each file: accuracy on the
    validation split, argmax agreement and logit difference with the Keras
    model (int8 outputs dequantised), size, LiteRT latency (1 thread, median)
    and the Edge TPU rules; for the int8 file also TFLite Micro (outputs
    against LiteRT, arena size); for all files, accuracy on PGD examples
    crafted on the Keras model.

    Args:
        model: A stripped `keras.Model` (standard layers; images in [0, 1] -> logits).
        split: A `tfrobustprune.data.Split`; training images calibrate int8,
            validation images verify.
        out_dir: Output directory (created).
        variants: Names from `VARIANTS` ("float32", "float16", "dynamic_range", "int8").
        name: Str, file name prefix.
        representative_size: Int, calibration images drawn from the training split.
        eval_size: Int or None (all), validation images to verify on.
        latency_runs: Int, timed runs per file.
        micro_images: Int, validation images run on TFLite Micro (0: skip).
        robust_size: Int, validation images attacked with PGD (0: skip).
        epsilon: Float PGD budget in pixels.
        pgd_step: Float PGD step.
        pgd_steps: Int PGD iterations.
        seed: Int, seed of the calibration draw and the PGD start.

    Returns:
        The report dict (also written to `out_dir/export_report.json`).

    Example:

    >>> report = export_and_verify(slim, tfrobustprune.data.load_sample(), "/tmp/export")
    >>> report["variants"]["int8"]["argmax_agreement"] >= 0.98
    True
    """
    model = getattr(model, "network", model)
    check_image_model(model)
    if gate_layers(model):
        raise ValueError(
            "`model` still has channel gates; pass `tfrobustprune.strip(model)`. "
            f"Received: {len(gate_layers(model))} ChannelGate layers"
        )
    for arg, value, least in (
        ("micro_images", micro_images, 0),
        ("robust_size", robust_size, 0),
        ("latency_runs", latency_runs, 1),
    ):
        if int(value) != value or value < least:
            raise ValueError(f"`{arg}` must be an integer >= {least}. Received: {arg}={value}")
    os.makedirs(out_dir, exist_ok=True)
    x_val, y_val = np.asarray(split.x_val[:eval_size]), np.asarray(split.y_val[:eval_size])

    logging.info("Converting %s to %s", model.name, list(variants))
    files = convert(model, variants, representative_images(split.x_train, representative_size, seed))
    keras_logits = model.predict(to_float_images(x_val), batch_size=256, verbose=0)
    report = {
        "model": {"name": model.name, "params": int(model.count_params()), "macs": count_macs(model)},
        "data": {
            "source": split.source,
            "val_images": int(len(x_val)),
            "representative_images": int(min(representative_size, len(split.x_train))),
        },
        "keras": {"accuracy": accuracy(keras_logits, y_val)},
        "variants": {},
        "edgetpu": {},
    }
    runners = {}
    for variant, content in files.items():
        file_name = f"{name}_{variant}.tflite"
        model_io.write_bytes_atomic(os.path.join(out_dir, file_name), content)
        logging.info("Verifying %s (%d bytes) on LiteRT", file_name, len(content))
        report["variants"][variant] = {
            "file": file_name,
            **verify_file(content, keras_logits, x_val, y_val, latency_runs),
        }
        report["edgetpu"][variant] = check_edgetpu(content)
        runners[variant] = LiteRTModel(content)
    if "int8" in files and micro_images:
        logging.info("Running %s_int8.tflite on TFLite Micro", name)
        report["micro"] = verify_micro(files["int8"], x_val[:micro_images], runners["int8"])
    if robust_size:
        logging.info("PGD transfer robustness on %d images", min(robust_size, len(x_val)))
        report["robustness"] = transfer_robustness(
            model, runners, x_val[:robust_size], y_val[:robust_size], epsilon, pgd_step, pgd_steps, seed
        )
    report["criteria"] = _criteria(report)
    # The report goes last, so a report on disk always describes .tflite files that were written whole.
    model_io.write_bytes_atomic(os.path.join(out_dir, MARKDOWN_NAME), report_lib.markdown(report).encode())
    model_io.write_json_atomic(os.path.join(out_dir, REPORT_NAME), report, indent=2)
    return report
