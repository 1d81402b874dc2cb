"""tflite_export on a small trained ResNet8: conversion, LiteRT, TFLite Micro, Edge TPU rules, robustness, binary."""

import json
import os

import keras
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

import tflite_export
import tfrobustprune
from tflite_export import conversion, edgetpu, litert, micro
from tflite_export.litert import LiteRTModel


@pytest.fixture(scope="module")
def split():
    """The shipped CIFAR-10 sample: 1,000 training and 200 validation images."""
    return tfrobustprune.data.load_sample().subset(train_size=1000, val_size=200)


@pytest.fixture(scope="module")
def trained_model(split):
    """A ResNet8 (widths 8/16/32) after a few quick epochs, so its logits have real margins."""
    keras.utils.set_random_seed(0)
    model = tfrobustprune.models.cifar_resnet(depth=8, width=8)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(split.x_train / 255.0, split.y_train, epochs=4, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def files(trained_model, split):
    """All four `.tflite` variants of the trained model."""
    return tflite_export.convert(trained_model, representative=conversion.representative_images(split.x_train, 100))


@pytest.fixture(scope="module")
def keras_logits(trained_model, split):
    return trained_model.predict(split.x_val / 255.0, verbose=0)


def test_convert_rejects_unknown_variant(trained_model):
    with pytest.raises(ValueError, match=r"Received: variants=\['int4'\]"):
        tflite_export.convert(trained_model, ["int4"])


def test_int8_needs_representative_images(tmp_path):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
    with pytest.raises(ValueError, match=r"Received: representative=None"):
        tflite_export.convert(model, ["int8"])


def test_convert_rejects_dynamic_image_shape():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ValueError, match=r"static shape.*Received: input shape \(None, None, None, 3\)"):
        tflite_export.convert(model, ["float32"])


