"""`mnist20k sweep`: seeds and grids expand as stated, runs in parallel give the numbers of runs one at a
time, an interrupted sweep resumes to the result of an uninterrupted one, and bad input is one line."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAILS_IN_TRAINING, one_error_line
from typer.testing import CliRunner

from mnist20k.checkpoint import load_checkpoint
from mnist20k.cli import app
from mnist20k.cli.render_sweep import verdict
from mnist20k.results import summarize
from mnist20k.sweep import parse_grid, parse_seeds, plan

runner = CliRunner()

# Two seeds of a few short epochs: long enough to interrupt in the middle of a run, seconds in all.
SMALL = ["--seeds", "1-2", "--epochs", "4", "--max-batches", "8", "--batch-size", "64", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def epochs_of(out: Path) -> dict:
    """seed folder -> its per-epoch records without the timings, as sweep.json holds them."""
    record = json.loads((out / "sweep.json").read_text())
    return {
        r["folder"]: [{k: v for k, v in e.items() if k != "seconds"} for e in r["epochs"]]
        for c in record["configurations"]
        for r in c["runs"]
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir) -> Path:
    """The sweep run from start to end, one run at a time."""
    out = tmp_path_factory.mktemp("sweeps") / "reference"
    result = invoke("sweep", *SMALL, "--jobs", "1", "--data-dir", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# ---- what runs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, seeds",
    [(["1-5"], [1, 2, 3, 4, 5]), (["1 3 7"], [1, 3, 7]), (["1,3", "8-9"], [1, 3, 8, 9]), (["2-3 3-4"], [2, 3, 4])],
)
def test_seeds_take_lists_and_ranges(given, seeds):
    assert parse_seeds(given) == seeds


def test_a_grid_is_every_combination_for_every_seed(tmp_path):
    grid = parse_grid(["lr=0.05,0.1", "batch-size=32,64", "nesterov=off"], {})
    assert grid == {"lr": [0.05, 0.1], "batch_size": [32, 64], "nesterov": [False]}
    runs = plan("default", {"epochs": 3}, grid, [1, 2], tmp_path)
    assert len(runs) == 2 * 2 * 1 * 2
    assert [str(r.folder.relative_to(tmp_path)) for r in runs[:3]] == [
        "lr=0.05,batch_size=32,nesterov=off/seed-1",
        "lr=0.05,batch_size=32,nesterov=off/seed-2",
        "lr=0.05,batch_size=64,nesterov=off/seed-1",
    ]
    last = runs[-1].config
    assert (last.lr, last.batch_size, last.nesterov, last.seed, last.epochs) == (0.1, 64, False, 2, 3)
    assert [str(r.folder.relative_to(tmp_path)) for r in plan("fast", {}, {}, [4], tmp_path)] == ["seed-4"]


BAD = {
    "reversed range": (["--seeds", "5-1"], "reversed range"),
    "no seeds": (["--seeds", " "], "no seeds given"),
    "not a seed": (["--seeds", "one"], "is not a seed or a range"),
    "negative seed": (["--seeds", "1 -3"], "'-3' is not a seed or a range"),
    "unknown key": (["--set", "speed=1,2"], "unknown setting 'speed'"),
    "wrong type": (["--set", "lr=fast"], "--lr takes a number, not 'fast'"),
    "not a whole number": (["--set", "epochs=1.5"], "--epochs takes a whole number"),
    "not on or off": (["--set", "nesterov=maybe"], "--nesterov is on or off"),
    "no values": (["--set", "lr="], "write KEY=VALUE"),
    "seed in the grid": (["--set", "seed=1,2"], "the seeds come from --seeds"),
    "key twice": (["--set", "lr=0.1", "--set", "lr=0.2"], "given twice"),
    "option and grid": (["--lr", "0.1", "--set", "lr=0.2"], "--lr and --set lr both set it"),
    "no jobs": (["--jobs", "0"], "Invalid value for '--jobs'"),
    "impossible value": (["--set", "epochs=0,2"], "--epochs must be at least 1"),
    "no last epochs": (["--last", "0"], "Invalid value for '--last'"),
    "a target of 0": (["--target", "0"], "--target is a percentage in (0, 100], got 0.0"),
    "a target over 100": (["--target", "100.5"], "--target is a percentage in (0, 100], got 100.5"),
    "the seed of a single run": (["--seed", "3"], "sweep trains the seeds of --seeds; write --seeds 3"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_creates_nothing(case, data_dir, tmp_path):
    args, text = BAD[case]
    out = tmp_path / "sweep"
    one_error_line(invoke("sweep", *args, "--data-dir", data_dir, "--out", out, "--device", "cpu"), 2, text)
    assert not out.exists()


# ---- running ----------------------------------------------------------------------------------


def test_the_reference_sweep_writes_run_folders_and_its_record(reference, data_dir):
    for seed in (1, 2):
        ckpt = load_checkpoint(reference / f"seed-{seed}")
        assert ckpt["epoch"] == 4 and ckpt["config"]["seed"] == seed
    record = json.loads((reference / "sweep.json").read_text())
    assert record["complete"] and record["seeds"] == [1, 2] and record["settings"]["overrides"]["epochs"] == 4
    (configuration,) = record["configurations"]
    finals = [r["epochs"][-1]["test_accuracy"] for r in configuration["runs"]]
    assert configuration["summary"]["mean"] == statistics.mean(finals)  # from the runs' own records
    # eval works on a sweep's run folder as on any other
    scored = invoke("eval", reference / "seed-2", "--data-dir", data_dir, "--device", "cpu", "--json")
    assert json.loads(scored.stdout)["accuracy"] == finals[1]


COUNTS_THREADS = """from pathlib import Path

