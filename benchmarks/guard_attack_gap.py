"""How far the guard's probe PGD accuracy lies below the epoch's training-attack accuracy, healthy and collapsed.

`RobustPruneCallback(max_attack_gap=g)` counts an epoch as catastrophic overfitting when the probe's PGD-5
accuracy lies more than `g` below the epoch's training accuracy (the accuracy on the training attack's own
examples): the model fits its single-step attack and no other. This script reads the per-epoch histories of the
full CIFAR-10 ResNet20 runs committed in `benchmarks/results/` and reports, per epoch, the gap and what happened
in that epoch: a healthy single-step epoch, the collapse (the epoch the guard switched to PGD-2, or the run's
recorded collapse), an epoch trained with PGD-2 after it, or one of a PGD warm-up's first epochs. It then says
which epochs a threshold flags, so that the threshold is chosen on measured runs and the false alarms it would
raise are counted.

    python benchmarks/guard_attack_gap.py --out=benchmarks/results/guard_attack_gap.json
"""

import json
import os

import histories
from absl import app, flags

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# (name, history file, trainer report or None, 1-based collapse epoch when no report or history records it[,
# PGD warm-up epochs when the run had them]).
SOURCES = (
    ("dense, decoupled decay, N-FGSM", "paper_table_dense_trainer_report.json", None, None),
    ("dense, coupled decay, N-FGSM", "paper_table_coupled_dense_trainer_report.json", None, None),
    ("ours 0.16M, decoupled decay", "paper_table_ours_0.16M_trainer_report.json", None, None),
    ("ours 0.16M, coupled decay", "paper_table_coupled_ours_0.16M_trainer_report.json", None, None),
    ("ours 0.04M, coupled decay", "paper_table_coupled_ours_0.04M_trainer_report.json", None, None),
    ("L1 fine-tune 0.16M, coupled decay", "paper_table_coupled_l1_0.16M_finetune_report.json", None, None),
    ("L1 fine-tune 0.04M, coupled decay", "paper_table_coupled_l1_0.04M_finetune_report.json", None, None),
    (
        "scratch_0.04M (width 6)",
        "paper_table_coupled_scratch_0.04M_history.csv",
        "paper_table_coupled_scratch_0.04M_trainer_report.json",
        None,
    ),
    (
        "ourswidths_0.04M",
        "paper_table_coupled_ourswidths_0.04M_history.csv",
        "paper_table_coupled_ourswidths_0.04M_trainer_report.json",
        None,
    ),
    # Stopped by hand after its collapse (BENCHMARKS.md, "Earlier attempts": probe 0.070 -> 0.002 in epoch 2).
    ("dense, coupled decay, FGSM-RS (stopped)", "recipe_fgsm_rs_coupled_dense_history.csv", None, 2),
    # Batch 64, 6-epoch schedule: collapsed in its first epoch, caught by the attack gap (BENCHMARKS.md).
    ("dense, batch 64, N-FGSM, 6-epoch schedule", "guard_first_epoch_collapse_b64_history.csv", None, None),
    # The densefull row's first 6 epochs (30-epoch schedule), stopped after them (BENCHMARKS.md): its history.csv
    # has no `catastrophic_overfitting` column (trained before 2f79788, when the callback logged it only from the
    # collapse on and CSVLogger kept the first epoch's keys), hence the collapse epoch here; so for the freeze test.
    ("densefull, N-FGSM, 30-epoch schedule (stopped)", "densefull_30ep_nfgsm_stopped_history.csv", None, 4),
    # The freeze test (ours at 0.04M, gates frozen at epoch 19) on the eighteenth session's machine, stopped after 4.
    ("ours 0.04M, freeze at 19 (stopped)", "freeze19_0.04M_nfgsm_stopped_history.csv", None, 3),
    # The densefull run again with PGD-2 for epochs 1-6 (the fifth element), then N-FGSM to epoch 30: no collapse.
    ("densefull, PGD-2 warm-up 6, then N-FGSM", "pgd_warmup6_dense_30ep_history.csv", None, None, 6),
    # Ours at 0.16M with PGD-2 for epochs 1-6, then FGSM-RS to epoch 30 (twentieth session): no collapse.
    ("ours 0.16M, PGD-2 warm-up 6, then FGSM-RS", "fgsm_rs_pgd_warmup6_ours_0.16M_30ep_history.csv", None, None, 6),
    # The same with N-FGSM of noise 1 eps (twenty-second session): no collapse.
    (
        "ours 0.16M, PGD-2 warm-up 6, then N-FGSM noise 1 eps",
        "n_fgsm_noise1_pgd_warmup6_ours_0.16M_30ep_history.csv",
        None,
        None,
        6,
    ),
    # Ours at 0.04M with PGD-2 for epochs 1-6, then FGSM-RS (twenty-third session): no collapse.
    ("ours 0.04M, PGD-2 warm-up 6, then FGSM-RS", "fgsm_rs_pgd_warmup6_ours_0.04M_30ep_history.csv", None, None, 6),
)

