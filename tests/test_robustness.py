"""Tests of `tfrobustprune.robustness`: attack names, PGD restarts, worst case, sanity checks, ART cross-check."""

import json

import keras
import numpy as np
import pytest
from helpers import small_cnn
from keras import ops

import tfrobustprune
from tfrobustprune import robustness


@pytest.fixture(scope="module")
def sample():
    split = tfrobustprune.data.load_sample()
    return split.x_val[:200], split.y_val[:200]


def test_parse_attack_names():
    assert robustness.parse_attack("fgsm") == robustness.AttackSpec("fgsm", "fgsm", 1)
    assert robustness.parse_attack("pgd10") == robustness.AttackSpec("pgd10", "pgd", 10, 1)
    assert robustness.parse_attack("pgd50x10") == robustness.AttackSpec("pgd50x10", "pgd", 50, 10)
    assert robustness.parse_attack("apgd_ce") == robustness.AttackSpec("apgd_ce", "apgd_ce", 100, 1)
    assert robustness.parse_attack("apgd_t", apgd_targets=3) == robustness.AttackSpec("apgd_t", "apgd_t", 100, 3)
    assert robustness.parse_attack("apgd_ce20").steps == 20
    assert robustness.parse_attack("pgd50x10").gradient_steps == 500


@pytest.mark.parametrize("name", ["pgd", "pgd0", "pgd10x0", "apgd", "cw", ""])
def test_parse_attack_rejects_bad_names(name):
    with pytest.raises(ValueError, match=r"Received: attack="):
        robustness.parse_attack(name)


def test_parse_attacks_rejects_duplicates():
    assert [s.name for s in robustness.parse_attacks("fgsm, pgd10")] == ["fgsm", "pgd10"]
    with pytest.raises(ValueError, match=r"Received: attacks=\['pgd10', 'pgd10'\]"):
        robustness.parse_attacks("pgd10,pgd10")


@pytest.mark.parametrize("kind", ["fgsm", "pgd", "apgd_ce", "apgd_t"])
def test_attacks_stay_in_the_ball_and_in_range(sample, kind):
    x, y = sample
    x = np.concatenate([x[:6] / 255.0, np.zeros((1, 32, 32, 3)), np.ones((1, 32, 32, 3))]).astype("float32")
    y = np.concatenate([y[:6], y[:2]])
    logits_of = robustness.logits_function(small_cnn())
    spec = robustness.AttackSpec(kind, kind, 5, 2 if kind == "apgd_t" else 1)
    targets = robustness.apgd_lib.top_targets(logits_of(x), 2) if kind == "apgd_t" else None
    epsilon = 8 / 255
    x_adv = np.asarray(
        robustness.craft(spec, logits_of, x, y, epsilon, 2 / 255, run=1 if targets is not None else 0, targets=targets)
    )
    assert np.max(np.abs(x_adv - x)) <= epsilon + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_evaluation_is_deterministic_with_a_seed(trained_cnn, sample):
    x, y = sample
    runs = [
        robustness.evaluate_robustness(trained_cnn, x[:64], y[:64], "pgd3x2,apgd_ce5", 8 / 255, seed=s, checks=False)
        for s in (1, 1)
    ]
    for name in ("pgd3x2", "apgd_ce5"):
        np.testing.assert_array_equal(runs[0].robust[name], runs[1].robust[name])


def test_an_example_is_robust_only_if_it_survives_every_restart(trained_cnn, sample):
    x, y = sample
    x = x.astype("float32") / 255.0
    logits_of = robustness.logits_function(trained_cnn)
    clean = robustness.predict_labels(logits_of, x, 256) == y
    one = robustness.robust_under(robustness.parse_attack("pgd5"), logits_of, logits_of, x, y, clean, 4 / 255, 1 / 255)
    three = robustness.robust_under(
        robustness.parse_attack("pgd5x3"), logits_of, logits_of, x, y, clean, 4 / 255, 1 / 255
    )
    assert not np.any(three & ~one)  # restart 0 is the single-start attack, later restarts can only remove examples
    assert not np.any(three & ~clean)