import torch
from torch import nn


class Net(nn.Linear):
    def __init__(self):
        super().__init__(784, 10)
        Path(__file__).with_name(f"threads-{torch.get_num_threads()}").touch()  # wherever it is built

    def forward(self, x):
        return super().forward(x.flatten(1))
"""


def test_the_record_names_the_thread_count_the_runs_trained_with(data_dir, tmp_path):
    """A CPU run's numbers depend on its thread count: one thread, set for the sweep (PyTorch's default is
    one per core, and it never goes above that), is what its runs train with and what sweep.json states."""
    threads = 1
    net = tmp_path / "net.py"
    net.write_text(COUNTS_THREADS)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "mnist20k", "sweep", "--model", f"{net}:Net", "--seeds", "1", "--epochs", "1",
           "--max-batches", "1", "--device", "cpu", "--data-dir", str(data_dir), "--out", str(out)]  # fmt: skip
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in tmp_path.glob("threads-*")] == [f"threads-{threads}"]
    assert ", 1 thread a run)" in json.loads((out / "sweep.json").read_text())["device"]


def test_two_jobs_give_exactly_the_numbers_of_one(reference, data_dir, tmp_path):
    out = tmp_path / "parallel"
    result = invoke("sweep", *SMALL, "--jobs", "2", "--data-dir", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "2 at a time" in result.stdout
    assert epochs_of(out) == epochs_of(reference)


def test_rerun_skips_finished_runs_and_a_different_sweep_is_refused(reference, data_dir, tmp_path):
    stamps = {p: p.stat().st_mtime_ns for p in reference.glob("seed-*/checkpoint.pt")}
    again = invoke("sweep", *SMALL, "--data-dir", data_dir, "--out", reference, "--json")
    assert again.exit_code == 0, again.output
    assert again.stderr.count("finished before, skipped") == 2  # --json: stdout holds the JSON alone
    assert {p: p.stat().st_mtime_ns for p in reference.glob("seed-*/checkpoint.pt")} == stamps
    summary = json.loads(again.stdout)
    record = json.loads((reference / "sweep.json").read_text())
    assert summary["configurations"][0]["summary"] == record["configurations"][0]["summary"]

    other = invoke("sweep", *SMALL, "--lr", "0.1", "--data-dir", data_dir, "--out", reference)
    one_error_line(other, 2, "holds a different sweep; pass --overwrite")
    assert {p: p.stat().st_mtime_ns for p in reference.glob("seed-*/checkpoint.pt")} == stamps
    (tmp_path / "notes.txt").write_text("mine")
    one_error_line(invoke("sweep", *SMALL, "--data-dir", data_dir, "--out", tmp_path), 2, "holds no sweep.json")


def start_until_first_epoch(spawn, command: list[str], out: Path, sigint) -> subprocess.Popen:
    """The sweep process, with SIGINT handled as `sigint`, once its first run has finished an epoch."""
    proc = spawn(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )  # fmt: skip
    first = out / "seed-1" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (first.exists() and first.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.time() < deadline, proc.communicate(timeout=60)
        time.sleep(0.02)
    return proc


def test_an_interrupted_sweep_resumes_to_the_uninterrupted_result(reference, data_dir, tmp_path, spawn):
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "mnist20k", "sweep", *SMALL, "--data-dir", str(data_dir), "--out", str(out)]
    # A shell starts background jobs with SIGINT ignored; give the child the default, as a terminal's job has.
    proc = start_until_first_epoch(spawn, command, out, signal.SIG_DFL)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, in the middle of the first run
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: each run's last completed epoch is saved in {out}; to continue, run the same command "
        f"with --out {out}"
    )
    saved = [load_checkpoint(p)["epoch"] for p in sorted(out.glob("seed-*/checkpoint.pt"))]
    assert saved, saved
    # the run in progress was stopped, not left to finish
    assert "interrupted: the last completed epoch is saved" in (out / "seed-1" / "train.log").read_text()
    assert not json.loads((out / "sweep.json").read_text())["complete"]

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "seed 1: resuming after its last saved epoch" in resumed.stdout
    assert epochs_of(out) == epochs_of(reference)


def test_a_sweep_started_in_the_background_stops_its_runs_on_sigterm(data_dir, tmp_path, spawn):
    """As `nohup mnist20k sweep ... &` from a script starts it: SIGINT ignored, in the sweep and its runs."""
    out = tmp_path / "background"
    command = [sys.executable, "-m", "mnist20k", "sweep", *SMALL, "--data-dir", str(data_dir), "--out", str(out)]
    proc = start_until_first_epoch(spawn, command, out, signal.SIG_IGN)
    proc.terminate()
    stdout, stderr = proc.communicate(timeout=60)  # the runs are not left to be killed after STOP_WAIT_S
    assert proc.returncode == 143, stdout + stderr
    assert "interrupted: the last completed epoch is saved" in (out / "seed-1" / "train.log").read_text()


CTRL_C_AS_A_RUN_STARTS = """
import os, signal, subprocess, sys, time
from pathlib import Path

