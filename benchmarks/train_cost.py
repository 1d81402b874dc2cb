"""Training cost of robust pruning: images/s of plain `fit` vs the gated FGSM-RS step with the hardware loss.

    python benchmarks/train_cost.py --rounds=5 --steps=20

Both models train in one process on the same real CIFAR-10 images (the shipped
sample, repeated), batch 128. The two are measured in alternating rounds and
the median per round is kept, so a busy machine slows both alike. Target: the
ratio of plain to robust throughput at most 2.2 (two forward/backward passes
per step make 2.0 the floor). Both compile with Keras' default `jit_compile`
("auto": no XLA on a CPU), as configs/resnet20_cifar10.py does (benchmarks/xla_cost.py).
"""

import json
import os
import statistics
import time

from absl import app, flags
from fit_throughput import images_per_second, machine

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating measurement rounds.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 20, "Training steps per round and model.", lower_bound=2)
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_OUT = flags.DEFINE_string(
    "out", os.path.join(os.path.dirname(__file__), "results", "train_cost.json"), "Result JSON path."
)


def _dataset(batch_size):

    from tfrobustprune import data

    sample = data.load_sample()
    return data.train_dataset(sample.x_train, sample.y_train, batch_size, seed=0).repeat()


def main(argv):
    del argv
    import keras

    import tfrobustprune
    from tfrobustprune import models

    keras.utils.set_random_seed(0)
    batch = _BATCH.value
    dataset = _dataset(batch)

    plain = models.resnet20()
    plain.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    robust = tfrobustprune.RobustPruneModel(
        tfrobustprune.gate(models.resnet20(), min_fraction=0.1), attack="fgsm_rs", target_ratio=0.5, hw_lambda=1.0
    )
    robust.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    for model in (plain, robust):  # trace and warm up
        images_per_second(model, dataset, 3, batch)

    rates = {"plain_fit": [], "robust_fgsm_rs_hw": []}
    for round_index in range(_ROUNDS.value):
        rates["plain_fit"].append(images_per_second(plain, dataset, _STEPS.value, batch))
        rates["robust_fgsm_rs_hw"].append(images_per_second(robust, dataset, _STEPS.value, batch))
        print(
            f"round {round_index + 1}: plain {rates['plain_fit'][-1]:.0f} img/s, "
            f"robust {rates['robust_fgsm_rs_hw'][-1]:.0f} img/s",
            flush=True,
        )
    plain_rate = statistics.median(rates["plain_fit"])
    robust_rate = statistics.median(rates["robust_fgsm_rs_hw"])
    ratios = [p / r for p, r in zip(rates["plain_fit"], rates["robust_fgsm_rs_hw"])]
    result = {
        "benchmark": "train_cost",
        "command": "python benchmarks/train_cost.py " + f"--rounds={_ROUNDS.value} --steps={_STEPS.value} "
        f"--batch_size={batch}",
        "model": "resnet20 (dense, plain fit) vs gated resnet20 (RobustPruneModel, fgsm_rs + MAC hinge)",
        "batch_size": batch,
        "images_per_second": {"plain_fit": plain_rate, "robust_fgsm_rs_hw": robust_rate},
        "per_round": rates,
        "ratio_median_of_rounds": statistics.median(ratios),
        "ratio_of_medians": plain_rate / robust_rate,
        "target_ratio_at_most": 2.2,
        "meets_target": statistics.median(ratios) <= 2.2,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.makedirs(os.path.dirname(_OUT.value), exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("images_per_second", "ratio_median_of_rounds", "meets_target")}))


if __name__ == "__main__":
    app.run(main)
