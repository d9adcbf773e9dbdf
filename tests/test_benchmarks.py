"""The sweep and report scripts, on the tests' small data."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sweep_writes_every_epoch_per_seed_and_report_tabulates_it(data_dir, tmp_path):
    out = tmp_path / "sweep.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--model", "tiny", "--epochs", "2",
           "--seeds", "1", "2", "--set", "max_batches=2", "nesterov=false", "--device", "cpu",
           "--data-dir", str(data_dir), "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["model"] == "tiny" and result["config"]["nesterov"] is False and result["config"]["lr"] == 0.1
    assert [r["seed"] for r in result["runs"]] == [1, 2]
    for run in result["runs"]:
        assert [e["epoch"] for e in run["epochs"]] == [1, 2]
        assert result["summary"]["final_accuracy"][str(run["seed"])] == run["epochs"][-1]["test_accuracy"]

    table = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), str(out)], check=True, capture_output=True, text=True
    ).stdout
    final = result["runs"][0]["epochs"][-1]["test_accuracy"]
    assert f"| 1 | {final:.2f}% |" in table and "mean ± std" in table


def test_throughput_takes_turns_and_reports_medians(data_dir):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cpu", "--data-dir", str(data_dir),
           "--steps", "2", "--warmup", "1", "--rounds", "2", "--workers", "0", "--json"]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rounds"] == 2 and len(result["round_ratios"]) == 2
    assert result["seed_images_per_s"] > 0 and result["mnist20k_images_per_s"] > 0
    assert result["ratio"] == round(result["mnist20k_images_per_s"] / result["seed_images_per_s"], 2)
    assert min(result["round_ratios"]) <= result["ratio"] <= max(result["round_ratios"])
    assert 0 < result["eval_seconds"] < 60
