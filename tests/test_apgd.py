"""Tests of `tfrobustprune.apgd`: schedule, DLR losses, eps-ball, determinism, strength against PGD."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import small_cnn

import tfrobustprune
from tfrobustprune import apgd, robustness


@pytest.fixture(scope="module")
def sample():
    split = tfrobustprune.data.load_sample()
    return split.x_val[:200].astype("float32") / 255.0, split.y_val[:200]


def test_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06) (Croce and Hein, 2020).
    assert apgd.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd.checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert apgd.checkpoints(1) == [1]


def test_dlr_losses_by_hand():
    logits = tf.constant([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -1.0]])
    y = tf.constant([0, 0])
    # Correct: -(z_y - second) / (top1 - top3); wrong: -(z_y - top1) / (top1 - top3).
    np.testing.assert_allclose(apgd.dlr(logits, y).numpy(), [-2.0 / 3.0, 2.0 / 2.0], rtol=1e-5)
    target = tf.constant([2, 1])
    # -(z_y - z_t) / (top1 - (top3 + top4) / 2)
    np.testing.assert_allclose(apgd.dlr_targeted(logits, y, target).numpy(), [-3.0 / 3.5, 2.0 / 2.5], rtol=1e-5)


def test_dlr_is_invariant_to_shift_and_scale():
    logits = tf.random.stateless_normal([8, 10], seed=[1, 2])
    y = tf.range(8) % 10
    target = (y + 3) % 10
    for fn in (lambda z: apgd.dlr(z, y), lambda z: apgd.dlr_targeted(z, y, target)):
        np.testing.assert_allclose(fn(logits).numpy(), fn(7.0 * logits - 3.0).numpy(), rtol=1e-4, atol=1e-5)


def test_top_targets_are_ranked_below_the_top_class():
    logits = tf.constant([[0.1, 0.9, 0.5, 0.7, 0.0]])
    np.testing.assert_array_equal(apgd.top_targets(logits, 3).numpy(), [[3, 2, 0]])
    with pytest.raises(ValueError, match=r"Received: num_targets=5"):
        apgd.top_targets(logits, 5)


def test_apgd_rejects_bad_arguments(sample):
    x, y = sample
    model = small_cnn()
    with pytest.raises(ValueError, match=r"Received: loss='mse'"):
        apgd.apgd(model, x[:2], y[:2], 8 / 255, loss="mse")
    with pytest.raises(ValueError, match=r"Received: loss='dlr_targeted', target=None"):
        apgd.apgd(model, x[:2], y[:2], 8 / 255, loss="dlr_targeted")
    with pytest.raises(ValueError, match=r"Received: steps=0"):
        apgd.apgd(model, x[:2], y[:2], 8 / 255, steps=0)


@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr_targeted"])
def test_apgd_stays_in_the_ball_and_in_range(sample, loss):
    x, y = sample
    x = np.concatenate([x[:6], np.zeros_like(x[:1]), np.ones_like(x[:1])])  # pixels on both edges of [0, 1]
    y = np.concatenate([y[:6], y[:2]])
    logits_of = robustness.logits_function(small_cnn())
    target = apgd.top_targets(logits_of(x), 1)[:, 0] if loss == "dlr_targeted" else None
    epsilon = 8 / 255
    x_adv, fooled = apgd.apgd(logits_of, x, y, epsilon, steps=10, loss=loss, target=target)
    x_adv = x_adv.numpy()
    assert x_adv.shape == x.shape and fooled.shape == (len(x),)
    assert np.max(np.abs(x_adv - x)) <= epsilon + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_apgd_is_deterministic_with_a_seed(sample):
    x, y = sample
    logits_of = robustness.logits_function(small_cnn())
    first = apgd.apgd(logits_of, x[:16], y[:16], 8 / 255, steps=5, seed=3)[0].numpy()
    again = apgd.apgd(logits_of, x[:16], y[:16], 8 / 255, steps=5, seed=3)[0].numpy()
    other = apgd.apgd(logits_of, x[:16], y[:16], 8 / 255, steps=5, seed=4)[0].numpy()
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)


def test_apgd_targeted_stays_in_the_ball(sample):
    x, y = sample
    logits_of = robustness.logits_function(small_cnn())
    x_adv, fooled = apgd.apgd_targeted(logits_of, x[:8], y[:8], 4 / 255, steps=5, num_targets=2)
    assert np.max(np.abs(x_adv.numpy() - x[:8])) <= 4 / 255 + 1e-6
    assert fooled.dtype == tf.bool


def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(trained_cnn, sample):
    x, y = sample
    epsilon, steps = 4 / 255, 20
    logits_of = robustness.logits_function(trained_cnn)
    clean = robustness.predict_labels(logits_of, x, 256) == y
    pgd = robustness.AttackSpec("pgd20", "pgd", steps)
    apgd_ce = robustness.AttackSpec("apgd_ce20", "apgd_ce", steps)
    acc_pgd = robustness.robust_under(pgd, logits_of, logits_of, x, y, clean, epsilon, epsilon / 4).mean()
    acc_apgd = robustness.robust_under(apgd_ce, logits_of, logits_of, x, y, clean, epsilon, epsilon / 4).mean()
    assert 0.05 < acc_pgd < clean.mean()  # a trained model the budget does not break completely
    assert acc_apgd <= acc_pgd
