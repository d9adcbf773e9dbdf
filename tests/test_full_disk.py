"""Writes that fail for real: each command runs as a child process under a file-size limit (RLIMIT_FSIZE),
so the operating system refuses the write midway, as a full disk does, and whatever the writing library
makes of that is what the test sees. Every failure is one line, exit 1, and nothing of the user's lost."""

import json
import resource
import subprocess
import sys

import pytest
import torch

from mnist20k.checkpoint import load_checkpoint
from mnist20k.config import make_config
from mnist20k.train import train

SHORT = ["--max-batches", "2", "--batch-size", "16", "--device", "cpu"]


def limited(max_bytes: int | None, *args) -> subprocess.CompletedProcess:
    """`mnist20k ARGS` with no file it writes allowed to grow past `max_bytes` (None: no limit). Python
    ignores SIGXFSZ, so a write past the limit fails with EFBIG ('File too large') instead of killing it."""

    def limit():
        if max_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    command = [sys.executable, "-m", "mnist20k", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, preexec_fn=limit, timeout=300)


def one_line(done: subprocess.CompletedProcess, text: str) -> str:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], done.stderr
    return lines[0]


def no_temporary_files(folder) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def second_checkpoint_size(tmp_path, *train_args) -> int:
    """The size of the last checkpoint of a 2-epoch `train_args` run. Each epoch's checkpoint holds one more
    metrics record than the one before, so a limit a little below this lets epoch 1 through and stops epoch 2."""
    out = tmp_path / "measure"
    assert limited(None, *train_args, "--out", out).returncode == 0
    return (out / "checkpoint.pt").stat().st_size


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("run") / "run"
    train(make_config(epochs=1, max_batches=2, batch_size=16), data_dir=data_dir, out_dir=out, device="cpu")
    return out


def test_a_limit_hit_at_the_second_checkpoint_keeps_the_first_for_eval_and_resume(data_dir, tmp_path):
    args = ("train", "--epochs", 2, *SHORT, "--data-dir", data_dir)
    out = tmp_path / "run"
    done = limited(second_checkpoint_size(tmp_path, *args) - 64, *args, "--out", out)
    line = one_line(done, "File too large")
    assert line == (
        f"error: cannot write {out / 'checkpoint.pt'}: File too large; {out / 'checkpoint.pt'} still holds "
        f"epoch 1, and --resume {out} continues after it"
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert load_checkpoint(out)["epoch"] == 1 and no_temporary_files(out)
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert limited(None, "eval", out, "--data-dir", data_dir, "--device", "cpu").returncode == 0
    resumed = limited(None, "train", "--resume", out, "--data-dir", data_dir, "--device", "cpu")
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out)["epoch"] == 2


def test_a_limit_hit_at_the_first_checkpoint_says_none_was_written(data_dir, tmp_path):
    out = tmp_path / "run"
    line = one_line(limited(40_000, "train", "--epochs", 2, *SHORT, "--data-dir", data_dir, "--out", out), "too large")
    assert line.endswith("File too large; no epoch of this run was saved, and nothing of it is kept")
    assert not out.exists()  # the same command starts the run again, with no --overwrite


def test_metrics_that_cannot_be_replaced_leave_the_epochs_checkpoint_to_resume(data_dir, tmp_path):
    """A real OS refusal mid-run: after epoch 1, metrics.jsonl is made a folder, so replacing it fails."""
    out = tmp_path / "run"

    def block_metrics(record):
        if record["epoch"] == 1:
            (out / "metrics.jsonl").unlink()
            (out / "metrics.jsonl").mkdir()

    from mnist20k.errors import OutputError

    with pytest.raises(OutputError) as failed:
        train(make_config(epochs=3, max_batches=2, batch_size=16), data_dir=data_dir, out_dir=out, device="cpu",
              on_epoch=block_metrics)  # fmt: skip
    assert str(failed.value) == (
        f"cannot write {out / 'metrics.jsonl'}: Is a directory; epoch 2's checkpoint is saved, "
        f"and --resume {out} continues after it"
    )
    assert load_checkpoint(out)["epoch"] == 2 and no_temporary_files(out)


