"""tflite_export: a stripped Keras model -> `.tflite` files verified on LiteRT and TFLite Micro.

`convert` makes float32, float16, dynamic-range and full-int8 files (the int8 one
after `fold_normalization`); `verify_file` checks one on the LiteRT interpreter
against the Keras model; `verify_micro` runs the int8 file on TFLite Micro and
sizes its arena; `check_edgetpu` applies the Edge TPU compiler's documented
rules; `transfer_robustness` replays PGD examples crafted on the Keras model;
`export_and_verify` does all of it and writes the files and `export_report.json`.
The binary: `python -m tflite_export`.
"""

from tflite_export.conversion import VARIANTS, convert, representative_images
from tflite_export.edgetpu import check_edgetpu
from tflite_export.export import export_and_verify
from tflite_export.litert import LiteRTModel
from tflite_export.micro import find_arena_size, run_micro, verify_micro
from tflite_export.rewrite import fold_normalization
from tflite_export.robustness import pgd_examples, transfer_robustness
from tflite_export.tflite_graph import read_graph
from tflite_export.verify import compare_logits, verify_file

__all__ = [
    "VARIANTS",
    "LiteRTModel",
    "check_edgetpu",
    "compare_logits",
    "convert",
    "export_and_verify",
    "find_arena_size",
    "fold_normalization",
    "pgd_examples",
    "read_graph",
    "representative_images",
    "run_micro",
    "transfer_robustness",
    "verify_file",
    "verify_micro",
]
