import keras
import pytest

import tfrobustprune
from tfrobustprune import analyze, models


def test_resnet20_groups():
    graph = analyze(models.resnet20())
    prunable = graph.prunable_groups
    streams = [g for g in prunable if g.name.startswith("stream:")]
    inner = [g for g in prunable if not g.name.startswith("stream:")]
    assert [g.width for g in streams] == [16, 32, 64]
    assert len(inner) == 9  # one per block
    assert sorted(g.width for g in inner) == [16] * 3 + [32] * 3 + [64] * 3
    stage2 = streams[1]
    producers = {name for name, role in stage2.members if role == "out"}
    assert producers == {
        "stage2_block1_proj_conv",
        "stage2_block1_2_conv",
        "stage2_block2_2_conv",
        "stage2_block3_2_conv",
    }
    assert set(stage2.gate_after) == {
        "stage2_block1_proj_bn",
        "stage2_block1_2_bn",
        "stage2_block2_2_bn",
        "stage2_block3_2_bn",
    }
    # The logits and the input are never pruned.
    fixed = {g.name: g.reason for g in graph.groups if not g.prunable}
    assert "model output" in fixed["logits"]


def test_gate_places_one_shared_gate_per_group():
    gated = tfrobustprune.gate(models.resnet20(), min_fraction=0.25)
    gates = tfrobustprune.gate_layers(gated)
    assert len(gates) == 12
    stage3_gate = gated.get_layer("gate_stream_stage3_block1_proj_conv")
    # Called after the projection BN and after every block's second BN of the stage.
    assert len(stage3_gate._inbound_nodes) == 4
    assert stage3_gate.min_channels == 16  # ceil(0.25 * 64)


def test_gating_keeps_the_function(tiny_model, images):
    gated = tfrobustprune.gate(tiny_model)
    keras.ops.convert_to_numpy(gated(images))
    assert abs(gated.predict(images, verbose=0) - tiny_model.predict(images, verbose=0)).max() < 1e-5


def test_non_zero_preserving_activation_makes_group_fixed():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("sigmoid", name="sig")(x)
    x = keras.layers.Conv2D(4, 3, name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    graph = analyze(model)
    conv_group = next(g for g in graph.groups if g.name == "conv")
    assert not conv_group.prunable and "sig" in conv_group.reason


def test_flatten_consumer_makes_group_fixed():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    assert not next(g for g in analyze(model).groups if g.name == "conv").prunable


def test_analyze_rejects_subclassed_models():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional"):
        analyze(Net())


def test_gate_rejects_already_gated_model(tiny_gated_model):
    with pytest.raises(ValueError, match="already has channel gates"):
        tfrobustprune.gate(tiny_gated_model)