def test_representative_images_are_a_seeded_draw_of_training_images(split):
    images = conversion.representative_images(split.x_train, 50, seed=3)
    assert images.shape == (50, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(images, conversion.representative_images(split.x_train, 50, seed=3))
    assert len(conversion.representative_images(split.x_train, 10**6)) == len(split.x_train)
    with pytest.raises(ValueError, match=r"Received: size=0"):
        conversion.representative_images(split.x_train, 0)


def test_float32_file_matches_keras(files, keras_logits, split):
    logits = LiteRTModel(files["float32"]).predict(split.x_val)
    result = tflite_export.compare_logits(logits, keras_logits, split.y_val)
    assert result["max_abs_logit_diff"] <= 1e-4
    assert result["argmax_agreement"] == 1.0


def test_int8_file_takes_int8_images_and_agrees_with_keras(files, keras_logits, split):
    runner = LiteRTModel(files["int8"])
    assert runner.input_dtype == np.int8 and runner.output_dtype == np.int8
    # Pixels k/255 quantise exactly to k - 128 with the input's scale 1/255 and zero point -128.
    scale, zero_point = runner.input["quantization"]
    assert scale == pytest.approx(1 / 255) and zero_point == -128
    np.testing.assert_array_equal(runner.prepare(split.x_val[:4]), split.x_val[:4].astype(np.int16) - 128)
    result = tflite_export.compare_logits(runner.predict(split.x_val), keras_logits, split.y_val)
    assert result["argmax_agreement"] >= 0.95


def test_verify_file_reports_every_variant(files, keras_logits, split):
    results = {
        v: tflite_export.verify_file(c, keras_logits, split.x_val, split.y_val, latency_runs=5)
        for v, c in files.items()
    }
    keras_accuracy = np.mean(keras_logits.argmax(-1) == split.y_val)
    for variant, result in results.items():
        assert result["accuracy"] == pytest.approx(keras_accuracy, abs=0.05), variant
        assert result["latency"]["median_ms"] > 0 and result["latency"]["runs"] == 5
    assert results["float16"]["max_abs_logit_diff"] < 0.05
    assert results["int8"]["size_bytes"] < results["float32"]["size_bytes"] / 2.5
    assert results["dynamic_range"]["input_dtype"] == "float32"


def test_latency_rejects_zero_runs(files, split):
    with pytest.raises(ValueError, match=r"Received: runs=0"):
        LiteRTModel(files["int8"]).latency(split.x_val[0], runs=0)


def test_interleaved_latency_times_every_model_in_every_round(files, split):
    order = []
    runners = {"float32": LiteRTModel(files["float32"]), "int8": LiteRTModel(files["int8"])}

    def recording(name, invoke):
        def call():
            order.append(name)
            invoke()

        return call

    invokers = {name: recording(name, r.invoker(split.x_val[0])) for name, r in runners.items()}
    timed = litert.interleaved_latency(invokers, rounds=3, runs=5)
    warmup = ["float32"] * 2 + ["int8"] * 2
    assert order == warmup + (["float32"] * 5 + ["int8"] * 5) * 3  # in turn, round after round
    for figures in timed.values():
        assert figures["runs"] == 15 and figures["median_ms"] > 0 and figures["cpu_median_ms"] > 0
    # The invoker runs the image it was given: the same logits as predict().
    int8 = runners["int8"]
    for image in split.x_val[:8]:
        int8.invoker(image)()
        raw = int8.interpreter.get_tensor(int8.output["index"])[0]  # int8; its scale is positive
        assert raw.argmax() == int8.predict(image[None])[0].argmax()
    with pytest.raises(ValueError, match=r"Received: rounds=0"):
        litert.interleaved_latency(invokers, rounds=0, runs=5)


def test_litert_model_rejects_unknown_op_resolver(files):
    with pytest.raises(ValueError, match=r"Received: op_resolver='gpu'"):
        LiteRTModel(files["int8"], op_resolver="gpu")


def test_micro_matches_litert_reference_kernels(files, split):
    result = tflite_export.verify_micro(files["int8"], split.x_val[:20])
    assert result["images"] == 20
    assert result["outputs_match"] and result["vs_litert_reference"]["max_abs_diff_steps"] <= 1
    assert result["vs_litert_reference"]["argmax_agreement"] >= 0.95
    assert result["vs_litert"]["argmax_agreement"] >= 0.9  # default LiteRT (XNNPACK) rounds differently
    with pytest.raises(ValueError, match=r"Received: tolerance=-1"):
        tflite_export.verify_micro(files["int8"], split.x_val[:1], tolerance=-1)


def test_micro_arena_is_the_smallest_that_works(files, split):
    image = LiteRTModel(files["int8"]).prepare(split.x_val[:1])
    arena = tflite_export.find_arena_size(files["int8"], image, granularity=16)
    assert 0 < arena["recorded_arena_bytes"] <= arena["arena_bytes"] <= arena["recorded_arena_bytes"] + 16
    assert micro._runs(files["int8"], arena["arena_bytes"], image)
    assert not micro._runs(files["int8"], arena["arena_bytes"] - 16, image)
    with pytest.raises(RuntimeError, match="allocate"):
        micro.micro_interpreter(files["int8"], 1024)


def test_fold_normalization_keeps_the_function(trained_model, split):
    folded = tflite_export.fold_normalization(trained_model)
    assert isinstance(folded.get_layer("normalize"), keras.layers.DepthwiseConv2D)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in trained_model.layers]
    x = split.x_val[:32] / 255.0
    np.testing.assert_allclose(folded.predict(x, verbose=0), trained_model.predict(x, verbose=0), atol=1e-4)
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    assert tflite_export.fold_normalization(plain) is plain


def test_int8_file_has_no_quantised_sub_and_mul(files):
    assert {"SUB", "MUL"} <= set(tflite_export.read_graph(files["float32"]).op_counts())
    ops = tflite_export.read_graph(files["int8"]).op_counts()
    assert "DEPTHWISE_CONV_2D" in ops and not {"SUB", "MUL"} & set(ops)


def test_read_graph_lists_int8_operators(files):
    graph = tflite_export.read_graph(files["int8"])
    assert graph.num_subgraphs == 1
    assert {"CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"} <= set(graph.op_counts())
    assert graph.inputs[0].dtype == "INT8" and graph.inputs[0].shape_signature == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="Received: 3 bytes"):
        tflite_export.read_graph(b"abc")


def test_edgetpu_passes_int8_and_fails_float(files):
    int8 = tflite_export.check_edgetpu(files["int8"])
    assert int8["passed"], int8["reasons"]
    assert int8["unsupported_ops"] == [] and int8["first_unsupported_op"] is None
    for variant in ("float32", "float16", "dynamic_range"):
        check = tflite_export.check_edgetpu(files[variant])
        assert not check["passed"]
        assert any("FLOAT32, not 8-bit quantised" in reason for reason in check["reasons"]), variant


