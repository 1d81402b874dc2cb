r"""Exports a stripped Keras model to verified `.tflite` files.

    python -m tflite_export --model=WORKDIR/stripped.keras --out=WORKDIR/tflite
    python -m tflite_export --model=WORKDIR/stripped.keras --out=DIR \
        --data_source=npz --data_path=/work/shared/data/cifar10

Writes `model_{float32,float16,dynamic_range,int8}.tflite`, `export_report.json`
and `export_report.md` (printed at the end) into `--out`.
"""

import os

from absl import app, flags, logging

import tfrobustprune
from tflite_export.conversion import VARIANTS
from tflite_export.export import export_and_verify
from tfrobustprune import model_io

_MODEL = flags.DEFINE_string(
    "model", None, "A `.keras` model: stripped (a gated one is stripped first).", required=True
)
_OUT = flags.DEFINE_string("out", None, "Output directory for the .tflite files and the report.", required=True)
_DATA_SOURCE = flags.DEFINE_enum(
    "data_source", "sample", list(tfrobustprune.data.SOURCES), "Where the data comes from."
)
_DATA_PATH = flags.DEFINE_string("data_path", None, "npz directory (data_source=npz) or tfds data_dir.")
_DATA_NAME = flags.DEFINE_string("data_name", "cifar10", "tfds dataset name (data_source=tfds).")
_VAL_SIZE = flags.DEFINE_integer("val_size", 5000, "Validation examples held out at the end of npz/tfds training data.")
_EVAL_SIZE = flags.DEFINE_integer("eval_size", None, "Verify on only the first validation images (default: all).")
_REPRESENTATIVE_SIZE = flags.DEFINE_integer("representative_size", 500, "Training images calibrating int8.")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), f"Variants to write, from {VARIANTS}.")
_LATENCY_RUNS = flags.DEFINE_integer("latency_runs", 200, "Timed LiteRT runs per file (median reported).")
_MICRO_IMAGES = flags.DEFINE_integer("micro_images", 32, "Validation images run on TFLite Micro (0: skip).")
_ROBUST_SIZE = flags.DEFINE_integer("robust_size", 500, "Validation images attacked with PGD (0: skip).")
_EPSILON = flags.DEFINE_float("epsilon", 8.0, "PGD budget in 1/255 pixel units.")
_PGD_STEP = flags.DEFINE_float("pgd_step", 2.0, "PGD step in 1/255 pixel units.")
_PGD_STEPS = flags.DEFINE_integer("pgd_steps", 10, "PGD iterations.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the calibration draw and the PGD start.")


def load_model(path):
    """Loads a `.keras` model, stripping it if it still has channel gates.

    Args:
        path: Str, `.keras` file.

    Returns:
        A plain `keras.Model`.
    """
    model = model_io.load_keras_model(path)
    network = getattr(model, "network", model)
    if tfrobustprune.gate_layers(network):
        logging.info("%s has channel gates; stripping it first.", path)
        return tfrobustprune.strip(network)
    return network


def main(argv):
    del argv  # everything comes from flags
    model = load_model(_MODEL.value)
    split = tfrobustprune.data.load(
        _DATA_SOURCE.value,
        path=_DATA_PATH.value,
        name=_DATA_NAME.value,
        val_size=_VAL_SIZE.value,
        eval_size=_EVAL_SIZE.value,
    )
    export_and_verify(
        model,
        split,
        _OUT.value,
        variants=_VARIANTS.value,
        representative_size=_REPRESENTATIVE_SIZE.value,
        latency_runs=_LATENCY_RUNS.value,
        micro_images=_MICRO_IMAGES.value,
        robust_size=_ROBUST_SIZE.value,
        epsilon=_EPSILON.value / 255.0,
        pgd_step=_PGD_STEP.value / 255.0,
        pgd_steps=_PGD_STEPS.value,
        seed=_SEED.value,
    )
    with open(os.path.join(_OUT.value, "export_report.md")) as f:
        print(f.read())


if __name__ == "__main__":
    app.run(main)
