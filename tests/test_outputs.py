"""Every command that writes, where it cannot: its folder is a file, is missing, or is read-only for the user.
Each ends in one line on stderr and exit 1, and leaves nothing behind. The commands run as child processes, the
read-only case as a user file modes hold for (conftest.drop_privileges): root writes anywhere. A full disk is
test_full_disk.py's."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import drop_privileges

from mnist20k.config import make_config
from mnist20k.train import train

QUICK = ["--epochs", "1", "--max-batches", "2", "--batch-size", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("outputs") / "run"
    train(make_config(epochs=1, max_batches=2, batch_size=16), data_dir=data_dir, out_dir=out, device="cpu")
    return out


def writers(run, data_dir) -> dict:
    """Each command that writes, as a function of the place it is told to write to."""
    data = ["--data-dir", str(data_dir)]
    tune = ["--model", "micro", "--val", "100", "--search", "lr=0.05,0.1", "--trials", "1"]
    return {
        "train": lambda place: ["train", *QUICK, *data, "--out", place / "run"],
        "eval --errors": lambda place: ["eval", run, *data, "--device", "cpu", "--errors", place / "errors.png"],
        "export onnx": lambda place: ["export", run, "--no-verify", "--out", place / "m.onnx"],
        "export torchscript": lambda place: [
            "export",
            run,
            "--format",
            "torchscript",
            "--no-verify",
            "--out",
            place / "m.pt",
        ],  # fmt: skip
        "sweep": lambda place: ["sweep", "--seeds", "1", *QUICK, *data, "--out", place / "sweep"],
        "tune": lambda place: ["tune", *tune, *QUICK, *data, "--out", place / "study"],
    }


WRITERS = ["train", "eval --errors", "export onnx", "export torchscript", "sweep", "tune"]


def mnist20k(args, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mnist20k", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def refused(done: subprocess.CompletedProcess, why: str) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write") and why in lines[0], done.stderr
    return lines[0]


def everything(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("writer", WRITERS)
def test_a_file_where_the_folder_should_be_is_one_line(writer, run, data_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    done = mnist20k(writers(run, data_dir)[writer](blocker))
    refused(done, "Not a directory")
    assert everything(tmp_path) == ["a-file"] and blocker.read_text() == "mine"


@pytest.mark.parametrize("writer", WRITERS)
def test_a_read_only_folder_is_one_line(writer, run, data_dir, tmp_path, modes_hold):
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine")
    folder.chmod(0o555)
    try:
        done = mnist20k(writers(run, data_dir)[writer](folder), preexec_fn=drop_privileges)
    finally:
        folder.chmod(0o755)
    refused(done, "Permission denied")
    assert everything(tmp_path) == ["read-only", "read-only/mine.txt"]


@pytest.mark.parametrize("writer", ["eval --errors", "export onnx"])
def test_a_file_in_a_missing_folder_is_one_line(writer, run, data_dir, tmp_path):
    """A file is written only into a folder that is there; a run, sweep or study folder is made."""
    refused(mnist20k(writers(run, data_dir)[writer](tmp_path / "missing")), "No such file or directory")
    assert everything(tmp_path) == []


def test_a_resumed_run_in_a_read_only_folder_is_one_line(data_dir, tmp_path, modes_hold):
    out = tmp_path / "run"
    train(make_config(epochs=1, max_batches=2, batch_size=16), data_dir=data_dir, out_dir=out, device="cpu")
    # one more epoch to go: the config says 2
    import torch

    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["config"]["epochs"] = 2
    torch.save(ckpt, out / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    out.chmod(0o555)
    try:
        done = mnist20k(["train", "--resume", out, "--data-dir", data_dir, "--device", "cpu"],
                        preexec_fn=drop_privileges)  # fmt: skip
    finally:
        out.chmod(0o755)
    assert refused(done, "Permission denied") == f"error: cannot write to output folder {out}: Permission denied"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("where", ["a-file/out.bin", "missing/out.bin"])
def test_write_file_where_it_cannot_raises_one_output_error(where, tmp_path):
    """The one writer every file goes through: its folder a file or missing, its cleanup of a temporary file
    that was never made must not raise a second error over the first."""
    from mnist20k.errors import OutputError
    from mnist20k.files import check_writable, write_file

    (tmp_path / "a-file").write_text("mine")
    why = "Not a directory" if where.startswith("a-file") else "No such file or directory"
    for write in (lambda path: write_file(path, b"data"), check_writable):
        with pytest.raises(OutputError) as failed:
            write(tmp_path / where)
        assert str(failed.value) == f"cannot write {tmp_path / where}: {why}"
    assert everything(tmp_path) == ["a-file"]
