"""Checkpoints, resume, interrupts, divergence, and every kind of bad input the CLI must refuse cleanly."""

import hashlib
import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from conftest import Lines, StopAfter, one_error_line
from typer.testing import CliRunner

from mnist20k import __version__
from mnist20k.checkpoint import FORMAT_VERSION, load_checkpoint
from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.data import FILES
from mnist20k.errors import CheckpointError, TrainingDiverged, UsageError
from mnist20k.train import train

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SHORT = dict(epochs=3, max_batches=3, batch_size=32, dropout=0.1)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("good") / "run"
    train(make_config(**SHORT), data_dir=data_dir, out_dir=out, device="cpu")
    return out


# ---- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_is_self_describing_and_weights_only(good_run):
    ckpt = torch.load(good_run / "checkpoint.pt", weights_only=True)
    assert ckpt["format"] == "mnist20k-checkpoint" and ckpt["format_version"] == FORMAT_VERSION
    assert ckpt["model"] == {"name": "base", "kwargs": {"widths": [16, 32, 20, 32, 16, 16], "dropout": 0.1}}
    assert ckpt["config"]["epochs"] == 3 and ckpt["epoch"] == 3 and len(ckpt["metrics"]) == 3
    assert ckpt["mnist20k_version"] == __version__
    assert {"optimizer_state", "scheduler_state", "rng"} <= set(ckpt)


