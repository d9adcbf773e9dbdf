"""A run is described by its config.json: `train --config` trains what one says, options beside it
override it, and sweep starts each of its runs from the config.json it writes into the run's folder."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import pytest
from conftest import one_error_line
from typer.testing import CliRunner

from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.sweep import Job, State, Sweep, child_command, plan

runner = CliRunner()
SHORT = ["--epochs", "2", "--max-batches", "3", "--batch-size", "32", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def metrics(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in open(run / "metrics.jsonl")]


def test_a_runs_config_json_trains_the_same_run_again(data_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    result = invoke("train", *SHORT, "--model", "micro", "--rotate", "5", "--data-dir", data_dir, "--out", a)
    assert result.exit_code == 0, result.output
    result = invoke("train", "--config", a / "config.json", "--device", "cpu", "--data-dir", data_dir, "--out", b)
    assert result.exit_code == 0, result.output
    assert (b / "config.json").read_text() == (a / "config.json").read_text()
    assert metrics(b) == metrics(a)  # epoch for epoch, on the same machine


def test_options_beside_config_override_it_and_a_partial_file_takes_its_networks_defaults(data_dir, tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"model": "micro", "epochs": 1, "max_batches": 2, "translate": 1, "rotate": 7}))
    out = tmp_path / "run"
    result = invoke("train", "--config", mine, "--rotate", "3", "--device", "cpu", "--data-dir", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    expected = asdict(make_config(model="micro", epochs=1, max_batches=2, translate=1.0, rotate=3.0))
    assert json.loads((out / "config.json").read_text()) == expected
    assert expected["lr"] == 0.1  # micro's, not the seed network's


BAD_FILES = {
    "missing": (None, "no such config file"),
    "not JSON": ("{lr: 0.1", "is not JSON"),
    "not an object": ("[0.1]", "holds a JSON list, not an object of settings"),
    "unknown setting": ('{"speed": 2}', "unknown setting 'speed'"),
    "wrong type": ('{"lr": "fast"}', '--lr takes a number, not "fast"'),
    "a bool as a number": ('{"epochs": true}', "--epochs takes a whole number, not true"),
    "impossible value": ('{"epochs": 0}', "--epochs must be at least 1"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_config_file_is_one_line_and_trains_nothing(case, data_dir, tmp_path):
    text, message = BAD_FILES[case]
    path = tmp_path / "config.json"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "run"
    result = invoke("train", "--config", path, "--device", "cpu", "--data-dir", data_dir, "--out", out)
    assert str(path) in one_error_line(result, 2, message)
    assert not out.exists()


def test_config_goes_with_neither_recipe_nor_resume(data_dir, tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    one_error_line(invoke("train", "--config", path, "--recipe", "fast"), 2, "drop --recipe")
    one_error_line(invoke("train", "--resume", tmp_path, "--config", path), 2, "drop --config")


def test_a_config_naming_your_own_code_runs_it_only_when_named_on_the_command_line(data_dir, tmp_path):
    net = tmp_path / "net.py"
    net.write_text("raise SystemExit('this code ran')\n")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": f"{net}:Net"}))
    out = tmp_path / "run"
    result = invoke("train", "--config", path, "--device", "cpu", "--data-dir", data_dir, "--out", out)
    one_error_line(result, 2, f"trains {net}:Net: name its code with --model {net}:Net")
    assert "this code ran" not in result.output and not out.exists()


def test_a_sweeps_run_trains_from_its_config_json_alone(data_dir, tmp_path):
    """The child's command carries no setting: a setting changed only in the run's config.json is used."""
    (planned,) = plan("default", {"epochs": 1, "max_batches": 2}, {}, [1], tmp_path)
    sweep = Sweep(tmp_path, [planned], {}, "cpu", data_dir, 1, 99.4, 3, False)
    command = child_command(Job(planned, State.NEW), sweep)
    planned.folder.mkdir(parents=True)
    changed = {**asdict(planned.config), "lr": 0.0123}
    (planned.folder / "config.json").write_text(json.dumps(changed))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((planned.folder / "config.json").read_text()) == changed
    assert "--lr" not in command and sys.executable == command[0]
