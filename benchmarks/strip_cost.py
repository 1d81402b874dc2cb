"""What `strip` (train.strip_at_freeze) saves: training throughput after the freeze, gated vs stripped.

    python benchmarks/strip_cost.py --rounds=3 --steps=10
    python benchmarks/strip_cost.py --models=benchmarks/results/models/resnet20_ours_0.04M.keras

After the gate freeze a gated ResNet20 still computes every channel (closed
ones are multiplied by zero), whatever its target; a stripped model computes
only the kept ones. Each model trains the training step of
`configs/resnet20_cifar10.py` (N-FGSM, coupled weight decay, gates frozen) on
the shipped sample of real CIFAR-10 images, batch 128, compiled as the config
says (`train.jit_compile`: XLA from the twelfth to the seventeenth session, "auto" before and after), in alternating rounds
(a busy machine slows all alike), and the median per round is kept. For each
stripped model the benchmark also gives the wall time of a whole 30-epoch run
with `strip` relative to one without (the first `freeze_epoch` epochs gated,
the rest at the stripped model's rate), ignoring the evaluation each epoch.
"""

import os
import statistics
import sys
import time

from absl import app
from fit_throughput import (
    REPO,
    define_trainer_step_flags,
    images_per_second,
    machine,
    post_freeze_model,
    trainer_step_setup,
)

FLAGS = define_trainer_step_flags(
    "strip_cost",
    "Stripped ResNet20 .keras files to time against the gated ResNet20.",
    "configs/resnet20_cifar10.py argument (attack, decay, freeze epoch).",
)


def main(argv):
    del argv
    config, dataset = trainer_step_setup(FLAGS["models"].value, FLAGS["config_arg"].value)
    from tfrobustprune import model_io, train_lib
    from tfrobustprune.cost import count_macs

    train = config.train
    batch = train.batch_size

    dense = train_lib.base_model(config, 10)
    rows = {"gated": {"model": "resnet20, gated (any target)", "train": post_freeze_model(config)}}
    rows["gated"].update(params=dense.count_params(), macs=count_macs(dense))
    for path in FLAGS["models"].value:
        stripped = model_io.load_keras_model(path)
        rows[os.path.basename(path)] = {
            "model": os.path.relpath(path, REPO),
            "params": stripped.count_params(),
            "macs": count_macs(stripped),
            "train": post_freeze_model(config, stripped),
        }
    for row in rows.values():  # trace and warm up
        images_per_second(row["train"], dataset, 2, batch)
    rates = {name: [] for name in rows}
    for round_index in range(FLAGS["rounds"].value):
        for name, row in rows.items():
            rates[name].append(images_per_second(row["train"], dataset, FLAGS["steps"].value, batch))
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {r[-1]:.0f} img/s" for n, r in rates.items()), flush=True)

    gated_rate = statistics.median(rates["gated"])
    after = train.epochs - train.freeze_epoch
    results = {}
    for name, row in rows.items():
        rate = statistics.median(rates[name])
        # per round, so that a round slowed by the machine slows both sides of the ratio
        speedup = statistics.median(r / g for r, g in zip(rates[name], rates["gated"]))
        results[name] = {
            "model": row["model"],
            "params": int(row["params"]),
            "macs": int(row["macs"]),
            "images_per_second": rate,
            "per_round": rates[name],
            "speedup_over_gated": speedup,
            "run_time_with_strip_relative": (train.freeze_epoch + after / speedup) / train.epochs,
        }
    result = {
        "benchmark": "strip_cost",
        "command": "python benchmarks/strip_cost.py " + " ".join(sys.argv[1:]),
        "config": f"configs/resnet20_cifar10.py:{FLAGS['config_arg'].value}",
        "attack": config.attack.name,
        "batch_size": batch,
        "jit_compile": bool(rows["gated"]["train"].jit_compile),  # XLA or not, as Keras resolved the config's value
        "epochs": train.epochs,
        "freeze_epoch": train.freeze_epoch,
        "gated_images_per_second": gated_rate,
        "rows": results,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    model_io.write_json_atomic(FLAGS["out"].value, result, indent=2)
    for name, row in results.items():
        print(
            f"{name}: {row['params']} params, {row['macs'] / 1e6:.1f}M MACs, {row['images_per_second']:.0f} img/s, "
            f"x{row['speedup_over_gated']:.2f}; a {train.epochs}-epoch run with strip: "
            f"{row['run_time_with_strip_relative']:.2f} of the time"
        )


if __name__ == "__main__":
    app.run(main)
