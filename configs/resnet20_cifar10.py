"""ResNet20 on CIFAR-10 (45,000 train / 5,000 validation), N-FGSM, cost target from `arg`.

    python -m tfrobustprune.train --config=configs/resnet20_cifar10.py --workdir=runs/r20_macs50
    python -m tfrobustprune.train --config=configs/resnet20_cifar10.py:cost=params,target=0.584 \
        --config.data.path=../shared/data/cifar10 --workdir=runs/r20_0.16M
    python -m tfrobustprune.train --config=configs/resnet20_cifar10.py:quick --workdir=/tmp/r20_quick
    python -m tfrobustprune.train --config=configs/resnet20_cifar10.py:dense,epochs=20 --workdir=runs/r20_dense
    python -m tfrobustprune.train --config=configs/resnet20_cifar10.py:dense,epochs=10,init_model=pruned.keras \
        --workdir=runs/r20_finetune

`target=0.584` is 0.16M of the dense 274,042 parameters and `target=0.146` is 0.04M
(the two sizes of Vemparala et al., 2021). `dense` trains without pruning (gates
frozen open from the start, no hardware loss): the fast-adversarial-training
baseline. `init_model=PATH` starts from a saved `.keras` classifier instead of a
new ResNet20, e.g. to fine-tune a model pruned after training. `width=W` sets the
ResNet20's base width (16): `dense,width=6` is a uniformly narrow ResNet20 of
39,532 parameters (the 0.04M size) trained from scratch, the baseline a pruning
method has to beat (Liu et al., 2019, "Rethinking the value of network pruning"). Data: `data.source='npz'` reads a
directory of `.npz` files (../shared/data/cifar10 by default), `'tfds'` reads
tensorflow-datasets' `cifar10`.

The training attack is N-FGSM (de Jorge et al., 2022: noise 2 eps, step eps, no
projection), one gradient like FGSM-RS. With FGSM-RS (Wong et al., 2020) all three of
our full ResNet20 runs overfitted catastrophically in epoch 2-3 (training FGSM
accuracy at the level of natural validation accuracy, PGD-5 probe accuracy
0.6-2%), at peak learning rates 0.2 and 0.1 alike, and again at 0.2 with coupled
weight decay (epoch 2, PGD-5 probe 0.2%); `attack=fgsm_rs` restores it.
`attack=pgd2` (any `pgdK`) trains with K-step PGD, step eps / K, from the start:
1.5x the cost of an N-FGSM epoch for K = 2. `noise_eps=K` sets N-FGSM's noise
half-width to K eps (default 2; de Jorge et al. also study 1 and 3;
`config.attack.noise`). `step_eps=K` sets the step of N-FGSM or FGSM-RS to K eps
(defaults 1 and 1.25; `config.attack.step`): `attack=fgsm_rs,step_eps=1` is N-FGSM
with 1 eps of noise whose perturbation is then projected to the eps-ball.

The gates' method (measured on full CIFAR-10 in BENCHMARKS.md, the paper table):
`gate_start=N` trains N dense epochs before the hardware loss starts (default: a
third of the epochs, 10 of 30; the gates hold still until then, the target glide
and the freeze are laid out over the remaining epochs; `gate_start=0`: one
warm-up epoch). `sensitivity=S` sets the gates' `cost_sensitivity` (default 0:
every channel charged the mean cost; 1: its own marginal cost, the exact
gradient). `importance=P` sets their `importance_pressure` (default 1: a channel
whose filters have half the mean L1 norm of its group's open channels is pushed
twice as hard to close; 0: off) and `center=1` (default) their
`center_task_gradient` (RobustPruneModel): the between-group signal the task
gradient lacks (benchmarks/gate_gradient_bias.py). At 0.16M parameters, with
the decoupled weight decay of that time, these defaults cut every stage, as L1
filter pruning does, and reached 67.44% natural / 39.56% PGD-10 with 20.8M MACs;
the earlier defaults (`gate_start=0,sensitivity=1,importance=0,center=0`) cut
only the stage-3 residual stream and reached 65.60% / 38.16% with 33.6M MACs.

Weight decay 5e-4 is `decay=coupled` by default: L2 added to the gradients
before momentum, as torch.optim.SGD in the recipes this config follows (Keras'
`SGD(weight_decay=...)`, `decay=decoupled`, is about 10x weaker under momentum
0.9). At 0.16M parameters it raised ours from 67.44% / 39.56% to 70.60% /
41.46% (BENCHMARKS.md, the coupled table); runs before that default were
decoupled, so reproducing them needs `decay=decoupled`.

`train.jit_compile` is `auto`, Keras' default: XLA only on an accelerator.
On a CPU its effect depends on the CPU (benchmarks/xla_cost.py): on one 2-core
machine of this project XLA ran the gated step x1.10-1.19 faster, on another
(AMD EPYC, AVX-512) x0.66-0.69, and the stripped models x0.65-0.74, so XLA is
opt-in: `--config.train.jit_compile=true`, after timing it on the machine.
XLA draws other random starts than TensorFlow's kernels for the same seed; a
run may resume with it switched. It cannot be combined with `deterministic=True`
(Keras drops XLA under op determinism).

`strip` strips the model at the gate freeze (epoch 22 of 30) and trains the
stripped model for the remaining epochs: the same weights and learning-rate
schedule, without the cost of the closed channels (the momentum restarts at
the switch).
"""

