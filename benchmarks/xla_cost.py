"""What XLA (`train.jit_compile`) does to the training step of configs/resnet20_cifar10.py on this machine.

    python benchmarks/xla_cost.py --rounds=3 --steps=10

Keras compiles a model's step with XLA only on an accelerator by default
(`jit_compile="auto"`); on a CPU the step runs op by op. Each row builds the
trainer's model (`train_lib.build_model`: N-FGSM, coupled weight decay, gates
and hardware loss) twice, once per `train.jit_compile` setting, and trains both
on the shipped sample of real CIFAR-10 images, batch 128, in alternating rounds
(a busy machine slows all alike); the median per round is kept. Rows: the gated
ResNet20 in the pruning phase (hardware loss on, gates moving), the gated
ResNet20 after the freeze (gates frozen: the last epochs of a run without
`strip`) and each `--models` stripped model after the freeze (`strip`). The first call of each
model (tracing, and XLA's compilation) is timed apart: a run pays it once per
fit and per switch of phase.
"""

import os
import statistics
import sys
import time

from absl import app
from fit_throughput import define_trainer_step_flags, images_per_second, machine, post_freeze_model, trainer_step_setup

FLAGS = define_trainer_step_flags(
    "xla_cost",
    "Stripped ResNet20 .keras files to time after the freeze (empty: the gated model only).",
    "configs/resnet20_cifar10.py argument (attack, decay, target).",
)


def main(argv):
    del argv
    config, dataset = trainer_step_setup(FLAGS["models"].value, FLAGS["config_arg"].value)
    from tfrobustprune import model_io, train_lib

    batch = config.train.batch_size

    def pruning_phase():
        model = train_lib.build_model(config, 10, 100)
        model.hw_lambda.assign(1.0)  # gates move under the hardware loss, as between gate_start and the freeze
        return model

    builders = {"gated, pruning phase": pruning_phase, "gated, gates frozen": lambda: post_freeze_model(config)}
    for path in FLAGS["models"].value:
        builders[f"stripped {os.path.basename(path)}"] = lambda path=path: post_freeze_model(
            config, model_io.load_keras_model(path)
        )
    models, first_call_seconds = {}, {}
    for row, build in builders.items():
        for jit_compile in (False, True):
            key = (row, jit_compile)
            config.train.jit_compile = jit_compile  # read by train_lib.build_model
            models[key] = build()
            started = time.perf_counter()
            images_per_second(models[key], dataset, 2, batch)  # trace (and compile) and warm up
            first_call_seconds[key] = time.perf_counter() - started
    rates = {key: [] for key in models}
    for round_index in range(FLAGS["rounds"].value):
        for key, model in models.items():
            rates[key].append(images_per_second(model, dataset, FLAGS["steps"].value, batch))
        print(
            f"round {round_index + 1}: " + ", ".join(f"{r} xla={j}: {v[-1]:.0f} img/s" for (r, j), v in rates.items()),
            flush=True,
        )

    rows = {}
    for row in builders:
        off, on = rates[(row, False)], rates[(row, True)]
        rows[row] = {
            "images_per_second": {"xla_off": statistics.median(off), "xla_on": statistics.median(on)},
            "per_round": {"xla_off": off, "xla_on": on},
            # per round, so that a round slowed by the machine slows both sides of the ratio
            "speedup_xla": statistics.median(b / a for a, b in zip(off, on)),
            "first_call_seconds": {
                "xla_off": first_call_seconds[(row, False)],
                "xla_on": first_call_seconds[(row, True)],
            },
        }
    result = {
        "benchmark": "xla_cost",
        "command": "python benchmarks/xla_cost.py " + " ".join(sys.argv[1:]),
        "config": f"configs/resnet20_cifar10.py:{FLAGS['config_arg'].value}",
        "attack": config.attack.name,
        "batch_size": batch,
        "steps_per_round": FLAGS["steps"].value,
        "rows": rows,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    model_io.write_json_atomic(FLAGS["out"].value, result, indent=2)
    for row, figures in rows.items():
        rate = figures["images_per_second"]
        print(
            f"{row}: {rate['xla_off']:.0f} -> {rate['xla_on']:.0f} img/s with XLA (x{figures['speedup_xla']:.2f}); "
            f"first call {figures['first_call_seconds']['xla_off']:.0f} -> "
            f"{figures['first_call_seconds']['xla_on']:.0f} s"
        )


if __name__ == "__main__":
    app.run(main)