_OUT = _THRESHOLDS = None  # flag holders, defined by `define_flags`


def define_flags():
    """Defines the script's flags; only when run as a script, so tests can import `epoch_gaps`."""
    global _OUT, _THRESHOLDS
    _OUT = flags.DEFINE_string("out", None, "Result JSON.")
    _THRESHOLDS = flags.DEFINE_list("thresholds", ["0.1", "0.15", "0.2", "0.3"], "Values of `max_attack_gap`.")


def _history(path):
    """Per-epoch rows `(1-based epoch, training accuracy, probe accuracy, collapse flag or None)` of one file,
    and the trainer report's `epochs` section if the file is a report (else None)."""
    rows, epochs = histories.read(path)
    return [
        (
            row["epoch"],
            row["accuracy"],
            row["probe_pgd_acc"],
            row["catastrophic_overfitting"] > 0 if "catastrophic_overfitting" in row else None,
        )
        for row in rows
    ], epochs


def epoch_gaps(name, history_path, report_path=None, collapse_epoch=None, pgd_warmup_epochs=0):
    """The gap of every epoch of one run, with what happened in it.

    Args:
        name: Str, the run's label.
        history_path: A `history.csv` (with an `epoch` column) or a trainer report with `history` and `epochs`.
        report_path: Optional trainer report whose `epochs.fallback_at` / `catastrophic_overfitting_at` give the
            collapse epoch (for a history file without the `catastrophic_overfitting` column).
        collapse_epoch: Optional 1-based collapse epoch, for a run with neither.
        pgd_warmup_epochs: Int, the run's first epochs trained with PGD-K (`guard.pgd_warmup_epochs`).

    Returns:
        A list of dicts with `run`, `epoch` (1-based), `train_acc`, `probe_pgd_acc`, `gap` and `phase`:
        `"PGD warm-up"`, `"single-step"` (healthy), `"collapse"` or `"after fallback"` (trained with PGD-K).
    """
    rows, epochs = _history(history_path)
    if collapse_epoch is None and report_path is not None:
        with open(report_path) as f:
            epochs = json.load(f)["epochs"]
    if collapse_epoch is None and epochs is not None:
        collapse_epoch = epochs.get("fallback_at") or epochs.get("catastrophic_overfitting_at")
    if collapse_epoch is None:
        collapse_epoch = next((epoch for epoch, _, _, flagged in rows if flagged), None)
    result = []
    for epoch, train_acc, probe, _ in rows:
        if epoch <= pgd_warmup_epochs:
            phase = "PGD warm-up"
        elif collapse_epoch is None or epoch < collapse_epoch:
            phase = "single-step"
        else:
            phase = "collapse" if epoch == collapse_epoch else "after fallback"
        result.append(
            dict(run=name, epoch=epoch, train_acc=train_acc, probe_pgd_acc=probe, gap=train_acc - probe, phase=phase)
        )
    return result


def summarize(epochs, thresholds):
    """Per phase the largest and smallest gap, and per threshold which epochs it flags.

    Args:
        epochs: Dicts from `epoch_gaps`.
        thresholds: Floats, candidate `max_attack_gap` values.

    Returns:
        A dict: `phases` (count, min and max gap per phase) and `thresholds` (per value: collapses caught,
        collapses missed, false alarms, each a list of `run@epoch`).
    """
    phases = {}
    for phase in ("PGD warm-up", "single-step", "collapse", "after fallback"):
        gaps = [e["gap"] for e in epochs if e["phase"] == phase]
        phases[phase] = dict(epochs=len(gaps), min_gap=min(gaps, default=None), max_gap=max(gaps, default=None))
    by_threshold = {}
    for threshold in thresholds:
        outcome = dict(caught=[], missed=[], false_alarms=[])
        for e in epochs:
            flagged, collapse = e["gap"] > threshold, e["phase"] == "collapse"
            if flagged or collapse:
                key = "false_alarms" if not collapse else "caught" if flagged else "missed"
                outcome[key].append(f"{e['run']}@{e['epoch']}")
        by_threshold[str(threshold)] = outcome
    return dict(phases=phases, thresholds=by_threshold)


def main(argv):
    del argv
    epochs = []
    for name, history, report, collapse, *warmup in SOURCES:
        report = report and os.path.join(RESULTS, report)
        epochs += epoch_gaps(name, os.path.join(RESULTS, history), report, collapse, *warmup)
    summary = summarize(epochs, [float(t) for t in _THRESHOLDS.value])
    result = dict(command="python benchmarks/guard_attack_gap.py --out=" + (_OUT.value or ""), epochs=epochs, **summary)
    for phase, stats in summary["phases"].items():
        print(f"{phase:>15}: {stats['epochs']:3d} epochs, gap {stats['min_gap']:.3f} .. {stats['max_gap']:.3f}")
    for threshold, outcome in summary["thresholds"].items():
        print(
            f"max_attack_gap={threshold}: caught {len(outcome['caught'])}, missed {outcome['missed']}, "
            f"false alarms {outcome['false_alarms']}"
        )
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
