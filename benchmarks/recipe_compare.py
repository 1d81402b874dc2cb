"""Epoch by epoch, how training runs compare: the figures of a recipe test, read from the runs' histories.

A recipe test trains the same row twice with one thing changed (the training attack, a PGD warm-up, the batch
size) and compares them along the way, before either has finished or where only one could. This script reads
each run's `history.csv` (or trainer report) and writes, for every epoch, the validation natural accuracy, the
guard's probe PGD accuracy, the attack gap (training-attack accuracy minus probe accuracy: the guard's test for
catastrophic overfitting) and the hard cost ratio; then, for each run against the first, the differences over a
window of epochs: mean, smallest, largest, and at how many epochs the run was ahead.

    python benchmarks/recipe_compare.py \
        --run="N-FGSM=benchmarks/results/paper_table_coupled_ours_0.16M_trainer_report.json" \
        --run="FGSM-RS after a PGD-2 warm-up=runs/paper_table_coupled_fgsmrs_pgdwarmup6/ours_0.16M/history.csv" \
        --first_epoch=7 --out=benchmarks/results/recipe_x.json

The probe is a fixed batch of training images (512 in the CIFAR-10 config), so its accuracy moves by about
+-0.02 from noise alone; validation accuracy on this schedule swings by 3-5 points from one epoch to the next, so
a recipe is judged by how many epochs it leads and by the final evaluation, not by one epoch.
"""

import json
import statistics

import histories
from absl import app, flags

# Column of the comparison -> how it is read off a history row (None where the row lacks what it needs).
METRICS = {
    "val_natural": lambda row: row.get("val_accuracy"),
    "probe_pgd": lambda row: row.get("probe_pgd_acc"),
    "attack_gap": lambda row: (
        row["accuracy"] - row["probe_pgd_acc"] if "accuracy" in row and "probe_pgd_acc" in row else None
    ),
    "cost_ratio": lambda row: row.get("hard_cost_ratio"),
}

_RUNS = _FIRST_EPOCH = _LAST_EPOCH = _OUT = None  # flag holders, defined by `define_flags`


def define_flags():
    """Defines the script's flags; only when run as a script, so tests can import its functions."""
    global _RUNS, _FIRST_EPOCH, _LAST_EPOCH, _OUT
    _RUNS = flags.DEFINE_multi_string(
        "run", [], "`label=path` of a history.csv or trainer report; the first is the base."
    )
    _FIRST_EPOCH = flags.DEFINE_integer("first_epoch", 1, "First epoch (1-based) of the compared window.")
    _LAST_EPOCH = flags.DEFINE_integer("last_epoch", 0, "Last epoch of the compared window (0: the last in common).")
    _OUT = flags.DEFINE_string("out", None, "Result JSON (optional; the tables are printed either way).")


def parse_run(spec):
    """Splits a `--run` value into `(label, path)`.

    Args:
        spec: Str, `label=path`; the label may hold spaces, the path starts after the last `=`.

    Returns:
        `(label, path)`, both non-empty.

    Raises:
        ValueError: naming the flag and the value, if either part is missing.
    """
    label, sep, path = spec.rpartition("=")
    if not sep or not label.strip() or not path.strip():
        raise ValueError(f"Flag --run must be 'label=path' (a history.csv or trainer report). Received: {spec!r}")
    return label.strip(), path.strip()


def epoch_table(path):
    """The compared figures of every epoch of one run.

    Args:
        path: A `history.csv` or a trainer report (see `histories.read`).

    Returns:
        A list of dicts in epoch order: `epoch` (1-based) and each of `METRICS` (a float, or None where the history
        does not log what it needs, e.g. no probe when the guard was off).
    """
    rows, _ = histories.read(path)
    return [{"epoch": row["epoch"], **{name: read(row) for name, read in METRICS.items()}} for row in rows]