def bad_checkpoints(good_run, tmp_path):
    """(name, path) of every kind of file that is not a usable checkpoint."""
    good = good_run / "checkpoint.pt"
    ckpt = torch.load(good, weights_only=True)
    cases = {}

    def file(name, data: bytes):
        cases[name] = tmp_path / f"{name}.pt"
        cases[name].write_bytes(data)

    cases["missing"] = tmp_path / "missing.pt"
    cases["folder without checkpoint"] = tmp_path / "empty-folder"
    cases["folder without checkpoint"].mkdir()
    file("empty", b"")
    file("truncated", good.read_bytes()[: good.stat().st_size // 2])
    file("random bytes", os.urandom(4096))
    file("text", b"epoch 20: 99.6%\n" * 20)
    for name, obj in {
        "plain tensor": torch.zeros(3),
        "foreign dict": {"state_dict": ckpt["model_state"]},
        "newer format": {**ckpt, "format_version": FORMAT_VERSION + 1},
        "weights of another model": {**ckpt, "model": {"name": "tiny", "kwargs": {"dropout": 0.0}}},
        "unknown model": {**ckpt, "model": {"name": "resnet", "kwargs": {}}},
        "missing keys": {k: v for k, v in ckpt.items() if k != "model_state"},
    }.items():
        cases[name] = tmp_path / f"{name}.pt"
        torch.save(obj, cases[name])
    return cases


EXPECTED = {
    "missing": "no such checkpoint",
    "folder without checkpoint": "without a checkpoint.pt",
    "empty": "is empty",
    "truncated": "not a readable checkpoint",
    "random bytes": "not a readable checkpoint",
    "text": "not a readable checkpoint",
    "plain tensor": "not an mnist20k checkpoint",
    "foreign dict": "not an mnist20k checkpoint",
    "newer format": "newer than this mnist20k reads",
    "weights of another model": "holds tiny (18,448 parameters), and its weights do not fit tiny as asked",
    "unknown model": "names a network this mnist20k cannot build",
    "missing keys": "incomplete mnist20k checkpoint",
}


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_bad_checkpoints_are_refused_with_one_line(command, good_run, data_dir, tmp_path):
    cases = bad_checkpoints(good_run, tmp_path)
    assert set(cases) == set(EXPECTED)
    for name, path in cases.items():
        before = digest(path) if path.is_file() else None
        if command == "eval":
            result = invoke("eval", path, "--data-dir", data_dir, "--device", "cpu")
        else:
            result = invoke("train", "--resume", path, "--data-dir", data_dir, "--device", "cpu")
        try:
            one_error_line(result, 1, EXPECTED[name])
        except AssertionError as e:
            raise AssertionError(f"{command} of {name!r}: {e}") from None
        if before is not None:
            assert digest(path) == before, name


class Boom:
    """A pickle that would create a file if unpickling ran it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("as_torch_file", [True, False])
def test_code_carrying_pickle_never_runs(as_torch_file, tmp_path, data_dir):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "mnist20k-checkpoint", "boom": Boom(marker)}
    if as_torch_file:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    one_error_line(invoke("eval", path, "--data-dir", data_dir), 1, "refused")
    one_error_line(invoke("train", "--resume", path, "--data-dir", data_dir), 1, "refused")
    assert not marker.exists()


# ---- resume -----------------------------------------------------------------------------------


def without_time(metrics):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in metrics]


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(good_run, data_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(make_config(**SHORT), data_dir=data_dir, out_dir=out, device="cpu", on_epoch=StopAfter(1))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(UsageError, match="this config changes epochs, batch_size, dropout, max_batches"):
        train(make_config(), data_dir=data_dir, out_dir=out, device="cpu", resume=out)
    metrics = train(data_dir=data_dir, out_dir=out, device="cpu", resume=out)  # the checkpoint's own config

    expected = torch.load(good_run / "checkpoint.pt", weights_only=True)
    resumed = torch.load(out / "checkpoint.pt", weights_only=True)
    assert without_time(metrics) == without_time(expected["metrics"])
    for name, tensor in expected["model_state"].items():
        assert torch.equal(tensor, resumed["model_state"][name]), name
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert without_time(lines) == without_time(expected["metrics"])


def test_cli_resume_continues_in_the_run_folder(data_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(make_config(**SHORT), data_dir=data_dir, out_dir=out, device="cpu", on_epoch=StopAfter(2))
    result = invoke("train", "--resume", out, "--data-dir", data_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "epoch 3/3" in result.stdout and "epoch 1/3" not in result.stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    one_error_line(invoke("train", "--resume", out, "--data-dir", data_dir), 2, "nothing to resume")
    one_error_line(invoke("train", "--resume", out, "--lr", "0.1", "--data-dir", data_dir), 2, "drop --lr")


# ---- interrupts -------------------------------------------------------------------------------


def start_cli(spawn, data_dir, out, *extra, sigint=signal.SIG_DFL):
    """`mnist20k train` as a child process (SIGINT handled as `sigint`), and its output line by line."""
    cmd = [sys.executable, "-m", "mnist20k", "train", "--data-dir", str(data_dir), "--out", str(out)]
    cmd += ["--device", "cpu", "--epochs", "200", "--max-batches", "2", "--batch-size", "32", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A shell starts background jobs with SIGINT ignored, and Python keeps it so; give the child the
    # default back, as a terminal's foreground job has it.
    restore = lambda: signal.signal(signal.SIGINT, sigint)  # noqa: E731
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=restore)
    return proc, Lines(proc.stdout)


def wait_for_epoch(output: Lines, n: int = 1) -> list[str]:
    """The child's epoch lines, once it has printed `n` of them."""
    deadline = time.time() + 120
    lines: list[str] = []
    while len(lines) < n:
        line = output.next(timeout=max(1, deadline - time.time()))
        assert line is not None, "the child ended before its epoch " + str(n)
        if line.startswith("epoch "):
            lines.append(line)
    return lines


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_cleanly_with_a_resumable_checkpoint(sig, code, data_dir, tmp_path, spawn):
    out = tmp_path / "run"
    proc, output = start_cli(spawn, data_dir, out)
    wait_for_epoch(output, 2)
    assert proc.poll() is None
    proc.send_signal(sig)
    proc.wait(timeout=60)
    stderr = proc.stderr.read()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"resume with: mnist20k train --resume {out}" in stderr
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] >= 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= ckpt["epoch"]


def test_a_train_started_in_the_background_stops_cleanly_on_sigterm(data_dir, tmp_path, spawn):
    """As `nohup mnist20k train ... &` from a script starts it: SIGINT ignored, so Ctrl-C cannot reach it, and
    kill PID (SIGTERM) stops it as Ctrl-C would, its last epoch saved."""
    out = tmp_path / "run"
    proc, output = start_cli(spawn, data_dir, out, sigint=signal.SIG_IGN)
    wait_for_epoch(output, 1)
    proc.send_signal(signal.SIGINT)  # ignored, as in any background job
    wait_for_epoch(output, 1)
    assert proc.poll() is None
    proc.terminate()
    proc.wait(timeout=60)
    stderr = proc.stderr.read()
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    assert f"resume with: mnist20k train --resume {out}" in stderr
    assert load_checkpoint(out)["epoch"] >= 2


def test_hard_kill_loses_at_most_the_epoch_in_progress(data_dir, tmp_path, spawn):
    """SIGKILL right after epoch 3 is reported: every reported epoch is in the checkpoint, with the numbers
    that were printed, metrics.jsonl agrees with it, and the run resumes from there."""
    out = tmp_path / "run"
    proc, output = start_cli(spawn, data_dir, out)
    printed = wait_for_epoch(output, 3)
    proc.kill()
    proc.wait(timeout=60)
    ckpt = load_checkpoint(out)
    epoch = ckpt["epoch"]
    assert epoch >= 3
    for line, record in zip(printed, ckpt["metrics"], strict=False):
        shown = re.match(r"epoch +(\d+)/\d+ .* test_acc (\d+)/", line)
        assert shown and shown.groups() == (str(record["epoch"]), str(record["test_correct"])), line
    # the checkpoint is written first, then metrics.jsonl: a kill between leaves it one epoch behind
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) in (epoch - 1, epoch) and lines == ckpt["metrics"][: len(lines)]

    # The run goes on from there, and clears what a kill in the middle of a write leaves behind.
    (out / ".checkpoint.pt.0badc0de.tmp").write_bytes(b"half a checkpoint")
    with pytest.raises(KeyboardInterrupt):
        train(data_dir=data_dir, out_dir=out, device="cpu", resume=out, on_epoch=StopAfter(epoch + 1))
    assert load_checkpoint(out)["epoch"] == epoch + 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]


