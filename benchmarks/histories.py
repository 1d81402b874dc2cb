"""Reads the per-epoch history of a training run: a trainer's `history.csv` or a trainer report's `history`.

The benchmarks that study committed runs (`guard_attack_gap.py`, `recipe_compare.py`) read both forms, because
older runs were committed as trainer reports and newer ones as the `history.csv` of their workdir.

    rows, epochs = histories.read("benchmarks/results/pgd_warmup6_dense_30ep_history.csv")
    rows[0]["epoch"], rows[0]["val_accuracy"]  # 1, 0.313
"""

import csv
import json


def read(path):
    """The per-epoch rows of one run.

    Args:
        path: A `history.csv` (Keras' CSVLogger: an `epoch` column counted from 0, one column per logged value)
            or a trainer report (`report.json`) with `history` (lists of values per key) and `epochs`.

    Returns:
        `(rows, epochs)`: `rows` is a list of dicts, one per epoch in order, each with `epoch` (int, counted from 1)
        and every logged value as a float (a value the file leaves empty is absent); `epochs` is the report's
        `epochs` section, or None for a CSV. A resumed run's report holds only its last fit, so its epochs are
        numbered back from `epochs.configured`.

    Raises:
        ValueError: if the file has no epochs.
    """
    if path.endswith(".csv"):
        with open(path) as f:
            records = list(csv.DictReader(f))
        rows = [
            {"epoch": int(record["epoch"]) + 1, **{k: float(v) for k, v in record.items() if k != "epoch" and v}}
            for record in records
        ]
        epochs = None
    else:
        with open(path) as f:
            report = json.load(f)
        history, epochs = report["history"], report["epochs"]
        length = max((len(values) for values in history.values()), default=0)
        first = epochs["configured"] - length + 1
        rows = [
            {"epoch": first + i, **{k: float(v[i]) for k, v in history.items() if i < len(v) and v[i] is not None}}
            for i in range(length)
        ]
    if not rows:
        raise ValueError(f"History file {path!r} holds no epochs.")
    return rows, epochs
