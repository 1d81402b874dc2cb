"""What `strip` (train.strip_at_freeze) saves: training throughput after the freeze, gated vs stripped.

    python benchmarks/strip_cost.py --rounds=3 --steps=10
    python benchmarks/strip_cost.py --models=benchmarks/results/models/resnet20_ours_0.04M.keras

After the gate freeze a gated ResNet20 still computes every channel (closed
ones are multiplied by zero), whatever its target; a stripped model computes
only the kept ones. Each model trains the training step of
`configs/resnet20_cifar10.py` (N-FGSM, coupled weight decay, gates frozen) on
the shipped sample of real CIFAR-10 images, batch 128, in alternating rounds
(a busy machine slows all alike), and the median per round is kept. For each
stripped model the benchmark also gives the wall time of a whole 30-epoch run
with `strip` relative to one without (the first `freeze_epoch` epochs gated,
the rest at the stripped model's rate), ignoring the evaluation each epoch.
"""

import os
import statistics
import sys
import time

from absl import app, flags
from fit_throughput import images_per_second, machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "benchmarks", "results", "models")

_MODELS = flags.DEFINE_list(
    "models",
    [os.path.join(MODELS, "resnet20_ours_0.16M_coupled.keras"), os.path.join(MODELS, "resnet20_ours_0.04M.keras")],
    "Stripped ResNet20 .keras files to time against the gated ResNet20.",
)
_CONFIG_ARG = flags.DEFINE_string(
    "config_arg", "cost=params,target=0.584", "configs/resnet20_cifar10.py argument (attack, decay, freeze epoch)."
)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating measurement rounds.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 10, "Training steps per round and model.", lower_bound=2)
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "benchmarks", "results", "strip_cost.json"), "Result JSON path.")


def main(argv):
    del argv
    sys.path.insert(0, REPO)  # configs/
    import keras

    from configs import resnet20_cifar10
    from tfrobustprune import data, model_io, train_lib
    from tfrobustprune.cost import count_macs

    for path in _MODELS.value:
        if not os.path.exists(path):
            raise app.UsageError(f"--models: no such file. Received: {path}")
    config = resnet20_cifar10.get_config(_CONFIG_ARG.value)
    train = config.train
    keras.utils.set_random_seed(0)
    sample = data.load_sample()
    batch = train.batch_size
    dataset = data.train_dataset(sample.x_train, sample.y_train, batch, seed=0).repeat()

    def frozen(base=None):
        model = train_lib.build_model(config, 10, 100, base=base, target_ratio=None if base is None else 1.0)
        model.freeze_gates()
        return model

    dense = train_lib.base_model(config, 10)
    rows = {"gated": {"model": "resnet20, gated (any target)", "train": frozen()}}
    rows["gated"].update(params=dense.count_params(), macs=count_macs(dense))
    for path in _MODELS.value:
        stripped = model_io.load_keras_model(path)
        rows[os.path.basename(path)] = {
            "model": os.path.relpath(path, REPO),
            "params": stripped.count_params(),
            "macs": count_macs(stripped),
            "train": frozen(stripped),
        }
    for row in rows.values():  # trace and warm up
        images_per_second(row["train"], dataset, 2, batch)
    rates = {name: [] for name in rows}
    for round_index in range(_ROUNDS.value):
        for name, row in rows.items():
            rates[name].append(images_per_second(row["train"], dataset, _STEPS.value, batch))
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
        "config": f"configs/resnet20_cifar10.py:{_CONFIG_ARG.value}",
        "attack": config.attack.name,
        "batch_size": batch,
        "epochs": train.epochs,
        "freeze_epoch": train.freeze_epoch,
        "gated_images_per_second": gated_rate,
        "rows": results,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    model_io.write_json_atomic(_OUT.value, result, indent=2)
    for name, row in results.items():
        print(
            f"{name}: {row['params']} params, {row['macs'] / 1e6:.1f}M MACs, {row['images_per_second']:.0f} img/s, "
            f"x{row['speedup_over_gated']:.2f}; a {train.epochs}-epoch run with strip: "
            f"{row['run_time_with_strip_relative']:.2f} of the time"
        )


if __name__ == "__main__":
    app.run(main)