SMALL_NET = """
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):  # 260 parameters: a checkpoint of a few kB, smaller than the curves picture
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 5)

    def forward(self, x):
        return F.log_softmax(self.conv(x).mean((2, 3)), dim=1)
"""


def test_curves_png_over_the_limit_is_one_line_and_the_run_is_saved(data_dir, tmp_path):
    (tmp_path / "small.py").write_text(SMALL_NET)
    out = tmp_path / "run"
    args = ("train", "--model", f"{tmp_path / 'small.py'}:Net", "--epochs", 1, *SHORT, "--data-dir", data_dir)
    done = limited(20_000, *args, "--out", out)
    line = one_line(done, "File too large")
    assert line == f"error: cannot write {out / 'curves.png'}: File too large; the run itself is saved"
    assert load_checkpoint(out)["epoch"] == 1 and not (out / "curves.png").exists() and no_temporary_files(out)
    assert limited(None, *args, "--out", tmp_path / "unlimited").returncode == 0
    assert (tmp_path / "unlimited" / "curves.png").stat().st_size > 20_000


def test_eval_errors_png_over_the_limit_is_one_line(run, data_dir, tmp_path):
    png = tmp_path / "errors.png"
    done = limited(4_000, "eval", run, "--errors", png, "--data-dir", data_dir, "--device", "cpu")
    assert one_line(done, "File too large") == f"error: cannot write {png}: File too large"
    assert not png.exists() and no_temporary_files(tmp_path)
    assert limited(None, "eval", run, "--errors", png, "--data-dir", data_dir, "--device", "cpu").returncode == 0
    assert png.stat().st_size > 4_000


def test_export_over_the_limit_is_one_line_and_writes_nothing(run, tmp_path):
    onnx = tmp_path / "m.onnx"
    done = limited(8_000, "export", run, "--out", onnx, "--no-verify")
    assert one_line(done, "File too large") == f"error: cannot write {onnx}: File too large"
    assert not onnx.exists() and no_temporary_files(tmp_path)
    assert limited(None, "export", run, "--out", onnx, "--no-verify").returncode == 0
    assert onnx.stat().st_size > 8_000


def test_a_sweep_whose_run_hits_the_limit_tells_it_and_resumes_after_it(data_dir, tmp_path):
    limit = second_checkpoint_size(tmp_path, "train", "--seed", 1, "--epochs", 2, *SHORT, "--data-dir", data_dir) - 64
    out = tmp_path / "sweep"
    args = ("sweep", "--seeds", "1", "--epochs", 2, *SHORT, "--data-dir", data_dir, "--out", out)
    done = limited(limit, *args)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr
    assert "seed 1: failed (exit 1): error: cannot write" in done.stdout and "File too large" in done.stdout
    assert load_checkpoint(out / "seed-1")["epoch"] == 1
    assert json.loads((out / "sweep.json").read_text())["configurations"][0]["runs"][0]["status"] == "failed"
    again = limited(None, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "seed 1: resuming after its last saved epoch" in again.stdout
    assert "seed 1: final " in again.stdout and ", lowest of the last 2 epochs " in again.stdout  # 2 epochs, --last 3
    assert "on each of its last 2 epochs" in again.stdout
    assert torch.load(out / "seed-1" / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_study_png_over_the_limit_is_one_line_and_the_study_is_saved(data_dir, tmp_path):
    """The picture is the largest file a study of a very thin network writes (about 33 kB, its checkpoints 27 kB):
    a limit above its trials' files stops it alone."""
    out = tmp_path / "study"
    args = ("tune", "--model", "micro", "--arg", "widths=2,2,2,2", "--val", "100", "--epochs", 1, *SHORT,
            "--search", "lr=0.05,0.1", "--trials", 2, "--data-dir", data_dir, "--out", out)  # fmt: skip
    line = one_line(limited(30_000, *args), "File too large")
    assert line == f"error: cannot write {out / 'study.png'}: File too large; tune.json and the study itself are saved"
    assert json.loads((out / "tune.json").read_text())["finished"] == 2
    assert not (out / "study.png").exists() and no_temporary_files(out)