def test_edgetpu_names_an_unsupported_operator(split):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.LeakyReLU(negative_slope=0.1)(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    content = tflite_export.convert(model, ["int8"], np.random.default_rng(0).random((8, 8, 8, 3), np.float32))["int8"]
    check = tflite_export.check_edgetpu(content)
    assert not check["passed"] and check["unsupported_ops"] == ["LEAKY_RELU"]
    assert check["first_unsupported_op"] == 1
    assert any("LEAKY_RELU is not supported" in reason for reason in check["reasons"])
    assert edgetpu.REFERENCE.startswith("https://coral.ai/")


def test_transfer_robustness_at_zero_epsilon_equals_clean_accuracy(trained_model, files, split):
    runners = {"int8": LiteRTModel(files["int8"])}
    result = tflite_export.transfer_robustness(
        trained_model, runners, split.x_val[:64], split.y_val[:64], epsilon=0.0, steps=2
    )
    assert result["keras"]["robust_accuracy"] == result["keras"]["clean_accuracy"]
    assert result["int8"]["transfer_robust_accuracy"] == result["int8"]["clean_accuracy"]


def test_pgd_examples_stay_in_the_ball_and_hurt(trained_model, split):
    x = split.x_val[:64] / 255.0
    x_adv = tflite_export.pgd_examples(trained_model, x, split.y_val[:64], epsilon=8 / 255, steps=3)
    assert np.abs(x_adv - x).max() <= 8 / 255 + 1e-6 and 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    clean = np.mean(trained_model.predict(x, verbose=0).argmax(-1) == split.y_val[:64])
    robust = np.mean(trained_model.predict(x_adv, verbose=0).argmax(-1) == split.y_val[:64])
    assert robust < clean


def test_export_and_verify_writes_files_and_report(trained_model, split, tmp_path):
    report = tflite_export.export_and_verify(
        trained_model,
        split,
        str(tmp_path),
        variants=["float32", "int8"],
        representative_size=50,
        eval_size=100,
        latency_runs=5,
        micro_images=20,
        robust_size=32,
        pgd_steps=2,
    )
    assert sorted(os.listdir(tmp_path)) == [
        "export_report.json",
        "export_report.md",
        "model_float32.tflite",
        "model_int8.tflite",
    ]
    with open(tmp_path / "export_report.json") as f:
        assert json.load(f) == json.loads(json.dumps(report))
    assert report["data"]["val_images"] == 100 and report["micro"]["outputs_match"]
    assert report["edgetpu"]["int8"]["passed"] and not report["edgetpu"]["float32"]["passed"]
    assert set(report["robustness"]) >= {"keras", "float32", "int8"}
    assert report["criteria"]["float32 max abs logit diff <= 0.0001"]["passed"]
    markdown = (tmp_path / "export_report.md").read_text()
    assert "| model_int8.tflite |" in markdown and "tensor arena" in markdown


def test_export_and_verify_rejects_a_gated_model(split, tmp_path):
    gated = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=4))
    with pytest.raises(ValueError, match=r"tfrobustprune.strip\(model\).*Received: \d+ ChannelGate layers"):
        tflite_export.export_and_verify(gated, split, str(tmp_path))


def test_binary_strips_and_exports(split, tmp_path):
    from tflite_export import __main__ as cli

    keras.utils.set_random_seed(0)
    gated = tfrobustprune.gate(tfrobustprune.models.cifar_resnet(depth=8, width=4))
    tfrobustprune.budget.close_to_target(gated, "macs", 0.7)
    gated.save(tmp_path / "gated.keras")
    loaded = cli.load_model(str(tmp_path / "gated.keras"))
    assert not tfrobustprune.gate_layers(loaded)
    assert loaded.count_params() == tfrobustprune.strip(gated).count_params()
    loaded.save(tmp_path / "stripped.keras")
    out = tmp_path / "out"
    argv = [
        "tflite_export",
        f"--model={tmp_path / 'stripped.keras'}",
        f"--out={out}",
        "--variants=int8",
        "--eval_size=50",
        "--representative_size=20",
        "--latency_runs=5",
        "--micro_images=20",
        "--robust_size=16",
        "--pgd_steps=1",
    ]
    with flagsaver.flagsaver():
        flags.FLAGS(argv)
        cli.main([])
    with open(out / "export_report.json") as f:
        report = json.load(f)
    assert report["variants"]["int8"]["file"] == "model_int8.tflite"
    assert report["micro"]["arena_bytes"] > 0


def test_export_and_verify_rejects_negative_sizes(trained_model, split, tmp_path):
    with pytest.raises(ValueError, match=r"Received: micro_images=-1"):
        tflite_export.export_and_verify(trained_model, split, str(tmp_path), micro_images=-1)
