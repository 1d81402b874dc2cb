"""Tests of the `tfrobustprune.evaluate` binary: budgets, .keras (plain, gated, stripped) and .tflite models."""

import json

import keras
import pytest
import tensorflow as tf
from absl import flags

import tfrobustprune
from tfrobustprune import evaluate


@pytest.fixture(scope="module")
def sample():
    split = tfrobustprune.data.load_sample()
    return split.x_val[:48], split.y_val[:48]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A tiny ResNet, its gated copy with a few channels closed, the stripped model and a float .tflite."""
    keras.utils.set_random_seed(0)
    split = tfrobustprune.data.load_sample()
    plain = tfrobustprune.models.cifar_resnet(depth=8, width=8)
    plain.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(split.x_train / 255.0, split.y_train, epochs=2, batch_size=64, verbose=0)
    gated = tfrobustprune.gate(plain)
    first = tfrobustprune.gate_layers(gated)[0]
    logits = first.logits.numpy()
    logits[: len(logits) // 2] = -3.0  # close half of the first group's channels
    first.logits.assign(logits)
    stripped = tfrobustprune.strip(gated)
    root = tmp_path_factory.mktemp("models")
    paths = {name: str(root / f"{name}.keras") for name in ("plain", "gated", "stripped")}
    for name, model in (("plain", plain), ("gated", gated), ("stripped", stripped)):
        model.save(paths[name])
    paths["tflite"] = str(root / "plain.tflite")
    with open(paths["tflite"], "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_keras_model(plain).convert())
    return paths


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.5", 0.5), ("0", 0.0), ("1", 1.0)])
def test_parse_budget(text, value):
    assert evaluate.parse_budget(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["2", "-1/255", "8/0", "eight"])
def test_parse_budget_rejects_bad_values(text):
    with pytest.raises(ValueError, match=rf"Received: step='{text}'"):
        evaluate.parse_budget(text, "step")


def test_load_model_rejects_missing_and_unknown_files(tmp_path):
    with pytest.raises(ValueError, match=r"Received: model="):
        evaluate.load_model(str(tmp_path / "missing.keras"))
    other = tmp_path / "model.h5"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match=r"must end in \.keras or \.tflite"):
        evaluate.load_model(str(other))


def test_gated_and_stripped_models_give_the_same_figures(model_files, sample):
    x, y = sample
    results = {
        name: evaluate.run(model_files[name], x, y, "fgsm,pgd3", checks=False)[0] for name in ("gated", "stripped")
    }
    assert results["gated"]["natural_accuracy"] == results["stripped"]["natural_accuracy"]
    for attack in ("fgsm", "pgd3"):
        assert results["gated"]["robust_accuracy"][attack] == pytest.approx(
            results["stripped"]["robust_accuracy"][attack], abs=1.5 / len(x)
        )
    json.dumps(results)


def test_run_takes_a_loaded_model_and_gives_the_same_figures_as_its_file(model_files, sample):
    x, y = sample
    from_file, _ = evaluate.run(model_files["plain"], x, y, "pgd3", checks=False)
    loaded = evaluate.load_model(model_files["plain"])
    from_model, _ = evaluate.run(loaded, x, y, "pgd3", checks=False)
    assert from_model["natural_accuracy"] == from_file["natural_accuracy"]
    assert from_model["robust_accuracy"] == from_file["robust_accuracy"]
    assert from_model["model"] == loaded.name


def test_tflite_without_surrogate_reports_natural_accuracy_only(model_files, sample):
    x, y = sample
    result, report = evaluate.run(model_files["tflite"], x, y, "fgsm,pgd3")
    keras_result, _ = evaluate.run(model_files["plain"], x, y, "", checks=False)
    assert result["natural_accuracy"] == keras_result["natural_accuracy"]
    assert result["robust_accuracy"] == {} and "no gradients" in result["note"]
    assert report.worst_case_accuracy == report.natural_accuracy


def test_tflite_with_its_own_keras_model_as_surrogate_matches_white_box(model_files, sample):
    x, y = sample
    transfer, report = evaluate.run(model_files["tflite"], x, y, "pgd3", surrogate_path=model_files["plain"])
    white_box, _ = evaluate.run(model_files["plain"], x, y, "pgd3", checks=False)
    assert transfer["transfer"] and not white_box["transfer"]
    assert transfer["robust_accuracy"]["pgd3"] == pytest.approx(white_box["robust_accuracy"]["pgd3"], abs=1.5 / len(x))
    statuses = {c["name"]: c["status"] for c in report.checks}
    assert statuses["eps0_is_natural"] == "pass"


def test_surrogate_must_be_a_keras_model(model_files, sample):
    x, y = sample
    with pytest.raises(ValueError, match=r"Received: surrogate="):
        evaluate.run(model_files["plain"], x, y, "fgsm", surrogate_path=model_files["tflite"])


def test_main_prints_a_table_and_writes_json(model_files, tmp_path, capsys):
    output = tmp_path / "eval.json"
    flag_values = flags.FlagValues()  # a fresh set: no collision with other binaries' --model
    evaluate.define_flags(flag_values)
    flag_values(
        [
            "evaluate",
            f"--model={model_files['stripped']}",
            "--data=sample",
            "--num_examples=32",
            "--attacks=fgsm,pgd2",
            "--epsilon=4/255",
            "--step=1/255",
            f"--output={output}",
        ]
    )
    evaluate.main([], flag_values)
    table = capsys.readouterr().out
    assert "worst case" in table and "sanity checks" in table
    result = json.loads(output.read_text())
    assert result["num_examples"] == 32 and result["data"] == "sample"
    assert set(result["robust_accuracy"]) == {"fgsm", "pgd2"}
    assert result["epsilon"] == pytest.approx(4 / 255)


def test_importing_the_module_defines_no_global_flag():
    assert "surrogate" not in flags.FLAGS and "apgd_targets" not in flags.FLAGS
