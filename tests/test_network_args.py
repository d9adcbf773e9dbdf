"""`--arg NAME=VALUE`: a network's keyword arguments reach its constructor, built-in or the user's own, and are
recorded in config.json and the checkpoint, so that eval, export and --resume rebuild the same network."""

from __future__ import annotations

import json

import pytest
from conftest import one_error_line
from test_own_network import _stop_after_first, invoke, user_dir  # noqa: F401 - user_dir is a fixture

from mnist20k.checkpoint import load_checkpoint
from mnist20k.config import make_config
from mnist20k.nets import build_model, count_params
from mnist20k.train import train

SMALL = ["--epochs", "2", "--max-batches", "3", "--batch-size", "32", "--device", "cpu"]


def test_a_built_in_networks_arguments_survive_eval_export_and_resume(data_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # one epoch of two, so that there is something to resume
        train(make_config(model="micro", args={"widths": [4, 4, 8, 8]}, epochs=2, max_batches=3, batch_size=32),
              data_dir=data_dir, out_dir=out, device="cpu", on_epoch=_stop_after_first)  # fmt: skip
    thin = count_params(build_model("micro", widths=[4, 4, 8, 8]))
    assert thin < count_params(build_model("micro"))
    ckpt = load_checkpoint(out)
    assert ckpt["model"] == {"name": "micro", "kwargs": {"widths": [4, 4, 8, 8], "dropout": 0.0}}
    assert sum(t.numel() for k, t in ckpt["model_state"].items() if "running" not in k and "tracked" not in k) == thin
    resumed = invoke("train", "--resume", out, "--data-dir", data_dir, "--device", "cpu")
    assert resumed.exit_code == 0, resumed.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert invoke("eval", out, "--data-dir", data_dir, "--device", "cpu").exit_code == 0
    exported = invoke("export", out, "--data-dir", data_dir, "--format", "torchscript")
    assert exported.exit_code == 0, exported.output


def test_the_command_line_arg_reaches_the_network_and_config_json(data_dir, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train", "--model", "micro", "--arg", "widths=4,4,8,8", *SMALL, "--data-dir", data_dir, "--out", out
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["args"] == {"widths": [4, 4, 8, 8]}
    again = tmp_path / "again"
    from_file = invoke("train", "--config", out / "config.json", "--data-dir", data_dir, "--out", again)
    assert from_file.exit_code == 0, from_file.output
    assert (again / "metrics.jsonl").read_text().count("train_loss") == 2
    assert load_checkpoint(again)["model"]["kwargs"]["widths"] == [4, 4, 8, 8]
    summary = invoke("summary", "--model", "micro", "--arg", "widths=4,4,8,8")
    assert f"Total params: {count_params(build_model('micro', widths=[4, 4, 8, 8])):,}" in summary.stdout


def test_your_networks_arguments_are_recorded_and_used_again(user_dir, data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    words = ["--model", "net.py:sized", "--arg", "width=6", "--arg", "depth=2"]
    result = invoke("train", *words, *SMALL, "--data-dir", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    record = load_checkpoint(out)["model"]
    assert record["ref"] == "net.py:sized" and record["args"] == {"width": 6, "depth": 2}
    # the code is named again, as always; its arguments come from the checkpoint (plain values, no code)
    scored = invoke("eval", out, "--model", "net.py:sized", "--data-dir", data_dir, "--json")
    assert scored.exit_code == 0, scored.output
    exported = invoke("export", out, "--model", "net.py:sized", "--data-dir", data_dir, "--format", "torchscript")
    assert exported.exit_code == 0, exported.output
    other = invoke("eval", out, "--model", "net.py:sized", "--arg", "width=8", "--data-dir", data_dir)
    assert "do not fit" in one_error_line(other, 1, "do not fit")


BAD = {
    "an argument the network does not take": (
        ["--model", "micro", "--arg", "depth=3"],
        "micro takes no argument depth",
    ),
    "a required argument left out": (["--model", "net.py:sized"], "give them with --arg width=VALUE"),
    "not NAME=VALUE": (["--model", "micro", "--arg", "widths"], "--arg takes NAME=VALUE"),
    "arguments the network cannot take": (["--model", "micro", "--arg", "widths=1,2"], "micro cannot be built with"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_arguments_are_one_line_exit_2_and_write_nothing(case, user_dir, data_dir, tmp_path):  # noqa: F811
    words, text = BAD[case]
    result = invoke("train", *words, *SMALL, "--data-dir", data_dir, "--out", tmp_path / "run")
    one_error_line(result, 2, text)
    assert not (tmp_path / "run").exists()
