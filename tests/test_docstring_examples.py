"""The library's docstring examples run as written (doctest).

The examples assume objects a user would have (a trained ResNet20, validation images, a converted model); the
namespace below stands in for them with small real ones. Lines that would train for 30 epochs are marked
`# doctest: +SKIP` in the docstrings themselves.
"""

import doctest
import importlib
import pathlib

import keras
import numpy as np
import pytest
from helpers import ROOT, randomize

import tfrobustprune
from tfrobustprune import models
from tfrobustprune.strip import strip

# By module path: the package re-exports some functions under their module's name (`tfrobustprune.strip`).
MODULE_NAMES = [
    "attacks",
    "budget",
    "callback",
    "cost",
    "data",
    "gates",
    "gating",
    "magnitude",
    "model_io",
    "models",
    "robust_model",
    "strip",
]


@pytest.fixture(scope="module")
def namespace(sample):
    keras.utils.set_random_seed(0)
    trained_resnet20 = models.resnet20()
    gated_model = randomize(tfrobustprune.gate(models.resnet20(), min_fraction=0.1))
    return {
        "tfrobustprune": tfrobustprune,
        "keras": keras,
        "np": np,
        "resnet20": models.resnet20,
        "x": sample.x_train[:256],
        "y": sample.y_train[:256],
        "x_val": sample.x_val.astype("float32") / 255.0,
        "y_val": sample.y_val,
        "trained_resnet20": trained_resnet20,
        "gated_model": gated_model,
        "our_stripped_resnet20": strip(gated_model),
        "converted": {"int8": b"TFL3 stand-in bytes"},
    }


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_docstring_examples_run(name, namespace, tmp_path, monkeypatch):
    module = importlib.import_module(f"tfrobustprune.{name}")
    monkeypatch.chdir(tmp_path)  # examples that write files write here
    (tmp_path / "runs").mkdir()
    _run_examples(module, namespace)


def _run_examples(module, namespace):
    tests = doctest.DocTestFinder().find(module, globs={**vars(module), **namespace})
    examples = [t for t in tests if t.examples]
    assert examples, f"{module.__name__} has no docstring example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in examples:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {module.__name__}; see the output above"


EXPORT_MODULE_NAMES = ["conversion", "edgetpu", "export", "litert", "rewrite", "tflite_graph"]


@pytest.fixture(scope="module")
def export_namespace(namespace, sample, trained_cnn, tmp_path_factory):
    from tflite_export import conversion

    model = namespace["trained_resnet20"]
    files = conversion.convert(model, ["float32", "int8"], conversion.representative_images(sample.x_train, 50))
    workdir = tmp_path_factory.mktemp("export_examples")
    (workdir / "model_int8.tflite").write_bytes(files["int8"])
    return {
        **namespace,
        "model": model,
        "split": sample,
        "files": files,
        "slim": trained_cnn,  # a trained plain model: int8 keeps its argmax
        "image": namespace["x_val"][0],  # one image, as an invoker takes it
        "workdir": workdir,
    }


@pytest.mark.parametrize("name", EXPORT_MODULE_NAMES)
def test_export_docstring_examples_run(name, export_namespace, monkeypatch):
    monkeypatch.chdir(export_namespace["workdir"])  # read_graph's example opens model_int8.tflite here
    _run_examples(importlib.import_module(f"tflite_export.{name}"), export_namespace)


def test_every_module_with_examples_is_listed():
    with_examples = set()
    for package in ("tfrobustprune", "tflite_export"):
        for path in sorted((pathlib.Path(ROOT) / package).glob("*.py")):
            if ">>> " in path.read_text():
                with_examples.add(f"{package}.{path.stem}")
    listed = {f"tfrobustprune.{n}" for n in MODULE_NAMES} | {f"tflite_export.{n}" for n in EXPORT_MODULE_NAMES}
    assert with_examples == listed
