"""ResNet20 on CIFAR-10 (45,000 train / 5,000 validation), FGSM-RS, cost target from `arg`.

    python -m tfrobustprune.train --config=configs/resnet20_cifar10.py --workdir=runs/r20_macs50
    python -m tfrobustprune.train --config=configs/resnet20_cifar10.py:cost=params,target=0.584 \
        --config.data.path=../shared/data/cifar10 --workdir=runs/r20_0.16M
    python -m tfrobustprune.train --config=configs/resnet20_cifar10.py:quick --workdir=/tmp/r20_quick

`target=0.584` is 0.16M of the dense 274,042 parameters and `target=0.146` is 0.04M
(the two sizes of Vemparala et al., 2021). Data: `data.source='npz'` reads a
directory of `.npz` files (../shared/data/cifar10 by default), `'tfds'` reads
tensorflow-datasets' `cifar10`.
"""

import ml_collections

from configs import common


def get_config(arg=None):
    """Returns the config; `arg`: `quick`, `epochs=N`, `target=R`, `cost=params|macs`, `attack=NAME`."""
    arg = common.parse_arg(arg, quick=False, epochs=30, target=0.5, cost="macs", attack="fgsm_rs")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.deterministic = False  # True: op determinism, bit-identical reruns and resumes (slower)

    # Data section
    config.data = dict(
        source="npz", path="../shared/data/cifar10", name="cifar10", val_size=5000, train_size=0, eval_size=0
    )

    # Model section
    config.model_name = "resnet20"
    config.model = dict(width=16)
    config.gates = dict(min_channels=1, min_fraction=0.1, init_logit=1.0)

    # Adversarial training section
    config.attack = dict(name=arg.attack, epsilon=8 / 255, step=0.0, pgd_steps=10)  # step 0: the attack's default

    # Optimizer and pruning section
    epochs = 1 if arg.quick else arg.epochs
    config.train = dict(
        epochs=epochs,
        batch_size=128,
        learning_rate=0.2,  # fast AT (Wong et al. 2020): one cycle up to 0.2
        lr_warmup_epochs=max(1, epochs // 5),
        momentum=0.9,
        weight_decay=5e-4,
        cost=arg.cost,
        target_ratio=arg.target,
        hw_loss="two_sided",
        lambda_max=2.0,
        lambda_warmup_epochs=1,
        lambda_ramp_epochs=max(1, epochs // 6),
        gate_learning_rate=0.01,
        freeze_epoch=max(1, int(0.6 * epochs)),  # gates settle in the first 60%, then weights only
        verbose=2,
    )

    # Guard and eval section
    config.guard = dict(probe_size=512, probe_steps=5, max_drop=0.2)
    config.eval = dict(pgd_steps=10, pgd_step=2 / 255, size=0)
    config.export = dict(tflite=False, representative_size=500)

    if arg.quick:  # a smoke run: small subsets, a few minutes
        config.data.train_size, config.data.eval_size = 2048, 512
        config.guard.probe_size = 128
    return config