# ---- divergence -------------------------------------------------------------------------------


TURNS_TO_NAN = """import torch
from torch import nn


class Net(nn.Module):
    \"\"\"A network whose forward pass gives NaN from its fourth training step on: epoch 2 of 3-step epochs.\"\"\"

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 28)
        self.steps = 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.steps > 3:
                x = x * float("nan")
        return torch.log_softmax(self.conv(x).flatten(1), dim=1)
"""


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    (tmp_path / "nan.py").write_text(TURNS_TO_NAN)
    out = tmp_path / "run"
    config = make_config(**{**SHORT, "dropout": 0.0}, model=f"{tmp_path / 'nan.py'}:Net")
    with pytest.raises(TrainingDiverged, match="training diverged at epoch 2 .*; epoch 1's checkpoint is kept"):
        train(config, data_dir=data_dir, out_dir=out, device="cpu")
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 1 and len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert all(torch.isfinite(t).all() for t in ckpt["model_state"].values() if t.is_floating_point())


def test_divergence_is_one_line_from_the_cli(data_dir, tmp_path):
    result = invoke("train", "--lr", "1e30", "--epochs", 1, "--max-batches", 3, "--data-dir", data_dir,
                    "--out", tmp_path / "run", "--device", "cpu")  # fmt: skip
    one_error_line(result, 1, "diverged")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ---- data folders -----------------------------------------------------------------------------


def damage(raw, kind: str) -> None:
    images, labels = (raw / name for name in FILES[True])
    if kind == "truncated file":
        images.write_bytes(images.read_bytes()[:-100])
    elif kind == "wrong magic":
        labels.write_bytes(struct.pack(">i", 2051) + labels.read_bytes()[4:])
    elif kind == "wrong dimensions":
        n = struct.unpack(">i", images.read_bytes()[4:8])[0]
        images.write_bytes(struct.pack(">4i", 2051, n, 32, 32) + bytes(n * 32 * 32))
    elif kind == "count mismatch":
        labels.write_bytes(struct.pack(">2i", 2049, 10) + bytes(10))
    elif kind == "labels above 9":
        n = struct.unpack(">i", labels.read_bytes()[4:8])[0]
        labels.write_bytes(struct.pack(">2i", 2049, n) + bytes([42]) * n)


