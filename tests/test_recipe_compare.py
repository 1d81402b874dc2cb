import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, load_benchmark


@pytest.fixture(scope="module")
def compare_script():
    return load_benchmark("recipe_compare")


def _write_csv(path, rows):
    path.write_text(
        "epoch,accuracy,probe_pgd_acc,val_accuracy,hard_cost_ratio\n"
        + "".join(f"{','.join(map(str, r))}\n" for r in rows)
    )
    return str(path)


def test_a_run_is_compared_to_the_base_over_the_epochs_both_have_in_the_window(compare_script, tmp_path):
    base = _write_csv(
        tmp_path / "base.csv", [(0, 0.3, 0.2, 0.40, 1.0), (1, 0.4, 0.3, 0.50, 0.8), (2, 0.5, 0.3, 0.55, 0.6)]
    )
    other = _write_csv(
        tmp_path / "other.csv", [(1, 0.4, 0.35, 0.52, 0.8), (2, 0.5, 0.25, 0.54, 0.6), (3, 0.6, 0.4, 0.7, 0.6)]
    )
    base_rows, other_rows = compare_script.epoch_table(base), compare_script.epoch_table(other)
    assert [row["epoch"] for row in other_rows] == [2, 3, 4]  # CSVLogger counts from 0
    assert other_rows[0]["attack_gap"] == pytest.approx(0.05)

    result = compare_script.compare(base_rows, other_rows, first_epoch=1)
    assert result["epochs"] == [2, 3]  # epoch 4 has no base, epoch 1 no other
    assert result["val_natural"]["mean"] == pytest.approx(0.005)
    assert result["val_natural"]["min"] == pytest.approx(-0.01) and result["val_natural"]["max"] == pytest.approx(0.02)
    assert result["val_natural"]["ahead"] == 1 and result["val_natural"]["compared"] == 2
    assert compare_script.compare(base_rows, other_rows, first_epoch=3)["epochs"] == [3]
    assert compare_script.compare(base_rows, other_rows, last_epoch=2)["epochs"] == [2]
    with pytest.raises(ValueError, match="No epoch in common"):
        compare_script.compare(base_rows, other_rows, first_epoch=4)


def test_a_metric_a_history_does_not_log_is_left_out_not_zero(compare_script, tmp_path):
    base = tmp_path / "base.csv"
    base.write_text("epoch,accuracy,val_accuracy\n0,0.3,0.4\n")  # no guard probe, no gates
    other = tmp_path / "other.csv"
    other.write_text("epoch,accuracy,val_accuracy\n0,0.3,0.45\n")
    rows = compare_script.epoch_table(str(other))
    assert rows[0]["probe_pgd"] is None and rows[0]["attack_gap"] is None
    result = compare_script.compare(compare_script.epoch_table(str(base)), rows)
    assert set(result) == {"epochs", "val_natural"}
    assert "|  |" not in compare_script.markdown({"other": rows}, "val_natural")
    assert compare_script.markdown({"other": rows}, "probe_pgd").endswith("| other: probe_pgd |  |")


def test_a_trainer_report_reads_like_its_history_csv(compare_script, tmp_path):
    report = tmp_path / "report.json"
    history = {"accuracy": [0.4, 0.5], "probe_pgd_acc": [0.3, 0.35], "val_accuracy": [0.5, 0.6]}
    report.write_text(json.dumps({"history": history, "epochs": {"configured": 30}}))
    rows = compare_script.epoch_table(str(report))
    assert [row["epoch"] for row in rows] == [29, 30]  # a resumed run's report holds its last fit
    assert rows[1]["val_natural"] == pytest.approx(0.6) and rows[1]["cost_ratio"] is None


@pytest.mark.parametrize("spec", ["no-separator", "=path.csv", "label=", "label= "])
def test_a_run_flag_without_label_and_path_is_refused_naming_the_flag(compare_script, spec):
    with pytest.raises(ValueError, match=r"--run must be 'label=path'"):
        compare_script.parse_run(spec)
    assert compare_script.parse_run("N-FGSM, lr=0.2=a/b.csv") == ("N-FGSM, lr=0.2", "a/b.csv")


def test_the_script_writes_the_comparison_of_two_committed_histories(tmp_path):
    results = os.path.join(ROOT, "benchmarks", "results")
    out = tmp_path / "compare.json"
    command = [
        sys.executable,
        os.path.join(ROOT, "benchmarks", "recipe_compare.py"),
        f"--run=dense 20 ep={os.path.join(results, 'paper_table_coupled_dense_trainer_report.json')}",
        f"--run=dense 30 ep, warm-up={os.path.join(results, 'pgd_warmup6_dense_30ep_history.csv')}",
        "--first_epoch=7",
        f"--out={out}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "dense 30 ep, warm-up against dense 20 ep, epochs 12-20" in completed.stdout
    result = json.loads(out.read_text())
    assert result["base"] == "dense 20 ep"
    assert result["against_base"]["dense 30 ep, warm-up"]["epochs"][0] == 12  # the report holds its last fit, 12-20
    assert len(result["runs"]["dense 30 ep, warm-up"]["epochs"]) == 30


def test_the_script_needs_a_base_and_a_run(tmp_path):
    script = os.path.join(ROOT, "benchmarks", "recipe_compare.py")
    completed = subprocess.run([sys.executable, script, f"--run=a={tmp_path}/a.csv"], capture_output=True, text=True)
    assert completed.returncode != 0 and "--run must be given at least twice" in completed.stdout + completed.stderr
