import json
import os

import pytest
from helpers import load_benchmark


@pytest.fixture(scope="module")
def co_diagnosis():
    return load_benchmark("co_diagnosis")


@pytest.mark.parametrize(
    "natural,training_attack,fgsm,pgd10,expected",
    [
        (0.31, 0.63, 0.34, 0.0, True),  # label leaking: better on its own perturbations than on clean images
        (0.38, 0.35, 0.35, 0.002, True),  # single-step attacks barely hurt, PGD wipes it out
        (0.66, 0.45, 0.42, 0.38, False),  # a robust model
        (0.60, 0.05, 0.04, 0.01, False),  # not robust at all, but single-step attacks work: no CO
        (0.10, 0.07, 0.06, 0.01, False),  # at chance: untrained, not overfitted
    ],
)
def test_co_verdict(co_diagnosis, natural, training_attack, fgsm, pgd10, expected):
    assert co_diagnosis.co_verdict(natural, training_attack, fgsm, pgd10) is expected


def test_attack_in_force_follows_the_guards_fallback(co_diagnosis, tmp_path):
    from configs import resnet20_cifar10

    config = resnet20_cifar10.get_config("attack=n_fgsm")
    in_force = co_diagnosis.attack_in_force(config, str(tmp_path), epoch=5)
    assert in_force == ("n_fgsm", None, 10, None, "config", None)
    os.makedirs(tmp_path / "backup")
    (tmp_path / "backup" / "guard.json").write_text(json.dumps({"best_acc": 0.2, "best_epoch": 1, "fallback_at": 3}))
    in_force = co_diagnosis.attack_in_force(config, str(tmp_path), epoch=5)
    assert (in_force.name, in_force.pgd_steps, in_force.reason, in_force.fallback_at) == (
        "pgd",
        config.guard.fallback_steps,
        "fallback",
        4,
    )
    assert in_force.step == pytest.approx(config.attack.epsilon / config.guard.fallback_steps)


@pytest.mark.parametrize("epoch,expected", [(1, "pgd"), (6, "pgd"), (7, "n_fgsm")])
def test_attack_in_force_follows_the_pgd_warmup(co_diagnosis, tmp_path, epoch, expected):
    from configs import resnet20_cifar10

    config = resnet20_cifar10.get_config("attack=n_fgsm,pgd_warmup=6,noise_eps=1")
    in_force = co_diagnosis.attack_in_force(config, str(tmp_path), epoch=epoch)
    assert in_force.name == expected
    assert in_force.reason == ("pgd_warmup" if expected == "pgd" else "config")
    # the noise the run chose reaches the rebuilt attack; PGD has none
    assert in_force.noise == (pytest.approx(config.attack.epsilon) if expected == "n_fgsm" else None)