@pytest.mark.parametrize(
    "kind, text",
    [
        ("truncated file", "truncated or corrupt"),
        ("wrong magic", "magic number 2051, expected 2049"),
        ("wrong dimensions", "32x32 images, not 28x28"),
        ("count mismatch", "has 512 images but train-labels-idx1-ubyte has 10 labels"),
        ("labels above 9", "labels above 9"),
    ],
)
def test_damaged_data_is_refused_and_left_alone(kind, text, fresh_data_dir, tmp_path):
    raw = fresh_data_dir / "MNIST" / "raw"
    damage(raw, kind)
    before = {p.name: digest(p) for p in raw.iterdir()}
    one_error_line(invoke("train", "--data-dir", fresh_data_dir, "--out", tmp_path / "run", "--device", "cpu"), 1, text)
    assert {p.name: digest(p) for p in raw.iterdir()} == before


# ---- output folders ---------------------------------------------------------------------------


def test_unwritable_output_folder_is_refused_before_training(data_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "run"):
        one_error_line(invoke("train", "--data-dir", data_dir, "--out", out, "--device", "cpu"), 1, "cannot write")
    assert blocker.read_text() == "keep me"


def test_existing_run_is_kept_unless_overwrite(good_run, data_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("checkpoint.pt", "metrics.jsonl", "config.json"):
        (out / name).write_bytes((good_run / name).read_bytes())
    before = {p.name: digest(p) for p in out.iterdir()}
    args = ("train", "--epochs", 1, "--max-batches", 2, "--data-dir", data_dir, "--out", out, "--device", "cpu")
    one_error_line(invoke(*args), 2, "already holds a run")
    assert {p.name: digest(p) for p in out.iterdir()} == before
    result = invoke(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_library_train_refuses_an_existing_run_too(good_run, data_dir):
    with pytest.raises(UsageError, match="already holds a run"):
        train(replace(make_config(), epochs=1, max_batches=1), data_dir=data_dir, out_dir=good_run, device="cpu")


# ---- run folders and what a checkpoint must hold to resume ------------------------------------


def test_the_default_run_folder_is_runs_date_with_a_suffix_in_the_same_second(data_dir, tmp_path, monkeypatch):
    from mnist20k import rundir

    class Frozen(rundir.datetime):  # one second for every run started in this test
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 31, 12, 0, 0)

    monkeypatch.setattr(rundir, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        result = invoke("train", "--epochs", 1, "--max-batches", 1, "--data-dir", data_dir, "--device", "cpu")
        assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["2026-01-31_12-00-00", "2026-01-31_12-00-00-2", "2026-01-31_12-00-00-3"]
    assert all((tmp_path / "runs" / name / "checkpoint.pt").is_file() for name in runs)
    assert "-> runs/2026-01-31_12-00-00-3" in result.stdout


def test_a_run_saved_on_another_device_type_resumes_here(data_dir, tmp_path):
    """A CUDA run's random state does not fit a CPU generator: the run goes on, shuffled afresh from here."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(make_config(**SHORT), data_dir=data_dir, out_dir=out, device="cpu", on_epoch=StopAfter(1))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["rng"] = {**ckpt["rng"], "device": "cuda", "generator": torch.zeros(16, dtype=torch.uint8),
                   "cuda": torch.zeros(16, dtype=torch.uint8)}  # fmt: skip
    torch.save(ckpt, out / "checkpoint.pt")
    result = invoke("train", "--resume", out, "--data-dir", data_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in load_checkpoint(out)["metrics"]] == [1, 2, 3]


@pytest.mark.parametrize("missing", ["optimizer_state", "scheduler_state", "rng"])
def test_a_checkpoint_without_its_training_state_is_refused_for_resume_and_scored_by_eval(missing, good_run, data_dir,
                                                                                          tmp_path):  # fmt: skip
    ckpt = torch.load(good_run / "checkpoint.pt", weights_only=True)
    del ckpt[missing]
    ckpt["epoch"] = 1  # epochs left to resume
    path = tmp_path / "partial.pt"
    torch.save(ckpt, path)
    before = digest(path)
    line = one_error_line(invoke("train", "--resume", path, "--data-dir", data_dir, "--device", "cpu"), 1, "resumed")
    assert line.startswith("error: checkpoint cannot be resumed: its training state is incomplete")
    assert digest(path) == before
    assert invoke("eval", path, "--data-dir", data_dir, "--device", "cpu").exit_code == 0