from mnist20k.sweep import Interrupted, Sweep, plan, run

# As at a terminal: a script started in the background by a shell (CI's, say) begins with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
real_popen, started = subprocess.Popen, []


def popen_then_ctrl_c(*args, **kwargs):
    child = real_popen(*args, **kwargs)
    started.append(child)
    os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, landing the moment the run has started
    time.sleep(0.5)  # while whoever started it is still on the way to note it down
    return child


subprocess.Popen = popen_then_ctrl_c
data_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = plan("default", {"epochs": 3, "max_batches": 2, "batch_size": 32}, {}, [1], out)
try:
    run(Sweep(out, runs, {}, "cpu", data_dir, 1, 99.4, 3))
except Interrupted as e:
    print("interrupted", e.code)
print(started[0].poll())
"""


def test_ctrl_c_as_a_run_starts_stops_that_run_too(data_dir, tmp_path):
    """No run is left training on its own when Ctrl-C lands between starting a run and noting it down."""
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_AS_A_RUN_STARTS, str(data_dir), str(tmp_path / "sweep")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    interrupted, code = done.stdout.split("\n")[:2]
    assert interrupted == "interrupted 130"
    assert code in ("143", "-15"), code  # stopped by the sweep's SIGTERM, in training or still starting


# ---- the summary ------------------------------------------------------------------------------


def records(*accuracies: float) -> list[dict]:
    return [{"epoch": i + 1, "test_accuracy": a, "seconds": 10.0} for i, a in enumerate(accuracies)]


def test_summary_is_statistics_of_the_records():
    runs = {
        1: records(99.1, 99.42, 99.45, 99.50),
        2: records(99.3, 99.41, 99.39, 99.44),
        7: records(99.6, 99.61, 99.63),
    }
    s = summarize(runs, target=99.4, last=3)
    finals = [99.50, 99.44, 99.63]
    assert s["mean"] == statistics.mean(finals) and s["std"] == statistics.stdev(finals) and s["min"] == 99.44
    assert s["lowest_of_last"] == {"1": 99.42, "2": 99.39, "7": 99.6}
    assert s["misses"] == [2] and not s["holds"]
    assert s["time_to_target"]["1"] == {"epoch": 2, "seconds": 20.0} and s["loop_seconds"]["7"] == 30.0
    assert summarize({1: records(99.5)}, last=3)["std"] is None  # one run has no spread
    assert summarize(runs, target=99.3, last=2)["holds"]


def test_verdict_says_yes_or_which_seeds_miss():
    def record(misses, grid=None):
        summary = {"misses": misses, "seeds": [1], "last": 3}
        configuration = {"grid": grid or {}, "summary": summary, "runs": [{"seed": 1, "status": "done"}]}
        return {"target": 99.4, "last": 3, "complete": True, "holds": not misses, "configurations": [configuration]}

    assert verdict(record([])) == "every seed ≥ 99.40% on each of its last 3 epochs: yes"
    assert verdict(record([2, 5], {"lr": 0.1})).endswith(": no (seed 2 (lr=0.1), seed 5 (lr=0.1) missed it)")
    assert "not known yet" in verdict({**record([]), "complete": False})


def test_runs_shorter_than_last_are_judged_and_told_on_the_epochs_they_have():
    s = summarize({1: records(99.1, 99.5), 2: records(99.45, 99.5)}, target=99.4, last=3)
    assert s["last"] == 2 and s["lowest_of_last"] == {"1": 99.1, "2": 99.45} and s["misses"] == [1]
    record = {"target": 99.4, "last": 3, "complete": True, "holds": False,
              "configurations": [{"grid": {}, "summary": s, "runs": []}]}  # fmt: skip
    assert verdict(record) == "every seed ≥ 99.40% on each of its last 2 epochs: no (seed 1 missed it)"
    longer = {"grid": {"epochs": 4}, "summary": summarize({1: records(99.5, 99.5, 99.5, 99.5)}, last=3), "runs": []}
    record["configurations"].append(longer)
    assert verdict(record).startswith("every seed ≥ 99.40% on each of its last 3 (2 where the runs are shorter) epochs")


def test_a_failed_run_is_told_and_the_sweep_exits_1(data_dir, tmp_path):
    net = tmp_path / "fails.py"  # builds and scores, but fails once it trains: found only by the run itself
    net.write_text(FAILS_IN_TRAINING)
    out = tmp_path / "sweep"
    result = invoke("sweep", "--model", f"{net}:Net", "--seeds", "1", "--epochs", "1", "--max-batches", "2",
                    "--device", "cpu", "--data-dir", data_dir, "--out", out)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"seed 1: failed (exit 1): error: --model {net}:Net: {net}:9: AssertionError: no training" in result.stdout
    assert result.stdout.strip().endswith("not known, seed 1 failed (see its train.log)")
    record = json.loads((out / "sweep.json").read_text())
    assert record["configurations"][0]["runs"][0]["status"] == "failed" and not record["complete"]


QUICK = ["--epochs", "1", "--max-batches", "2", "--batch-size", "64", "--device", "cpu"]


def test_a_set_grid_runs_end_to_end_from_the_command_line(data_dir, tmp_path):
    out = tmp_path / "grid"
    result = invoke("sweep", "--set", "lr=0.05,0.1", "--set", "nesterov=off", "--seeds", "1", *QUICK,
                    "--data-dir", data_dir, "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((out / "sweep.json").read_text())
    assert [c["grid"] for c in record["configurations"]] == [
        {"lr": 0.05, "nesterov": False},
        {"lr": 0.1, "nesterov": False},
    ]
    for c in record["configurations"]:
        run = out / c["runs"][0]["folder"]
        config = json.loads((run / "config.json").read_text())
        assert (config["lr"], config["nesterov"]) == (c["grid"]["lr"], False) and load_checkpoint(run)["epoch"] == 1
        assert f"seed 1 (lr={c['grid']['lr']},nesterov=off): final" in result.stdout
    assert [str(r["folder"]) for c in record["configurations"] for r in c["runs"]] == [
        "lr=0.05,nesterov=off/seed-1",
        "lr=0.1,nesterov=off/seed-1",
    ]


def test_more_seeds_add_runs_to_an_existing_sweep(data_dir, tmp_path):
    out = tmp_path / "sweep"
    words = ("sweep", *QUICK, "--data-dir", data_dir, "--out", out)
    assert invoke(*words, "--seeds", "1").exit_code == 0
    first = (out / "seed-1" / "checkpoint.pt").stat().st_mtime_ns
    more = invoke(*words, "--seeds", "1-2")
    assert more.exit_code == 0, more.output
    assert "seed 1: finished before, skipped" in more.stdout and "seed 2: final" in more.stdout
    assert (out / "seed-1" / "checkpoint.pt").stat().st_mtime_ns == first
    assert json.loads((out / "sweep.json").read_text())["seeds"] == [1, 2]


def test_overwrite_replaces_a_different_sweep(data_dir, tmp_path):
    out = tmp_path / "sweep"
    assert invoke("sweep", "--seeds", "1", *QUICK, "--data-dir", data_dir, "--out", out).exit_code == 0
    again = invoke("sweep", "--seeds", "1", *QUICK, "--lr", "0.02", "--data-dir", data_dir, "--out", out, "--overwrite")
    assert again.exit_code == 0, again.output
    assert "finished before" not in again.stdout
    assert json.loads((out / "seed-1" / "config.json").read_text())["lr"] == 0.02
    assert json.loads((out / "sweep.json").read_text())["settings"]["overrides"]["lr"] == 0.02


def test_a_run_folder_holding_other_settings_is_refused(data_dir, tmp_path):
    from mnist20k.config import make_config
    from mnist20k.train import train

    out = tmp_path / "sweep"
    words = ("sweep", "--seeds", "1", *QUICK, "--data-dir", data_dir, "--out", out)
    assert invoke(*words).exit_code == 0
    # the sweep's run replaced by one of other settings
    train(make_config(epochs=1, max_batches=2, lr=0.3), data_dir=data_dir, out_dir=out / "seed-1", device="cpu",
          overwrite=True)  # fmt: skip
    before = (out / "seed-1" / "checkpoint.pt").read_bytes()
    result = invoke(*words)
    one_error_line(result, 2, f"{out / 'seed-1'} holds a run with other settings; pass --overwrite to replace it")
    assert (out / "seed-1" / "checkpoint.pt").read_bytes() == before


def test_the_target_decides_the_verdict(reference, data_dir):
    """Rerun over the finished reference sweep: nothing trains, the verdict is made again at each target."""
    lowest = min(r["epochs"][-1]["test_accuracy"] for r in json.loads((reference / "sweep.json").read_text())[
        "configurations"][0]["runs"])  # fmt: skip
    for target, holds in ((lowest / 2, "yes"), (100.0, "no")):
        result = invoke("sweep", *SMALL, "--target", target, "--last", 1, "--data-dir", data_dir, "--out", reference)
        assert result.exit_code == 0, result.output
        assert f"every seed ≥ {target:.2f}% on its last epoch: {holds}" in result.stdout
        assert json.loads((reference / "sweep.json").read_text())["target"] == target


def test_a_sweep_on_validation_images_never_opens_the_test_files(tmp_path):
    from conftest import make_mnist_dir

    from mnist20k.data import FILES

    data = make_mnist_dir(tmp_path / "data")
    for name in FILES[False]:
        (data / "MNIST" / "raw" / name).unlink()
    out = tmp_path / "sweep"
    result = invoke("sweep", "--seeds", "1", *QUICK, "--val", "100", "--data-dir", data, "--out", out)
    assert result.exit_code == 0, result.output
    last = json.loads((out / "seed-1" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_total"] == 100 and "test_accuracy" not in last


def test_json_puts_the_json_alone_on_stdout_and_counts_in_words(data_dir, tmp_path):
    """`sweep --json | python -c 'import json, sys; json.load(sys.stdin)'` works: what it tells goes to stderr."""
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "mnist20k", "sweep", "--seeds", "1", *QUICK, "--data-dir", str(data_dir),
               "--out", str(out), "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["configurations"][0]["summary"]["seeds"] == [1]
    assert f"sweep of 1 run, 1 at a time -> {out}" in done.stderr
    # one epoch: its final accuracy is all there is to judge, and the line says nothing more of it
    assert re.search(r"seed 1: final \d+\.\d\d% \(\d+ s\)", done.stderr) and "lowest of" not in done.stderr
