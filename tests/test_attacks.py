import numpy as np
import pytest
import tensorflow as tf

from tfrobustprune import attacks

EPS = 8 / 255


@pytest.fixture
def loss_of(tiny_model, labels):
    return attacks.cross_entropy_of(tiny_model, tf.constant(labels), training=False)


@pytest.mark.parametrize("name", ["fgsm", "fgsm_rs", "pgd"])
def test_attacks_stay_in_the_ball_and_the_image_range(name, loss_of, images):
    x = tf.constant(images)
    x_adv = attacks.make_training_attack(name, EPS, steps=3)(loss_of, x).numpy()
    assert np.abs(x_adv - images).max() <= EPS + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - images).max() > EPS / 2  # it moved


def test_n_fgsm_is_unprojected_but_bounded(loss_of, images):
    x_adv = attacks.make_training_attack("n_fgsm", EPS)(loss_of, tf.constant(images)).numpy()
    assert np.abs(x_adv - images).max() <= 3 * EPS + 1e-6  # noise 2 eps + step eps
    assert np.abs(x_adv - images).max() > EPS  # no projection to the eps-ball
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_pgd_raises_the_loss(loss_of, images):
    x = tf.constant(images)
    tf.random.set_seed(0)
    x_adv = attacks.pgd(loss_of, x, EPS, 2 / 255, 5)
    assert float(loss_of(x_adv)) > float(loss_of(x))


def test_none_and_zero_epsilon_return_the_input(loss_of, images):
    x = tf.constant(images)
    assert attacks.make_training_attack("none", EPS)(loss_of, x) is x
    assert attacks.make_training_attack("pgd", 0.0)(loss_of, x) is x


def test_unknown_attack_and_bad_epsilon_are_rejected():
    with pytest.raises(ValueError, match=r"Received: attack='cw'"):
        attacks.make_training_attack("cw", EPS)
    with pytest.raises(ValueError, match=r"Received: epsilon=2"):
        attacks.make_training_attack("pgd", 2)


def test_default_steps():
    assert attacks.default_step("fgsm_rs", EPS) == pytest.approx(10 / 255)
    assert attacks.default_step("pgd", EPS) == pytest.approx(2 / 255)


def test_pgd_k_splits_the_budget_into_k_steps():
    spec = attacks.pgd_k(EPS, 2)
    assert spec == {"attack": "pgd", "step": pytest.approx(4 / 255), "pgd_steps": 2}
    assert attacks.pgd_k(EPS, np.int64(4))["pgd_steps"] == 4
    for bad in (0, 1.5, -2, True, None, "2"):
        with pytest.raises(ValueError, match=rf"Received: steps={bad!r}"):
            attacks.pgd_k(EPS, bad)
    with pytest.raises(ValueError, match=r"Received: epsilon=8"):
        attacks.pgd_k(8, 2)


def test_n_fgsm_noise_sets_the_random_start_and_belongs_to_n_fgsm_alone(loss_of, images):
    x = tf.constant(images)
    # noise 0: no random start, so N-FGSM is one unprojected FGSM step of size eps.
    no_noise = attacks.make_training_attack("n_fgsm", EPS, noise=0.0)(loss_of, x).numpy()
    fgsm = attacks.fgsm(loss_of, x, EPS).numpy()
    np.testing.assert_allclose(no_noise, fgsm, atol=1e-6)
    seed = tf.constant([3, 4])
    one_eps = attacks.make_training_attack("n_fgsm", EPS, noise=EPS)(loss_of, x, seed=seed).numpy()
    assert np.abs(one_eps - images).max() <= 2 * EPS + 1e-6  # noise eps + step eps
    assert np.abs(one_eps - images).max() > 1.5 * EPS
    default = attacks.make_training_attack("n_fgsm", EPS)(loss_of, x, seed=seed).numpy()
    two_eps = attacks.make_training_attack("n_fgsm", EPS, noise=2 * EPS)(loss_of, x, seed=seed).numpy()
    np.testing.assert_array_equal(default, two_eps)  # None is the paper's 2 eps
    with pytest.raises(ValueError, match=r"N-FGSM's alone.*Received: attack='fgsm_rs', noise=0.03"):
        attacks.make_training_attack("fgsm_rs", EPS, noise=0.03)
    with pytest.raises(ValueError, match=r"Received: noise=-0.1"):
        attacks.make_training_attack("n_fgsm", EPS, noise=-0.1)