def test_report_on_a_trained_model(trained_cnn, sample):
    x, y = sample
    report = robustness.evaluate_robustness(
        trained_cnn, x, y, "fgsm,pgd10,pgd10x2,apgd_ce10,apgd_t10", epsilon=4 / 255, step=1 / 255, apgd_targets=3
    )
    acc = report.robust_accuracy
    assert list(acc) == ["fgsm", "pgd10", "pgd10x2", "apgd_ce10", "apgd_t10"]
    assert report.worst_case_accuracy <= min(acc.values()) <= max(acc.values()) <= report.natural_accuracy
    worst = np.logical_and.reduce(list(report.robust.values()))
    assert report.worst_case_accuracy == pytest.approx(worst.mean())
    assert acc["pgd10"] <= acc["fgsm"]
    statuses = {c["name"]: c["status"] for c in report.checks}
    assert statuses["eps0_is_natural"] == "pass"
    assert statuses["more_steps_not_weaker"] == "pass"
    assert statuses["multi_step_at_most_fgsm"] == "pass"
    assert statuses["large_budget_breaks_model"] == "pass"
    assert report.warnings == []
    text = json.dumps(report.to_json())
    assert "worst_case_accuracy" in text and "worst case" in report.table()


def test_eps0_gives_the_natural_accuracy(trained_cnn, sample):
    x, y = sample
    report = robustness.evaluate_robustness(
        trained_cnn, x[:100], y[:100], "fgsm,pgd5,apgd_ce5", epsilon=0.0, checks=False
    )
    for acc in report.robust_accuracy.values():
        assert acc == report.natural_accuracy


def test_sanity_checks_flag_the_signs_of_gradient_masking():
    specs = robustness.parse_attacks("fgsm,pgd10,pgd50x10")
    # FGSM stronger than PGD, and more restarts raise accuracy: both are masking signs.
    checks, warnings = robustness.sanity_checks(
        0.8,
        {"fgsm": 0.2, "pgd10": 0.5, "pgd50x10": 0.7},
        specs,
        1000,
        8 / 255,
        eps0_accuracy=0.8,
        large_accuracy=0.6,
        large_n=200,
    )
    statuses = {c["name"]: c["status"] for c in checks}
    assert statuses["multi_step_at_most_fgsm"] == "fail"
    assert statuses["more_steps_not_weaker"] == "fail"
    assert statuses["large_budget_breaks_model"] == "fail"
    assert statuses["eps0_is_natural"] == "pass"
    assert sum("masking" in w for w in warnings) == 3
    # Within noise: no warning.
    checks, warnings = robustness.sanity_checks(
        0.8,
        {"fgsm": 0.5, "pgd10": 0.41, "pgd50x10": 0.42},
        specs,
        1000,
        8 / 255,
        eps0_accuracy=0.8,
        large_accuracy=0.0,
        large_n=200,
    )
    assert warnings == [] and all(c["status"] in ("pass", "skip") for c in checks)


def test_a_model_without_gradients_raises_a_masking_warning(trained_cnn, sample):
    # Input quantisation behind stop_gradient: the shattered-gradient defence of Athalye et al. (2018).
    inputs = keras.Input((32, 32, 3))
    quantized = keras.layers.Lambda(lambda t: ops.stop_gradient(ops.round(t * 8.0) / 8.0))(inputs)
    masked = keras.Model(inputs, trained_cnn(quantized))
    x, y = sample
    report = robustness.evaluate_robustness(masked, x, y, "fgsm,pgd10", epsilon=8 / 255)
    assert report.robust_accuracy["fgsm"] == report.natural_accuracy  # no gradient, no move
    assert any("masking" in w for w in report.warnings)


def test_rejects_bad_arguments(trained_cnn, sample):
    x, y = sample
    with pytest.raises(ValueError, match=r"Received: epsilon=2"):
        robustness.evaluate_robustness(trained_cnn, x, y, "fgsm", epsilon=2)
    with pytest.raises(ValueError, match=r"Received: 200 images, 3 labels"):
        robustness.evaluate_robustness(trained_cnn, x, y[:3], "fgsm")
    with pytest.raises(ValueError, match=r"Received: model=None"):
        robustness.evaluate_robustness(None, x, y, "fgsm")


def test_our_pgd_agrees_with_art(trained_cnn, sample):
    pytest.importorskip("art")
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    x, y = sample
    x = x.astype("float32") / 255.0
    epsilon, step, steps = 4 / 255, 1 / 255, 5
    logits_of = robustness.logits_function(trained_cnn)
    ours = robustness.robust_under(
        robustness.parse_attack(f"pgd{steps}"), logits_of, logits_of, x, y, np.ones(len(x), bool), epsilon, step
    ).mean()
    classifier = TensorFlowV2Classifier(
        trained_cnn,
        nb_classes=10,
        input_shape=(32, 32, 3),
        clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    attack = ProjectedGradientDescent(
        classifier, eps=epsilon, eps_step=step, max_iter=steps, num_random_init=1, verbose=False
    )
    np.random.seed(0)
    x_art = attack.generate(x=x, y=keras.utils.to_categorical(y, 10))
    theirs = np.mean(np.argmax(classifier.predict(x_art), -1) == y)
    assert abs(ours - theirs) <= 0.015 + 1e-9
