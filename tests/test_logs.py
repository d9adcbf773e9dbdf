"""--log tensorboard and --log csv: each epoch's record where people watch training, read back with
TensorBoard's own reader and the standard library's csv, for train, sweep and tune."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mnist20k.cli import app

runner = CliRunner()
SHORT = ["--epochs", "2", "--max-batches", "2", "--batch-size", "32", "--device", "cpu"]


def invoke(*args) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def scalars(folder, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_train_logs_each_epoch_to_tensorboard_at_its_step(data_dir, tmp_path):
    run = tmp_path / "run"
    invoke("train", *SHORT, "--data-dir", data_dir, "--out", run, "--log", "tensorboard")
    epochs = records(run)
    assert scalars(run, "test/accuracy") == [(r["epoch"], pytest.approx(r["test_accuracy"])) for r in epochs]
    for tag, key in (("train/loss", "train_loss"), ("test/loss", "test_loss"), ("lr", "lr"), ("seconds", "seconds")):
        assert scalars(run, tag) == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in epochs], tag
    assert not (run / "metrics.csv").exists()


def test_train_writes_metrics_csv_with_the_records_of_metrics_jsonl(data_dir, tmp_path):
    run = tmp_path / "run"
    invoke("train", *SHORT, "--data-dir", data_dir, "--out", run, "--log", "csv")
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = records(run)
    assert [list(row) for row in rows] == [list(r) for r in epochs]
    assert [{k: float(v) for k, v in row.items()} for row in rows] == [
        {k: float(v) for k, v in r.items()} for r in epochs
    ]
    assert not list(run.glob("events.out.tfevents.*"))


def test_a_sweep_logs_each_seed_in_its_own_folder_and_tensorboard_names_them_so(data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    out = tmp_path / "sweep"
    invoke("sweep", *SHORT, "--seeds", "1-2", "--data-dir", data_dir, "--out", out, "--log", "tensorboard")
    runs = EventMultiplexer().AddRunsFromDirectory(str(out))
    runs.Reload()
    assert sorted(runs.Runs()) == ["seed-1", "seed-2"]
    for seed in (1, 2):
        accuracy = [r["test_accuracy"] for r in records(out / f"seed-{seed}")]
        assert [e.value for e in runs.Scalars(f"seed-{seed}", "test/accuracy")] == pytest.approx(accuracy)


def test_a_study_logs_each_trial_on_its_validation_images(data_dir, tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "study"
    invoke("tune", *SHORT, "--model", "micro", "--val", "100", "--search", "lr=0.05,0.1", "--trials", "2",
           "--data-dir", data_dir, "--out", out, "--log", "tensorboard", "--log", "csv")  # fmt: skip
    for trial in ("trial-0000", "trial-0001"):
        accuracy = [r["val_accuracy"] for r in records(out / trial)]
        assert [value for _, value in scalars(out / trial, "val/accuracy")] == pytest.approx(accuracy)
        assert (out / trial / "metrics.csv").is_file()


def test_without_tensorboard_one_line_says_what_to_install_and_nothing_is_made(data_dir, tmp_path):
    hide = "import sys; sys.modules['tensorboard'] = None; from mnist20k.cli import main; main()"
    out = tmp_path / "run"
    words = ["train", *SHORT, "--data-dir", str(data_dir), "--out", str(out), "--log", "tensorboard"]
    done = subprocess.run([sys.executable, "-c", hide, *words], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr == "error: --log tensorboard needs TensorBoard: pip install 'mnist20k[tensorboard]'\n"
    assert not out.exists()