import re

import ml_collections

from configs import common
from tfrobustprune import attacks, config_check

# The gates' method (RobustPruneModel options); a `dense` run moves no gate and records DENSE_GATE_METHOD.
GATE_METHOD = dict(sensitivity=0.0, importance=1.0, center=True)
# The library's defaults, which is also what a config written before these fields means: old dense runs stay reusable.
DENSE_GATE_METHOD = dict(
    sensitivity=config_check.OPTIONAL_FIELDS["train.cost_sensitivity"],
    importance=config_check.OPTIONAL_FIELDS["train.importance_pressure"],
    center=config_check.OPTIONAL_FIELDS["train.center_task_gradient"],
)


def _in_eps(arg, name, attacks):
    """Config arg `name`, a multiple of eps that only `attacks` use: checked >= 0, and 0 for any other attack."""
    value = arg[name]
    if value < 0 or (value and arg.attack not in attacks):
        raise ValueError(
            f"Config arg '{name}' must be >= 0, and 0 unless attack={' or '.join(attacks)}. Received: "
            f"{name}={value}, attack={arg.attack}"
        )
    return value


def get_config(arg=None):
    """Returns the config; `arg`: `quick`, `dense`, `epochs=N`, `target=R`, `cost=params|macs`, `attack=NAME`,
    `lr=PEAK`, `init_model=PATH`,
    `decay=coupled|decoupled`, `strip` (train the stripped model after the gate freeze),
    `sensitivity=S` (the gates' `cost_sensitivity`), `gate_start=N` (dense
    epochs before the hardware loss starts; default a third of the epochs, 0 a one-epoch warm-up),
    `importance=P` (the gates' `importance_pressure`), `center=0|1` (their `center_task_gradient`),
    `width=W` (the ResNet20's base width, 16 by default; e.g. `dense,width=6` trains a uniformly narrow one),
    `pgd_warmup=N` (the first N epochs with PGD-2, then the single-step attack; `guard.pgd_warmup_epochs`),
    `noise_eps=K` (N-FGSM's noise half-width in eps; 0: its default, 2),
    `step_eps=K` (N-FGSM's or FGSM-RS's step in eps; 0: the attack's default, 1 or 1.25)."""
    arg = common.parse_arg(
        arg,
        **GATE_METHOD,
        quick=False,
        dense=False,
        epochs=30,
        target=0.5,
        cost="macs",
        attack="n_fgsm",
        lr=0.2,
        init_model="",
        decay="coupled",
        strip=False,
        gate_start=-1,  # -1: a third of the epochs (none for `dense` and `quick`)
        width=16,
        pgd_warmup=0,
        noise_eps=0.0,
        step_eps=0.0,
    )
    if arg.width < 1:
        raise ValueError(f"Config arg 'width' must be >= 1. Received: width={arg.width}")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.deterministic = False  # True: op determinism, bit-identical reruns and resumes (slower)

    # Data section
    config.data = dict(
        source="npz", path="../shared/data/cifar10", name="cifar10", val_size=5000, train_size=0, eval_size=0
    )

    # Model section
    config.model_name = "resnet20"
    config.model = dict(width=arg.width)
    config.init_model = arg.init_model  # a .keras classifier to start from instead of model_name
    config.gates = dict(min_channels=1, min_fraction=0.1, init_logit=1.0)

    # Adversarial training section
    # step 0, noise 0: the attack's default (noise: N-FGSM's half-width, 2 eps)
    config.attack = dict(name=arg.attack, epsilon=8 / 255, step=0.0, pgd_steps=10, noise=0.0)
    config.attack.noise = _in_eps(arg, "noise_eps", ("n_fgsm",)) * config.attack.epsilon
    config.attack.step = _in_eps(arg, "step_eps", ("n_fgsm", "fgsm_rs")) * config.attack.epsilon
    pgd_k = re.fullmatch(r"pgd(\d+)", arg.attack)
    if pgd_k:  # `attack=pgdK`: K-step PGD with step eps / K (the guard's fallback attack), e.g. pgd2
        steps = int(pgd_k.group(1))
        if steps < 1:
            raise ValueError(f"Config arg 'attack': pgdK needs K >= 1. Received: attack={arg.attack!r}")
        spec = attacks.pgd_k(config.attack.epsilon, steps)
        config.attack.update(name=spec["attack"], step=spec["step"], pgd_steps=spec["pgd_steps"])

    # Optimizer and pruning section
    epochs = 1 if arg.quick else arg.epochs
    gate_start = arg.gate_start
    if gate_start == -1:
        gate_start = 0 if arg.dense else epochs // 3
    elif not 0 <= gate_start < epochs:
        raise ValueError(
            f"Config arg 'gate_start' must be in [0, epochs={epochs}) (or -1, a third of the epochs). "
            f"Received: gate_start={gate_start}"
        )
    if gate_start and arg.dense:
        raise ValueError(f"Config arg 'gate_start' has no meaning with 'dense'. Received: gate_start={gate_start}")
    method = {key: arg[key] for key in GATE_METHOD}
    if arg.dense:
        moved = sorted(key for key, value in method.items() if value != GATE_METHOD[key])
        if moved:
            raise ValueError(
                f"Config args {moved} set the gates' method; 'dense' moves no gate. Received: "
                + ",".join(f"{key}={method[key]}" for key in moved)
            )
        method = DENSE_GATE_METHOD
    pruned_epochs = epochs - gate_start  # epochs with the hardware loss on, or after it
    config.train = dict(
        epochs=epochs,
        batch_size=128,
        learning_rate=arg.lr,  # warm-up then cosine, peak 0.2 as in Wong et al. (2020) and de Jorge et al. (2022)
        lr_warmup_epochs=max(1, epochs // 5),
        momentum=0.9,
        weight_decay=5e-4,
        weight_decay_mode=arg.decay,
        cost=arg.cost,
        target_ratio=1.0 if arg.dense else arg.target,
        hw_loss="two_sided",
        # 1.0: each channel is charged its group's marginal cost; 0.0: the mean cost per channel (RobustPruneModel).
        cost_sensitivity=method["sensitivity"],
        # > 0: weak filters (relative L1 norm) feel more pressure; center: no net task push on any gate group.
        importance_pressure=method["importance"],
        center_task_gradient=method["center"],
        lambda_max=0.0 if arg.dense else 2.0,
        # The gates hold still while the loss weight is 0: `gate_start` dense epochs (0: one, unless there is one).
        lambda_warmup_epochs=gate_start or min(1, epochs - 1),
        lambda_ramp_epochs=max(1, pruned_epochs // 6),
        # The target glides from 1 to target_ratio over 40% of the pruned epochs, then the gates settle until the freeze.
        target_glide_epochs=0 if arg.dense else max(1, int(0.4 * pruned_epochs)),
        gate_learning_rate=0.01,
        # Gates settle in the first 60%, then weights only; a dense run freezes them open at once.
        freeze_epoch=0 if arg.dense else gate_start + max(1, int(0.6 * pruned_epochs)),
        # After the freeze the gates hold still: the stripped model computes the same, with fewer MACs.
        strip_at_freeze=arg.strip,
        # Keras' choice, XLA only on an accelerator: on a CPU it ran x1.10-1.19 on one machine, x0.65-0.74 on another.
        jit_compile=common.jit_compile_field("auto"),
        verbose=2,
    )

    # Guard and eval section
    # Catastrophic overfitting (probe PGD accuracy down 0.2, or by half, or 0.2 below the epoch's training accuracy):
    # back to the best weights, then PGD-2.
    # pgd_warmup_epochs=N: the first N epochs with PGD-fallback_steps, then the single-step attack (0: off).
    config.guard = dict(probe_size=512, probe_steps=5, max_drop=0.2, max_relative_drop=0.5, max_attack_gap=0.2)
    config.guard.update(fallback_steps=2, pgd_warmup_epochs=arg.pgd_warmup)
    config.eval = dict(pgd_steps=10, pgd_step=2 / 255, size=0)
    config.export = dict(tflite=False, representative_size=500)

    if arg.quick:  # a smoke run: small subsets, a few minutes
        config.data.train_size, config.data.eval_size = 2048, 512
        config.guard.probe_size = 128
    return config
