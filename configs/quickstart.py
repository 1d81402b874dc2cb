"""Quickstart: ResNet20 on the CIFAR-10 sample shipped in the package, halving MACs, offline in minutes.

    python -m tfrobustprune.train --config=configs/quickstart.py --workdir=/tmp/quickstart

The sample has 2,000 training and 500 validation images, so accuracy is low; the
point is the whole pipeline: gates, FGSM-RS training with the hardware loss, the
target met exactly, stripping, and a report.
"""

import ml_collections

from configs import common


def get_config(arg=None):
    """Returns the quickstart config; `arg` may set `epochs=N`, `target=R`, `cost=params|macs`."""
    arg = common.parse_arg(arg, epochs=12, target=0.5, cost="macs")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.deterministic = False  # True: op determinism, bit-identical reruns and resumes (slower)

    # Data section
    config.data = dict(source="sample", path="", name="cifar10", val_size=5000, train_size=0, eval_size=0)

    # Model section
    config.model_name = "resnet20"
    config.model = dict(width=16)
    config.gates = dict(min_channels=1, min_fraction=0.1, init_logit=1.0)

    # Adversarial training section
    config.attack = dict(name="fgsm_rs", epsilon=8 / 255, step=10 / 255, pgd_steps=10)  # step = 1.25 * epsilon

    # Optimizer and pruning section
    config.train = dict(
        epochs=arg.epochs,
        batch_size=128,
        learning_rate=0.1,
        lr_warmup_epochs=2,
        momentum=0.9,
        weight_decay=5e-4,
        weight_decay_mode="decoupled",  # Keras SGD; "coupled" adds it to the gradient (torch.optim.SGD)
        cost=arg.cost,
        target_ratio=arg.target,
        hw_loss="two_sided",
        lambda_max=2.0,
        lambda_warmup_epochs=1,
        lambda_ramp_epochs=2,
        # Few steps per epoch on the sample: larger gate steps than on full CIFAR-10.
        gate_learning_rate=0.05,
        freeze_epoch=arg.epochs - 4,  # the last epochs train weights only
        jit_compile=common.jit_compile_field("auto"),  # Keras' choice: XLA on an accelerator, not on a CPU
        verbose=2,
    )

    # Guard and eval section
    config.guard = dict(probe_size=200, probe_steps=5, max_drop=0.2, max_attack_gap=0.2)
    config.eval = dict(pgd_steps=10, pgd_step=2 / 255, size=0)
    config.export = dict(tflite=False, representative_size=200)
    return config
