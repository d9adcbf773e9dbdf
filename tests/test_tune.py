"""mnist20k tune on small generated data: trials counted across workers, pruning, the test files never opened,
a study continued after SIGTERM, and every bad input refused with one line and nothing made."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch
from conftest import FAILS_IN_TRAINING, make_mnist_dir, one_error_line
from typer.testing import CliRunner

from mnist20k.cli import app
from mnist20k.data import FILES

runner = CliRunner()
SMALL = ["--model", "micro", "--epochs", "2", "--val", "100", "--batch-size", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_mnist_dir(tmp_path_factory.mktemp("tune-data"), n_train=600, n_test=100)


def tune(data: Path, out: Path, *words: str):
    return runner.invoke(app, ["tune", "--data-dir", str(data), "--out", str(out), *SMALL, *words])


def study_trials(out: Path, name: str | None = None) -> list:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(out / "study.log")))
    return optuna.load_study(study_name=name or out.name, storage=storage).get_trials()


def test_two_workers_share_a_journal_study_and_end_with_exactly_its_trials(data, tmp_path):
    out = tmp_path / "study"
    result = tune(data, out, "--search", "lr=0.02:0.2:log", "--search", "rotate=0,5", "--trials", "5", "--jobs", "2")
    assert result.exit_code == 0, result.output
    trials = study_trials(out)
    assert len(trials) == 5 and all(t.user_attrs["outcome"] in ("complete", "pruned") for t in trials)
    record = json.loads((out / "tune.json").read_text())
    assert record["finished"] == 5 and len(record["trials"]) == 5
    threads = os.environ.get("OMP_NUM_THREADS") or max(1, os.cpu_count() // 2)  # the two workers share the cores
    assert f"{threads} thread" in record["device"]
    assert record["best"][0]["value"] == max(t.value for t in trials if t.value is not None)
    assert "--seeds 1-5" in record["confirm"] and "--val" not in record["confirm"]
    assert f"trial {record['best'][0]['number']}: " in result.output
    for log in ("worker-0.log", "worker-1.log"):  # what each did, and nothing a user can do nothing about
        lines = (out / log).read_text().splitlines()
        assert lines and lines[-1].startswith("worker ") and "Warning" not in "\n".join(lines), lines


def test_each_trial_folder_is_an_ordinary_run_that_eval_scores(data, tmp_path):
    out = tmp_path / "study"
    result = tune(data, out, "--search", "lr=0.05,0.1", "--trials", "2", "--pruner", "none", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds the JSON alone; what tune tells goes to stderr
    assert f"study 'study': 2 trials, 1 worker -> {out}" in result.stderr and "trial 1: " in result.stderr
    assert summary["finished"] == 2 and summary["best"][0]["value"] == max(t.value for t in study_trials(out))
    assert summary["confirm"].startswith("mnist20k sweep --model micro")
    # the command as printed runs, on this device and data, where MNIST20K_DATA_DIR is not set
    words = shlex.split(summary["confirm"].replace("--seeds 1-5", "--seeds 1"))
    assert words[-2:] == ["--out", str(out / "confirm")] and f"--device cpu --data-dir {data}" in summary["confirm"]
    env = {k: v for k, v in os.environ.items() if k != "MNIST20K_DATA_DIR"}
    done = subprocess.run([sys.executable, "-m", "mnist20k", *words[1:]], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((out / "confirm" / "sweep.json").read_text())["complete"]
    for trial in study_trials(out):
        folder = out / trial.user_attrs["folder"]
        assert {"config.json", "metrics.jsonl", "checkpoint.pt", "train.log"} <= {p.name for p in folder.iterdir()}
        metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert trial.value == metrics[-1]["val_accuracy"] and "test_accuracy" not in metrics[-1]
        assert json.loads((folder / "config.json").read_text())["lr"] == trial.params["lr"]
        scored = runner.invoke(app, ["eval", str(folder), "--data-dir", str(data), "--json"])
        assert scored.exit_code == 0, scored.output
        assert json.loads(scored.stdout)["total"] == 100  # the test set: eval's, never tune's


def test_network_arguments_are_searched_and_a_network_over_budget_is_not_trained(data, tmp_path):
    from mnist20k.checkpoint import load_checkpoint

    out = tmp_path / "study"
    words = ["--search", "arg.widths=(4,4,8,8),(8,8,12,12)", "--budget", "3000", "--trials", "4", "--sampler-seed", "1"]
    assert tune(data, out, *words).exit_code == 0
    outcomes = set()
    for t in study_trials(out):
        folder = out / t.user_attrs["folder"]
        outcomes.add(t.user_attrs["outcome"])
        if t.params["arg.widths"] == "[8, 8, 12, 12]":  # micro as it is: 3,968 parameters
            assert t.user_attrs["outcome"] == "over budget" and t.user_attrs["params"] == 3968
            assert not (folder / "metrics.jsonl").exists()
        else:
            assert t.user_attrs["outcome"] == "complete" and t.user_attrs["params"] < 3000
            assert load_checkpoint(folder)["model"]["kwargs"]["widths"] == [4, 4, 8, 8]
            assert json.loads((folder / "config.json").read_text())["args"] == {"widths": [4, 4, 8, 8]}
    assert outcomes == {"complete", "over budget"}


def test_a_hopeless_learning_rate_is_pruned_early(data, tmp_path):
    out = tmp_path / "study"
    words = ["--search", "lr=1e-6:0.3:log", "--trials", "7", "--sampler-seed", "0", "--epochs", "4"]
    assert tune(data, out, *words).exit_code == 0
    trials = study_trials(out)
    pruned = [t for t in trials if t.user_attrs["outcome"] == "pruned"]
    complete = [t for t in trials if t.user_attrs["outcome"] == "complete"]
    assert pruned and complete
    best = max(complete, key=lambda t: t.value)
    for t in pruned:
        epoch = int(t.user_attrs["pruned_at"].split()[-1])
        assert epoch < 4 and t.params["lr"] < best.params["lr"] / 2
        lines = (out / t.user_attrs["folder"] / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == epoch  # the folder keeps the epochs it trained


def test_without_the_test_files_tune_and_train_val_run_end_to_end(tmp_path):
    data = make_mnist_dir(tmp_path / "data", n_train=600, n_test=100)
    for name in FILES[False]:
        (data / "MNIST" / "raw" / name).unlink()
    result = tune(data, tmp_path / "study", "--search", "lr=0.05,0.1", "--trials", "2")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--data-dir", str(data), "--out", str(run), *SMALL])
    assert trained.exit_code == 0, trained.output
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_total"] == 100 and "test_accuracy" not in last
    assert "final val accuracy" in trained.output


def test_the_validation_images_are_the_last_of_the_training_file_and_never_trained_on(data, monkeypatch):
    """Training sees exactly the first 600 - N images: the held-out ones are scored, never stepped on."""
    import torch

    from mnist20k import train as training
    from mnist20k.config import make_config
    from mnist20k.data import load_split

    seen = []
    real = training.BatchStep

    def spy(net, optimizer, images, labels, *args, **kwargs):
        seen.append(images.clone())
        return real(net, optimizer, images, labels, *args, **kwargs)

    monkeypatch.setattr(training, "BatchStep", spy)
    run = training.prepare(make_config(model="micro", val=100, batch_size=64), data, None, "cpu", None, False)
    images, labels = load_split(data, train=True)
    assert torch.equal(seen[0], images[:500]) and torch.equal(run.scored[0], images[500:])
    assert torch.equal(run.scored[1], labels[500:]) and run.split == "val"


def tune_command(data: Path, out: Path, trials: int) -> list[str]:
    """A study of 6-epoch trials, as a process of its own."""
    return [sys.executable, "-m", "mnist20k", "tune", "--data-dir", str(data), "--out", str(out), *SMALL,
            "--epochs", "6", "--search", "lr=0.05:0.1", "--trials", str(trials), "--pruner", "none"]  # fmt: skip


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def test_sigterm_mid_study_then_the_same_command_reaches_its_trials(data, tmp_path, spawn):
    out = tmp_path / "study"
    command = tune_command(data, out, trials=4)
    child = spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "trial-0001" / "metrics.jsonl")  # trial 0 is done and trial 1 has trained an epoch
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    assert "to continue, run the same command" in stderr
    interrupted = [t for t in study_trials(out) if t.state is optuna.trial.TrialState.FAIL]
    assert interrupted and all("outcome" not in t.user_attrs for t in interrupted)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = study_trials(out)
    counted = [t for t in trials if "outcome" in t.user_attrs]
    assert len(counted) == 4
    retried = {t.number: t.system_attrs["retry_history"][-1] for t in counted if "retry_history" in t.system_attrs}
    assert set(retried.values()) == {t.number for t in interrupted}  # Optuna's own record of a retry
    assert all(trials[n].params == trials[of].params for n, of in retried.items())
    told = {t["number"]: t["retry_of"] for t in json.loads((out / "tune.json").read_text())["trials"]}
    assert {n: of for n, of in told.items() if of is not None} == retried


BAD = {
    "an unknown key": (
        ["--search", "speed=1:2"],
        "unknown setting 'speed' (did you mean seed?); see mnist20k train --help",
    ),
    "a mistyped key": (["--search", "lrr=0.1,0.2"], "unknown setting 'lrr' (did you mean lr?)"),
    "a mistyped key with a dash": (["--search", "weight-decy=0:1"], "(did you mean weight-decay?)"),
    "an argument the network does not take": (["--search", "arg.depth=2,3"], "micro takes no argument depth"),
    "a backwards range": (["--search", "lr=0.3:0.01"], "runs backwards"),
    "a log range touching 0": (["--search", "weight-decay=0:1e-3:log"], "a log range must stay above 0"),
    "a value of the wrong type": (["--search", "batch-size=64,big"], "--batch-size takes a whole number, not 'big'"),
    "a value no run can take": (["--search", "lr=-1:1"], "--lr must be a positive number"),
    "no search": ([], "tune needs at least one --search"),
    "a malformed search": (["--search", "lr"], "--search takes KEY=SPEC"),
    "a fixed setting searched": (["--search", "epochs=2,3"], "epochs is fixed for a study"),
    "no validation images": (["--search", "lr=0.1,0.2", "--val", "0"], "--val must be between 1 and 59,000"),
    "too many validation images": (["--search", "lr=0.1,0.2", "--val", "59001"], "--val must be between 1"),
    "a value the network cannot take": (
        ["--search", "arg.widths=abc"],
        "micro cannot be built with --arg widths=abc",
    ),
    "a search key given twice": (["--search", "lr=0.1,0.2", "--search", "lr=0.3:0.4"], "--search lr is given twice"),
    "the seed of a single run": (["--search", "lr=0.1,0.2", "--seed", "3"], "write --seeds 3"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(data, tmp_path, case):
    words, message = BAD[case]
    out = tmp_path / "study"
    argv = ["tune", "--data-dir", str(data), "--out", str(out), *SMALL, "--val", "100", *words]
    result = runner.invoke(app, argv)
    assert message in one_error_line(result, 2, message)
    assert not out.exists()


def test_without_optuna_tune_says_what_to_install(tmp_path):
    hide = "import sys; sys.modules['optuna'] = None; from mnist20k.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", hide, "tune", "--search", "lr=0.1,0.2", "--out", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and done.stderr == "error: tune needs Optuna: pip install 'mnist20k[tune]'\n"
    assert not (tmp_path / "s").exists()


def test_a_study_made_before_a_setting_existed_is_continued_by_the_same_command(data, tmp_path):
    """A setting added since (--ema and the teacher's three) takes its default in the study's record, as in an
    older config.json: the command that made the study continues it."""
    out = tmp_path / "study"
    assert tune(data, out, "--search", "lr=0.05,0.1", "--trials", "1").exit_code == 0
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="study", storage=JournalStorage(JournalFileBackend(str(out / "study.log"))))
    held = study.user_attrs["mnist20k.search"]
    newer = ("ema", "teacher", "distill_weight", "temperature")
    study.set_user_attr(
        "mnist20k.search", {**held, "config": {k: v for k, v in held["config"].items() if k not in newer}}
    )
    result = tune(data, out, "--search", "lr=0.05,0.1", "--trials", "2")
    assert result.exit_code == 0, result.output
    assert "1 trial finished before" in result.output and len(study_trials(out)) == 2
    # a setting the study holds otherwise is still another search
    one_error_line(
        tune(data, out, "--search", "lr=0.05,0.1", "--trials", "3", "--ema", "0.9"), 2, "ema: 0.0 there, 0.9 here"
    )


def test_another_search_in_a_study_folder_is_refused_and_leaves_it_whole(data, tmp_path):
    out = tmp_path / "study"
    assert tune(data, out, "--search", "lr=0.05,0.1", "--trials", "1").exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    result = tune(data, out, "--search", "lr=0.05,0.2", "--trials", "1", "--rotate", "3")
    line = one_error_line(result, 2, "holds another search")
    assert "study 'study' holds another search (rotate: 7.0 there, 3.0 here; search: " in line and "config" not in line
    assert len(line) < 400
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    again = tune(data, out, "--search", "lr=0.05,0.2", "--trials", "1", "--rotate", "3", "--overwrite")
    assert again.exit_code == 0 and len(study_trials(out)) == 1


@pytest.mark.parametrize(
    "url, said",
    [
        ("postgresql+psycopg://nobody@127.0.0.1:9/none", "cannot open --storage"),  # port 9: nothing listens
        ("mysql+pymysql://nobody@127.0.0.1:9/none", "a study shared by many machines lives in PostgreSQL"),
        ("sqlite:///study.db", "a study shared by many machines lives in PostgreSQL"),
    ],
)
def test_a_database_out_of_reach_or_not_postgresql_is_one_line_exit_1_and_creates_nothing(url, said, data, tmp_path):
    out = tmp_path / "study"
    result = tune(data, out, "--search", "lr=0.05,0.1", "--storage", url, "--study", "s")
    assert said in one_error_line(result, 1, said)
    assert not out.exists() and not Path("study.db").exists()


def test_aggregate_min_judges_a_trial_by_its_lowest_seed(data, tmp_path):
    out = tmp_path / "study"
    result = tune(data, out, "--search", "lr=0.05,0.1", "--trials", "2", "--seeds", "1-2", "--aggregate", "min",
                  "--pruner", "none")  # fmt: skip
    assert result.exit_code == 0, result.output
    for t in study_trials(out):
        values = t.user_attrs["seed_values"]
        assert len(values) == 2 and t.value == min(values)
        for k, seed in enumerate((1, 2)):
            metrics = (out / t.user_attrs["folder"] / f"seed-{seed}" / "metrics.jsonl").read_text().splitlines()
            assert json.loads(metrics[-1])["val_accuracy"] == values[k]
            assert (
                json.loads((out / t.user_attrs["folder"] / f"seed-{seed}" / "config.json").read_text())["seed"] == seed
            )
    assert f"(seeds {values[0]:.2f} {values[1]:.2f})" in result.stdout


def test_hyperband_prunes_and_none_trains_every_trial_to_the_end(data, tmp_path):
    words = ["--search", "lr=1e-6:0.3:log", "--trials", "7", "--sampler-seed", "0", "--epochs", "4"]
    assert tune(data, tmp_path / "hyperband", *words, "--pruner", "hyperband").exit_code == 0
    pruned = [t for t in study_trials(tmp_path / "hyperband") if t.user_attrs["outcome"] == "pruned"]
    assert pruned and all(len(t.intermediate_values) < 4 for t in pruned)
    assert tune(data, tmp_path / "none", *words, "--pruner", "none").exit_code == 0
    trials = study_trials(tmp_path / "none")
    assert {t.user_attrs["outcome"] for t in trials} == {"complete"}
    assert all(len(t.intermediate_values) == 4 for t in trials)


def test_the_sampler_seed_picks_the_same_values_again(data, tmp_path):
    words = ["--search", "lr=0.02:0.2:log", "--search", "batch-size=32:96", "--trials", "1", "--max-batches", "1"]
    params = []
    for name in ("a", "b", "c"):
        seed = ["--sampler-seed", "5"] if name != "c" else ["--sampler-seed", "6"]
        assert tune(data, tmp_path / name, *words, *seed).exit_code == 0
        params.append([t.params for t in study_trials(tmp_path / name)])
    assert params[0] == params[1] != params[2]
    # an integer range gives whole numbers within it, and the runs train with them
    for t in study_trials(tmp_path / "a"):
        size = t.params["batch_size"]
        assert isinstance(size, int) and 32 <= size <= 96
        assert json.loads((tmp_path / "a" / t.user_attrs["folder"] / "config.json").read_text())["batch_size"] == size


@pytest.mark.parametrize("how", ["diverged", "failed"])
def test_a_study_where_no_trial_completes_exits_1_and_says_why(how, data, tmp_path):
    out = tmp_path / "study"
    if how == "diverged":
        words = ["--search", "lr=1e20,1e30"]
        said = "training diverged at epoch 1"
    else:
        (tmp_path / "fails.py").write_text(FAILS_IN_TRAINING)
        words = ["--model", f"{tmp_path / 'fails.py'}:Net", "--search", "lr=0.05,0.1"]
        said = "AssertionError: no training"
    result = tune(data, out, *words, "--trials", "2", "--sampler-seed", "0")
    line = one_error_line(result, 1, "no trial of the study completed")
    assert line.startswith(f"error: no trial of the study completed (2 {how}); trial 0: ") and said in line
    assert line.endswith(f"see {out / 'tune.json'}")
    assert {t.user_attrs["outcome"] for t in study_trials(out)} == {how}
    assert json.loads((out / "tune.json").read_text())["confirm"] is None


def test_a_password_in_storage_is_in_no_message(data, tmp_path):
    out = tmp_path / "study"
    url = "postgresql+psycopg://someone:s3cret-w0rd@127.0.0.1:9/none"  # nothing listens on port 9
    result = tune(data, out, "--search", "lr=0.05,0.1", "--storage", url, "--study", "s")
    line = one_error_line(result, 1, "cannot open --storage")
    assert "s3cret-w0rd" not in result.output and "someone:***@127.0.0.1:9" in line


def test_study_png_draws_the_history_and_the_importances_side_by_side(tmp_path):
    """One figure: each complete trial (C0) and the best so far (C1) in the left panel, the importances' bars (C2)
    in the right one; with a single complete trial there is nothing to draw."""
    pytest.importorskip("matplotlib")
    from torchvision.io import decode_image

    from mnist20k.tune.record import importances, save_plot

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 99 + t.suggest_float("lr", 0.01, 0.1) - t.suggest_float("rotate", 0, 1) / 10, 12)
    shares = importances(study)
    assert set(shares) == {"lr", "rotate"}
    assert save_plot(study, shares, tmp_path / "study.png")
    image = decode_image(str(tmp_path / "study.png"))
    width = image.shape[2]
    for colour, left in (((31, 119, 180), True), ((255, 127, 14), True), ((44, 160, 44), False)):
        where = (image[:3].int() - torch.tensor(colour)[:, None, None]).abs().amax(0).le(12).nonzero()
        assert len(where) > 100, colour
        columns = where[:, 1]
        assert (columns.max() < width / 2) if left else (columns.min() > width / 2), colour
    lone = optuna.create_study(direction="maximize")
    lone.optimize(lambda t: t.suggest_float("lr", 0.01, 0.1), 1)
    assert not save_plot(lone, {}, tmp_path / "lone.png") and not (tmp_path / "lone.png").exists()


def test_optuna_dashboard_shows_a_finished_study_from_its_journal(data, tmp_path, spawn):
    """docs/tune.md's command: optuna-dashboard on the study's journal, on 127.0.0.1; its API lists the study."""
    dashboard = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    out = tmp_path / "study"
    done = tune(data, out, "--search", "lr=0.05,0.1", "--trials", "2")
    assert done.exit_code == 0, done.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(tmp_path / "dashboard.log", "w") as log:
        server = spawn([dashboard, "--host", "127.0.0.1", "--port", port, "--quiet", out / "study.log"],
                       stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as answer:
                studies = json.load(answer)["study_summaries"]
            break
        except OSError:
            assert server.poll() is None, (tmp_path / "dashboard.log").read_text()
            assert time.monotonic() < deadline, "the dashboard did not answer in 120 s"
            time.sleep(0.5)
    assert [(s["study_name"], s["directions"]) for s in studies] == [("study", ["maximize"])]
    server.terminate()
    assert server.wait(timeout=30) is not None
