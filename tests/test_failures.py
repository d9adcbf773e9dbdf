"""Failures that must end in one line on stderr, the right exit code, and nothing of the user's lost."""

import hashlib

import numpy as np
import pytest
import torch
from conftest import one_error_line, unprivileged
from PIL import Image
from typer.testing import CliRunner

from mnist20k.checkpoint import load_checkpoint, save_checkpoint
from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.predict import read_digit
from mnist20k.train import train

runner = CliRunner()
SHORT = ["--epochs", "3", "--max-batches", "2", "--batch-size", "16", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def files(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("run") / "run"
    train(make_config(epochs=1, max_batches=2, batch_size=16), data_dir=data_dir, out_dir=out, device="cpu")
    return out


def test_eval_says_which_data_file_it_cannot_read(run, fresh_data_dir, modes_hold):
    """A test file no one may read, read by a user file modes hold for (root reads any file)."""
    unreadable = fresh_data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    unreadable.chmod(0o000)
    done = unprivileged(["-m", "mnist20k", "eval", run, "--data-dir", fresh_data_dir, "--device", "cpu"])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == f"error: cannot read {unreadable}: Permission denied\n"


def test_a_checkpoint_whose_model_entry_is_not_a_dict_is_refused(run, tmp_path, data_dir):
    ckpt = load_checkpoint(run)
    path = tmp_path / "odd.pt"
    save_checkpoint(path, {**ckpt, "model": "seed"})
    before = files(tmp_path)
    one_error_line(invoke("eval", path, "--data-dir", data_dir, "--device", "cpu"), 1, "names no model it can rebuild")
    assert files(tmp_path) == before


def test_a_cuda_index_the_machine_lacks_is_refused(run, monkeypatch, data_dir, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for args in (["eval", run], ["train", "--data-dir", data_dir, "--out", tmp_path / "r"]):
        line = one_error_line(invoke(*args, "--device", "cuda:7"), 2, "cuda:7")
        assert line == "error: --device cuda:7: this machine has 1 CUDA GPU(s), cuda:0 to cuda:0"
    assert not (tmp_path / "r").exists()


# ---- predict on awkward images ----------------------------------------------------------------


def one(tmp_path, name="one.png", **kw) -> Image.Image:
    """A thick vertical stroke, dark on white: a 1."""
    image = Image.new("L", (60, 80), 255)
    image.paste(0, (26, kw.get("top", 10), 34, kw.get("bottom", 70)))
    return image


def test_sixteen_bit_and_transparent_pngs_read_as_the_plain_one(tmp_path):
    plain = one(tmp_path)
    plain.save(tmp_path / "plain.png")
    Image.fromarray(np.asarray(plain).astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    for stroke in (0, 255):  # dark strokes or light ones, each on a transparent background
        rgba = Image.new("RGBA", (60, 80), (0, 0, 0, 0))
        rgba.paste((stroke, stroke, stroke, 255), (26, 10, 34, 70))
        rgba.save(tmp_path / f"transparent-{stroke}.png")
    expected = read_digit(tmp_path / "plain.png")
    assert expected.sum() > 10
    for name in ("sixteen.png", "transparent-0.png", "transparent-255.png"):
        torch.testing.assert_close(read_digit(tmp_path / name), expected, atol=0.02, rtol=0, msg=name)


def test_a_faint_sixteen_bit_png_is_as_blank_as_its_eight_bit_twin(tmp_path):
    from mnist20k.errors import Mnist20kError

    faint = np.full((80, 60), 60_000, dtype=np.uint16)
    faint[10:70, 26:34] = 59_000  # 1.5% darker: a smudge, not ink
    Image.fromarray(faint).save(tmp_path / "faint16.png")
    Image.fromarray((faint >> 8).astype(np.uint8)).save(tmp_path / "faint8.png")
    for name in ("faint8.png", "faint16.png"):
        with pytest.raises(Mnist20kError, match="no ink found"):
            read_digit(tmp_path / name)


def test_a_sixteen_bit_png_on_grey_paper_reads_as_its_eight_bit_twin(tmp_path):
    grey = np.full((80, 60), 50_000, dtype=np.uint16)  # grey paper, above 255: clipping would lose it all
    grey[10:70, 26:34] = 10_000
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    Image.fromarray((grey >> 8).astype(np.uint8)).save(tmp_path / "grey8.png")
    torch.testing.assert_close(
        read_digit(tmp_path / "grey16.png"), read_digit(tmp_path / "grey8.png"), atol=0.02, rtol=0
    )