def compare(base, other, first_epoch=1, last_epoch=0):
    """Per metric, how `other` differs from `base` over the epochs both have in a window.

    Args:
        base: Rows of `epoch_table` for the run compared against.
        other: Rows of `epoch_table` for the run compared.
        first_epoch: Int, first epoch (1-based) of the window.
        last_epoch: Int, last epoch of the window; 0 for the last epoch both runs have.

    Returns:
        A dict: `epochs` (the compared epochs, both runs having them) and, per metric both log, `mean`, `min` and
        `max` of `other - base` and `ahead` (epochs where `other` is above `base`).

    Raises:
        ValueError: if the window holds no epoch both runs have.
    """
    base_by_epoch = {row["epoch"]: row for row in base}
    common = [row["epoch"] for row in other if row["epoch"] in base_by_epoch and row["epoch"] >= first_epoch]
    if last_epoch:
        common = [epoch for epoch in common if epoch <= last_epoch]
    if not common:
        raise ValueError(
            f"No epoch in common in the window first_epoch={first_epoch}, last_epoch={last_epoch} "
            f"(base epochs {min(base_by_epoch)}-{max(base_by_epoch)}, other {other[0]['epoch']}-{other[-1]['epoch']})."
        )
    other_by_epoch = {row["epoch"]: row for row in other}
    result = {"epochs": common}
    for name in METRICS:
        pairs = [(base_by_epoch[e][name], other_by_epoch[e][name]) for e in common]
        differences = [o - b for b, o in pairs if b is not None and o is not None]
        if differences:
            result[name] = dict(
                mean=statistics.fmean(differences),
                min=min(differences),
                max=max(differences),
                ahead=sum(d > 0 for d in differences),
                compared=len(differences),
            )
    return result


def markdown(tables, metric):
    """A Markdown table of one metric: a column per epoch, a row per run (blank where a run lacks the epoch).

    Args:
        tables: Dict label -> rows of `epoch_table`, in the order to print.
        metric: One of `METRICS`.

    Returns:
        The table as a string.
    """
    epochs = sorted({row["epoch"] for rows in tables.values() for row in rows})
    lines = ["| run | " + " | ".join(str(e) for e in epochs) + " |", "|---|" + "---:|" * len(epochs)]
    for label, rows in tables.items():
        by_epoch = {row["epoch"]: row[metric] for row in rows}
        cells = ["" if by_epoch.get(e) is None else f"{by_epoch[e]:.3f}" for e in epochs]
        lines.append(f"| {label}: {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    runs = [parse_run(spec) for spec in _RUNS.value]
    if len(runs) < 2:
        raise app.UsageError(f"Flag --run must be given at least twice (a base and a run). Received: {_RUNS.value}")
    tables = {label: epoch_table(path) for label, path in runs}
    base_label = runs[0][0]
    comparisons = {
        label: compare(tables[base_label], tables[label], _FIRST_EPOCH.value, _LAST_EPOCH.value)
        for label, _ in runs[1:]
    }
    for metric in METRICS:
        print(markdown(tables, metric), end="\n\n")
    for label, comparison in comparisons.items():
        window = comparison["epochs"]
        print(f"{label} against {base_label}, epochs {window[0]}-{window[-1]}:")
        for metric in METRICS:
            if metric in comparison:
                c = comparison[metric]
                print(
                    f"  {metric:>11}: mean {c['mean']:+.4f} (min {c['min']:+.4f}, max {c['max']:+.4f}), "
                    f"ahead at {c['ahead']} of {c['compared']}"
                )
    if _OUT.value:
        command = "python benchmarks/recipe_compare.py " + " ".join(
            [f'--run="{label}={path}"' for label, path in runs]
            + [f"--first_epoch={_FIRST_EPOCH.value}", f"--last_epoch={_LAST_EPOCH.value}", f"--out={_OUT.value}"]
        )
        result = dict(
            command=command,
            base=base_label,
            runs={label: dict(path=path, epochs=tables[label]) for label, path in runs},
            against_base=comparisons,
        )
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
