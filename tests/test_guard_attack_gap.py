import json
import os

import pytest
from helpers import load_benchmark


@pytest.fixture(scope="module")
def gap_script():
    return load_benchmark("guard_attack_gap")


def test_epochs_are_labelled_from_the_report_and_thresholds_count_catches_and_false_alarms(gap_script, tmp_path):
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,accuracy,probe_pgd_acc\n0,0.30,0.20\n1,0.55,0.01\n2,0.40,0.37\n"  # healthy, collapse, PGD-2
    )
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"epochs": {"fallback_at": 2, "catastrophic_overfitting_at": None}}))
    epochs = gap_script.epoch_gaps("run", str(history), str(report))
    assert [e["phase"] for e in epochs] == ["single-step", "collapse", "after fallback"]
    assert [e["gap"] for e in epochs] == pytest.approx([0.10, 0.54, 0.03])

    summary = gap_script.summarize(epochs, [0.05, 0.2, 0.6])
    assert summary["phases"]["collapse"] == dict(epochs=1, min_gap=pytest.approx(0.54), max_gap=pytest.approx(0.54))
    assert summary["thresholds"]["0.05"] == dict(caught=["run@2"], missed=[], false_alarms=["run@1"])
    assert summary["thresholds"]["0.2"] == dict(caught=["run@2"], missed=[], false_alarms=[])
    assert summary["thresholds"]["0.6"]["missed"] == ["run@2"]


def test_a_resumed_report_numbers_its_last_fit_from_the_end(gap_script, tmp_path):
    report = tmp_path / "report.json"
    history = {"accuracy": [0.4, 0.41], "probe_pgd_acc": [0.38, 0.40]}
    report.write_text(json.dumps({"history": history, "epochs": {"configured": 30, "fallback_at": None}}))
    epochs = gap_script.epoch_gaps("resumed", str(report))
    assert [e["epoch"] for e in epochs] == [29, 30] and {e["phase"] for e in epochs} == {"single-step"}


def test_the_committed_histories_are_readable(gap_script):
    for name, history, report, collapse, *warmup in gap_script.SOURCES:
        path = os.path.join(gap_script.RESULTS, history)
        assert gap_script.epoch_gaps(name, path, report and os.path.join(gap_script.RESULTS, report), collapse, *warmup)


def test_pgd_warmup_epochs_are_their_own_phase_not_healthy_single_step_ones(gap_script, tmp_path):
    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,probe_pgd_acc\n0,0.15,0.22\n1,0.24,0.23\n2,0.30,0.29\n")
    epochs = gap_script.epoch_gaps("warm", str(history), pgd_warmup_epochs=2)
    assert [e["phase"] for e in epochs] == ["PGD warm-up", "PGD warm-up", "single-step"]
    summary = gap_script.summarize(epochs, [0.2])
    assert summary["phases"]["PGD warm-up"]["epochs"] == 2 and summary["phases"]["single-step"]["epochs"] == 1
